use std::path::PathBuf;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use super::*;
use crate::test_util::{batch, fsl, i64s, list_f64, strs, vector, write};

fn spec(files: Vec<PathBuf>, ids: &[&str]) -> CorpusSpec {
    CorpusSpec { files, embedding_column: "emb".into(), id_columns: ids.iter().map(|s| s.to_string()).collect(), filter: None }
}

fn corpus_file(path: &Path, seq: i64, n: usize, list: bool) {
    let vecs: Vec<Vec<f32>> = (0..n).map(|i| vector(i + seq as usize * 100, 4)).collect();
    let emb = if list { list_f64(&vecs) } else { fsl(&vecs) };
    let b = batch(vec![
        ("seq_id", i64s(std::iter::repeat_n(seq, n))),
        ("emb", emb),
        ("position", i64s(0..n as i64)),
        ("text", strs((0..n).map(|i| format!("t{i}")))),
    ]);
    write(path, &b, 4);
}

#[test]
fn streams_files_in_batches_with_file_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    corpus_file(&a, 0, 10, false);
    corpus_file(&b, 1, 7, true);
    let s = spec(vec![a.clone(), b.clone()], &["seq_id", "position"]);
    let info = inspect(&s).unwrap();
    assert_eq!(info.carried, vec!["seq_id", "position", "text"]);
    assert_eq!((info.total_rows, info.rows_per_file.clone(), info.dim), (17, vec![10, 7], Some(4)));

    let batches: Vec<CorpusBatch> = CorpusReader::new(&s, &info, 3, true, None).unwrap().map(Result::unwrap).collect();
    let layout: Vec<(usize, u64, usize)> = batches.iter().map(|b| (b.file_index, b.first_row, b.columns.num_rows())).collect();
    // Batches never mix files, hold at most 3 rows and tile each file in order.
    let mut next = [0u64; 2];
    for &(f, first, n) in &layout {
        assert!((1..=3).contains(&n), "{layout:?}");
        assert_eq!(first, next[f], "{layout:?}");
        next[f] += n as u64;
    }
    assert_eq!(next, [10, 7]);
    for b in &batches {
        let emb = b.embeddings.as_ref().unwrap();
        assert_eq!(b.dim, 4);
        let pos = b.columns.column(1).as_primitive::<Int64Type>();
        for r in 0..b.columns.num_rows() {
            let i = pos.value(r) as usize;
            assert_eq!(i as u64, b.first_row + r as u64);
            assert_eq!(&emb[r * 4..r * 4 + 4], &vector(i + b.file_index * 100, 4)[..]);
        }
    }

    // Column selection, in the requested order, without embeddings.
    let mut r = CorpusReader::new(&s, &info, 100, false, Some(vec!["text".into(), "seq_id".into()])).unwrap();
    let first = r.next().unwrap().unwrap();
    assert_eq!(first.columns.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), vec!["text", "seq_id"]);
    assert!(first.embeddings.is_none());
    assert_eq!(first.columns.num_rows(), 10);

    // No columns at all: row counts only.
    let counts: Vec<(usize, u64, usize)> = CorpusReader::new(&s, &info, 6, false, Some(vec![]))
        .unwrap()
        .map(|b| b.unwrap())
        .map(|b| (b.file_index, b.first_row, b.columns.num_rows()))
        .collect();
    assert_eq!(counts, vec![(0, 0, 6), (0, 6, 4), (1, 0, 6), (1, 6, 1)]);

    let e = CorpusReader::new(&s, &info, 6, false, Some(vec!["emb".into()])).err().unwrap();
    assert!(e.to_string().contains("column \"emb\" not found"), "{e}");
}

#[test]
fn inspect_errors_name_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.parquet");
    corpus_file(&a, 0, 3, false);
    let msg = |s: &CorpusSpec| inspect(s).unwrap_err().to_string();
    let ad = a.display();

    let mut s = spec(vec![a.clone()], &[]);
    s.embedding_column = "hidden".into();
    assert_eq!(msg(&s), format!(r#"reading {ad}: column "hidden" not found (columns: seq_id, emb, position, text)"#));
    s.embedding_column = "text".into();
    assert_eq!(msg(&s), format!(r#"reading {ad}: column "text": expected a list of Float16/Float32/Float64, found Utf8"#));
    assert_eq!(msg(&spec(vec![a.clone()], &["doc"])), format!(r#"reading {ad}: column "doc" not found (columns: seq_id, emb, position, text)"#));

    let b = dir.path().join("b.parquet");
    write(&b, &batch(vec![("seq_id", i64s([1])), ("emb", fsl(&[vector(0, 4)])), ("position", i64s([0]))]), 10);
    assert_eq!(msg(&spec(vec![a.clone(), b.clone()], &[])), format!(r#"reading {}: columns differ from {ad}: column "text" is missing"#, b.display()));

    let c = dir.path().join("c.parquet");
    write(&c, &batch(vec![("seq_id", i64s([1])), ("emb", fsl(&[vector(0, 3)])), ("position", i64s([0])), ("text", strs(["x".into()]))]), 10);
    assert_eq!(msg(&spec(vec![a.clone(), c.clone()], &[])), format!(r#"reading {}: column "emb": row 0: dimension 3 differs from 4 in {ad}"#, c.display()));

    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"not parquet at all").unwrap();
    let m = msg(&spec(vec![a.clone(), junk.clone()], &[]));
    assert!(m.starts_with(&format!("{}: not a readable Parquet file: ", junk.display())), "{m}");

    let empty = dir.path().join("empty.parquet");
    let e = batch(vec![("emb", fsl(&[vector(0, 4)]))]);
    write(&empty, &e.slice(0, 0), 10);
    assert_eq!(msg(&spec(vec![empty.clone()], &[])), format!("empty input: no rows in {}", empty.display()));
}

#[test]
fn stream_errors_name_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write(&a, &batch(vec![("emb", list_f64(&[vector(0, 4), vector(1, 4)]))]), 10);
    write(&b, &batch(vec![("emb", list_f64(&[vector(0, 4), vector(1, 3)]))]), 10);
    let s = spec(vec![a.clone(), b.clone()], &[]);
    let info = inspect(&s).unwrap();
    assert_eq!(info.dim, None);
    let results: Vec<Result<CorpusBatch>> = CorpusReader::new(&s, &info, 1, true, None).unwrap().collect();
    assert_eq!(results.len(), 4, "stops after the first error");
    let e = results[3].as_ref().unwrap_err().to_string();
    assert_eq!(e, format!(r#"reading {}: column "emb": row 1: dimension 3 differs from 4 in {}"#, b.display(), a.display()));

    let mut v = vector(2, 4);
    v[2] = f32::INFINITY;
    write(&b, &batch(vec![("emb", list_f64(&[vector(0, 4), vector(1, 4), v]))]), 2);
    let info = inspect(&s).unwrap();
    let e = CorpusReader::new(&s, &info, 2, true, None).unwrap().find_map(|r| r.err()).unwrap();
    assert_eq!(e.to_string(), format!(r#"reading {}: column "emb": row 2: inf at element 2"#, b.display()));
    let first = results[0].as_ref().unwrap();
    assert_eq!((first.columns.num_columns(), first.columns.num_rows()), (0, 1));
}

/// The real fixture: 13,192 MiniLM tokens, identity (seq_id, position), 384-d FixedSizeList.
#[test]
fn reads_and_samples_the_minilm_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/minilm_fortunes.parquet");
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let mut s = spec(vec![path], &["seq_id", "position"]);
    s.embedding_column = "hidden_L6".into();
    let info = inspect(&s).unwrap();
    assert_eq!((info.total_rows, info.dim), (13_192, Some(384)));
    assert_eq!(info.carried, vec!["seq_id", "position", "token_id", "token", "topic", "special"]);
    let mut rows = 0;
    for b in CorpusReader::new(&s, &info, 4096, true, Some(vec!["seq_id".into()])).unwrap() {
        let b = b.unwrap();
        assert_eq!(b.embeddings.unwrap().len(), b.columns.num_rows() * 384);
        rows += b.columns.num_rows() as u64;
    }
    assert_eq!(rows, 13_192);
    let cfg = crate::SampleConfig::new(6000, 4000, 42);
    let r = crate::sample_reference(&s, &info, &cfg).unwrap();
    assert_eq!((r.len(), r.dim, r.embeddings.len()), (4000, 384, 4000 * 384));
    assert_eq!(r.stats.pool_rows, 6000);
    let again = crate::sample_reference(&s, &info, &cfg).unwrap();
    assert_eq!(crate::vectors_sha256(&r.embeddings, 384), crate::vectors_sha256(&again.embeddings, 384));
}

#[test]
fn slices_of_row_groups_read_as_the_whole_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    corpus_file(&a, 0, 10, false); // row groups of 4, 4, 2 rows
    corpus_file(&b, 1, 7, true); // 4, 3
    let s = spec(vec![a, b], &["seq_id", "position"]);
    let info = inspect(&s).unwrap();
    let slices = slice_corpus(&s, 8).unwrap();
    let shape: Vec<(usize, Option<std::ops::Range<usize>>, u64, u64)> =
        slices.iter().map(|s| (s.file_index, s.row_groups.clone(), s.first_row, s.rows)).collect();
    assert_eq!(shape, vec![(0, Some(0..2), 0, 8), (0, Some(2..3), 8, 2), (1, Some(0..2), 0, 7)]);
    assert_eq!(slice_corpus(&s, 1).unwrap().len(), 5, "a row group bigger than the target is a slice of its own");

    let rows = |reader: CorpusReader| -> Vec<(usize, u64, i64, Vec<f32>)> {
        reader
            .map(Result::unwrap)
            .flat_map(|b| {
                let pos = b.columns.column(1).as_primitive::<Int64Type>().values().to_vec();
                let emb = b.embeddings.unwrap();
                (0..pos.len()).map(move |r| (b.file_index, b.first_row + r as u64, pos[r], emb[r * 4..r * 4 + 4].to_vec())).collect::<Vec<_>>()
            })
            .collect()
    };
    let whole = rows(CorpusReader::new(&s, &info, 3, true, None).unwrap());
    let mut pieces = Vec::new();
    for slice in &slices {
        pieces.extend(rows(CorpusReader::new(&s, &info, 3, true, None).unwrap().with_slices(vec![slice.clone()]).unwrap()));
    }
    assert_eq!(pieces, whole);
    // Row numbers are the file's, and the position column agrees.
    assert!(whole.iter().all(|(_, row, pos, _)| *row as i64 == *pos));
    // Row counts without decoding anything follow the slices too.
    let counted: u64 = CorpusReader::new(&s, &info, 3, false, Some(vec![])).unwrap().with_slices(slices[1..].to_vec()).unwrap().map(|b| b.unwrap().columns.num_rows() as u64).sum();
    assert_eq!(counted, 9);
    let bad = CorpusSlice { file_index: 0, row_groups: Some(2..9), first_row: 8, rows: 2 };
    let e = CorpusReader::new(&s, &info, 3, true, None).unwrap().with_slices(vec![bad]).unwrap().next().unwrap().unwrap_err();
    assert!(e.to_string().contains("a.parquet") && e.to_string().contains("row groups 2..9"), "{e}");
}
