use std::path::PathBuf;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;

use super::*;
use crate::test_util::{batch, fsl, i64s, list_f64, strs, vector, write};

fn spec(files: Vec<PathBuf>, ids: &[&str]) -> CorpusSpec {
    CorpusSpec { files, embedding_column: "emb".into(), id_columns: ids.iter().map(|s| s.to_string()).collect() }
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
    assert_eq!(layout, vec![(0, 0, 3), (0, 3, 1), (0, 4, 3), (0, 7, 1), (0, 8, 2), (1, 0, 3), (1, 3, 1), (1, 4, 3)]);
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
    assert!(results[0].as_ref().unwrap().columns.column(0).is_empty() || results[0].as_ref().unwrap().columns.num_columns() == 0);
}
