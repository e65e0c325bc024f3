use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int32Array, UInt16Array};
use arrow::datatypes::UInt64Type;

use super::*;
use crate::inspect;
use crate::test_util::{batch, fsl, i64s, vector, write};

/// One corpus row: identity and vector.
#[derive(Clone)]
struct Row {
    seq: i64,
    pos: i64,
    v: Vec<f32>,
}

fn rows(n: usize, distinct: usize) -> Vec<Row> {
    (0..n).map(|i| Row { seq: (i / 10) as i64, pos: (i % 10) as i64, v: vector(i % distinct, 5) }).collect()
}

fn write_rows(path: &Path, rows: &[Row]) {
    let vecs: Vec<Vec<f32>> = rows.iter().map(|r| r.v.clone()).collect();
    let b = batch(vec![
        ("seq_id", i64s(rows.iter().map(|r| r.seq))),
        ("position", i64s(rows.iter().map(|r| r.pos))),
        ("emb", fsl(&vecs)),
    ]);
    write(path, &b, 7);
}

fn ids() -> Vec<String> {
    vec!["seq_id".into(), "position".into()]
}

fn spec(files: Vec<PathBuf>, ids: Vec<String>) -> CorpusSpec {
    CorpusSpec { files, embedding_column: "emb".into(), id_columns: ids, filter: None }
}

/// The semantics, spelled out over all rows in memory.
fn brute_force(all: &[Row], cfg: &SampleConfig) -> (Vec<Box<[u8]>>, Vec<f32>, usize) {
    let b = batch(vec![("seq_id", i64s(all.iter().map(|r| r.seq))), ("position", i64s(all.iter().map(|r| r.pos)))]);
    let p = Path::new("x");
    let keys = IdentityEncoder::new(&b.schema(), &ids(), p).unwrap().encode(&b, p, 0).unwrap();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&i| (priority(cfg.seed, &keys[i]), keys[i].clone()));
    order.truncate(cfg.pool);
    let (mut kept, mut dups) = (Vec::<usize>::new(), 0);
    for i in order {
        if kept.len() == cfg.size {
            break;
        }
        if kept.iter().any(|&j| same_bits(&all[j].v, &all[i].v)) {
            dups += 1;
        } else {
            kept.push(i);
        }
    }
    (kept.iter().map(|&i| keys[i].clone()).collect(), kept.iter().flat_map(|&i| all[i].v.clone()).collect(), dups)
}

fn split_corpus(dir: &Path, all: &[Row], cuts: &[usize]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut start = 0;
    for (k, &end) in cuts.iter().chain([all.len()].iter()).enumerate() {
        let p = dir.join(format!("part-{k}.parquet"));
        write_rows(&p, &all[start..end]);
        files.push(p);
        start = end;
    }
    files
}

#[test]
fn matches_the_semantics_and_drops_duplicate_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(40, 13);
    let s = spec(split_corpus(dir.path(), &all, &[15, 22]), ids());
    let info = inspect(&s).unwrap();
    for (pool, size) in [(25, 8), (40, 13), (40, 40), (3, 3), (13, 1)] {
        let cfg = SampleConfig::new(pool, size, 7);
        let r = sample_reference(&s, &info, &cfg).unwrap();
        let (keys, emb, dups) = brute_force(&all, &cfg);
        assert_eq!(r.keys, keys, "pool {pool} size {size}");
        assert_eq!(r.embeddings, emb);
        assert_eq!(r.dim, 5);
        assert_eq!(r.stats, SampleStats { pool_requested: pool, pool_rows: pool, duplicates_dropped: dups, requested: size, rows: keys.len() });
        assert_eq!(r.ids.num_rows(), keys.len());
    }
    // Fewer distinct vectors than asked: use what there is.
    let r = sample_reference(&s, &info, &SampleConfig::new(100, 50, 1)).unwrap();
    assert_eq!(r.stats, SampleStats { pool_requested: 100, pool_rows: 40, duplicates_dropped: 27, requested: 50, rows: 13 });
}

/// Writes `rows` with a `special` column: true for the first and last position of a sequence
/// (as `lidscope embed` flags `[CLS]` and `[SEP]`), null at row `null_at`.
fn write_flagged(path: &Path, rows: &[Row], null_at: Option<usize>) {
    let vecs: Vec<Vec<f32>> = rows.iter().map(|r| r.v.clone()).collect();
    let flags: arrow::array::BooleanArray =
        rows.iter().enumerate().map(|(i, r)| (Some(i) != null_at).then_some(r.pos == 0 || r.pos == 9)).collect();
    let b = batch(vec![
        ("seq_id", i64s(rows.iter().map(|r| r.seq))),
        ("position", i64s(rows.iter().map(|r| r.pos))),
        ("special", Arc::new(flags) as ArrayRef),
        ("emb", fsl(&vecs)),
    ]);
    write(path, &b, 7);
}

#[test]
fn excluded_rows_never_enter_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(60, 60);
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_flagged(&a, &all[..35], None);
    write_flagged(&b, &all[35..], None);
    let s = spec(vec![a, b], ids());
    let info = inspect(&s).unwrap();
    let kept: Vec<Row> = all.iter().filter(|r| r.pos != 0 && r.pos != 9).cloned().collect();
    for (pool, size) in [(20, 10), (48, 48), (60, 30)] {
        let cfg = SampleConfig { exclude: Some("special".into()), ..SampleConfig::new(pool, size, 5) };
        let r = sample_reference(&s, &info, &cfg).unwrap();
        let (keys, emb, _) = brute_force(&kept, &cfg);
        assert_eq!(r.keys, keys, "pool {pool} size {size}");
        assert_eq!(r.embeddings, emb);
        assert_eq!(r.stats.pool_rows, pool.min(kept.len()));
        // Sharded pools merge to the same sample.
        let slices = crate::slice_corpus(&s, 16).unwrap();
        let pools = slices.chunks(2).map(|c| pool_candidates(&s, &info, &cfg, Some(c.to_vec())).unwrap()).collect();
        let merged = sample_from_pool(&s, &info, &cfg, merge_pools(&s, &info, pools, &cfg).unwrap()).unwrap();
        assert_eq!(merged.keys, r.keys);
    }
    // Without the exclusion the special rows are candidates like any other.
    let r = sample_reference(&s, &info, &SampleConfig::new(60, 60, 5)).unwrap();
    assert_eq!(r.len(), 60);
}

#[test]
fn a_bad_exclusion_column_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(30, 30);
    let p = dir.path().join("c.parquet");
    write_flagged(&p, &all, Some(17));
    let s = spec(vec![p.clone()], ids());
    let info = inspect(&s).unwrap();
    let with = |c: &str| SampleConfig { exclude: Some(c.into()), ..SampleConfig::new(10, 5, 1) };
    let e = sample_reference(&s, &info, &with("special")).unwrap_err().to_string();
    assert!(e.contains("c.parquet") && e.contains("special") && e.contains("17") && e.contains("null"), "{e}");
    let e = sample_reference(&s, &info, &with("position")).unwrap_err().to_string();
    assert!(e.contains("c.parquet") && e.contains("position") && e.contains("boolean"), "{e}");
    let e = sample_reference(&s, &info, &with("is_eos")).unwrap_err().to_string();
    assert!(e.contains("c.parquet") && e.contains("is_eos"), "{e}");
    let e = sample_reference(&s, &info, &with("emb")).unwrap_err().to_string();
    assert!(e.contains("embedding column"), "{e}");
}

#[test]
fn independent_of_layout_order_and_integer_types() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(60, 60);
    let (d1, d2) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let s1 = spec(split_corpus(&d1, &all, &[30]), ids());
    // Same tokens, reversed order, three files, narrower integer types.
    let mut rev = all.clone();
    rev.reverse();
    let mut files = Vec::new();
    for (k, chunk) in rev.chunks(25).enumerate() {
        let vecs: Vec<Vec<f32>> = chunk.iter().map(|r| r.v.clone()).collect();
        let b = batch(vec![
            ("emb", fsl(&vecs)),
            ("position", Arc::new(UInt16Array::from_iter_values(chunk.iter().map(|r| r.pos as u16))) as ArrayRef),
            ("seq_id", Arc::new(Int32Array::from_iter_values(chunk.iter().map(|r| r.seq as i32))) as ArrayRef),
        ]);
        let p = d2.join(format!("p{k}.parquet"));
        write(&p, &b, 100);
        files.push(p);
    }
    let s2 = spec(files, ids());
    let cfg = SampleConfig::new(30, 20, 99);
    let r1 = sample_reference(&s1, &inspect(&s1).unwrap(), &cfg).unwrap();
    let r2 = sample_reference(&s2, &inspect(&s2).unwrap(), &cfg).unwrap();
    assert_eq!(r1.keys, r2.keys);
    assert_eq!(r1.embeddings, r2.embeddings);
    assert_eq!(r1.ids, r2.ids);
    let other_seed = sample_reference(&s1, &inspect(&s1).unwrap(), &SampleConfig { seed: 100, ..cfg.clone() }).unwrap();
    assert_ne!(r1.keys, other_seed.keys);
}

#[test]
fn positional_identity_without_id_columns() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(20, 20);
    let s = spec(split_corpus(dir.path(), &all, &[12]), vec![]);
    let r = sample_reference(&s, &inspect(&s).unwrap(), &SampleConfig::new(20, 20, 3)).unwrap();
    assert_eq!(r.ids.schema().field(0).name(), "file");
    let files = r.ids.column(0).as_string::<i32>();
    let row_col = r.ids.column(1).as_primitive::<UInt64Type>();
    for i in 0..r.len() {
        let file = s.files.iter().position(|f| f.display().to_string() == files.value(i)).unwrap();
        let row = row_col.value(i);
        assert_eq!(r.keys[i], positional_key(file as u32, row));
        let global = if file == 0 { row as usize } else { 12 + row as usize };
        assert_eq!(&r.embeddings[i * 5..i * 5 + 5], &all[global].v[..]);
    }
    let mut ps: Vec<u64> = r.keys.iter().map(|k| priority(3, k)).collect();
    assert!(ps.windows(2).all(|w| w[0] <= w[1]), "pool order is ascending priority");
    ps.dedup();
    assert_eq!(ps.len(), 20);
}

#[test]
fn duplicate_identity_and_bad_vectors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(10, 10);
    let mut again = all[3].clone();
    again.v = vector(50, 5);
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_rows(&a, &all);
    write_rows(&b, &[all[8].clone(), again]);
    let s = spec(vec![a.clone(), b.clone()], ids());
    let info = inspect(&s).unwrap();
    let e = sample_reference(&s, &info, &SampleConfig::new(12, 5, 0)).unwrap_err().to_string();
    assert!(e.starts_with("duplicate identity (seq_id=0, position="), "{e}");
    assert!(
        e.ends_with(&format!("{} row 3 and {} row 1", a.display(), b.display()))
            || e.ends_with(&format!("{} row 8 and {} row 0", a.display(), b.display())),
        "{e}"
    );

    // A NaN in a pool row is reported with its row in the file, whatever the row selection.
    let all = rows(30, 30);
    let cfg = SampleConfig::new(9, 4, 5);
    let b = batch(vec![("seq_id", i64s(all.iter().map(|r| r.seq))), ("position", i64s(all.iter().map(|r| r.pos)))]);
    let p = Path::new("x");
    let keys = IdentityEncoder::new(&b.schema(), &ids(), p).unwrap().encode(&b, p, 0).unwrap();
    let mut order: Vec<usize> = (0..30).collect();
    order.sort_by_key(|&i| (priority(cfg.seed, &keys[i]), keys[i].clone()));
    let bad = *order[..9].iter().max().unwrap();
    let mut broken = all.clone();
    broken[bad].v[3] = f32::NAN;
    let c = dir.path().join("c.parquet");
    write_rows(&c, &broken);
    let s = spec(vec![c.clone()], ids());
    let e = sample_reference(&s, &inspect(&s).unwrap(), &cfg).unwrap_err();
    assert_eq!(e.to_string(), format!(r#"reading {}: column "emb": row {bad}: NaN at element 3"#, c.display()));

    let e = sample_reference(&s, &inspect(&s).unwrap(), &SampleConfig::new(3, 4, 0)).unwrap_err();
    assert!(matches!(e, DataError::InvalidArgument(_)), "{e}");
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Reference>();
}

#[test]
fn row_ranges_coalesce() {
    assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), vec![0..3, 5..6, 7..9]);
    assert!(ranges(&[]).is_empty());
}

#[test]
fn a_pool_merged_from_slices_gives_the_same_sample() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(300, 40);
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_rows(&a, &all[..170]);
    write_rows(&b, &all[170..]);
    for id_columns in [ids(), vec![]] {
        let s = spec(vec![a.clone(), b.clone()], id_columns);
        let info = inspect(&s).unwrap();
        let cfg = SampleConfig::new(90, 30, 7);
        let whole = sample_reference(&s, &info, &cfg).unwrap();
        // Row groups of 7 rows: slices of about 20 rows, each drawing its own candidates.
        let slices = crate::slice_corpus(&s, 20).unwrap();
        assert!(slices.len() > 10);
        let pools: Vec<Vec<PoolCandidate>> = slices.iter().map(|sl| pool_candidates(&s, &info, &cfg, Some(vec![sl.clone()])).unwrap()).collect();
        let pool = merge_pools(&s, &info, pools, &cfg).unwrap();
        let merged = sample_from_pool(&s, &info, &cfg, pool).unwrap();
        assert_eq!(merged.keys, whole.keys);
        assert_eq!(merged.embeddings, whole.embeddings);
        assert_eq!(merged.stats, whole.stats);
        assert_eq!(merged.ids, whole.ids);
    }
}

#[test]
fn a_repeated_identity_met_only_when_merging_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(50, 50);
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_rows(&a, &all);
    write_rows(&b, &all[10..11]);
    let s = spec(vec![a, b.clone()], ids());
    let info = inspect(&s).unwrap();
    let cfg = SampleConfig::new(50, 10, 1);
    let pools = vec![
        pool_candidates(&s, &info, &cfg, Some(crate::slice_corpus(&s, 1000).unwrap()[..1].to_vec())).unwrap(),
        pool_candidates(&s, &info, &cfg, Some(crate::slice_corpus(&s, 1000).unwrap()[1..].to_vec())).unwrap(),
    ];
    let e = merge_pools(&s, &info, pools, &cfg).unwrap_err().to_string();
    assert!(e.contains("b.parquet") && e.contains("seq_id"), "{e}");
}

#[test]
fn another_checkpoint_is_measured_on_the_sampled_identities() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("step-100.parquet");
    write_rows(&first, &rows(300, 300));
    let sp = spec(vec![first], ids());
    let info = inspect(&sp).unwrap();
    let sample = sample_reference(&sp, &info, &SampleConfig::new(200, 120, 9)).unwrap();

    // The anchor itself: its own sample, byte for byte.
    let again = sample_identities(&sp, &info, &sample.keys, Path::new("s.parquet")).unwrap();
    assert_eq!(again.keys, sample.keys);
    assert_eq!(again.embeddings, sample.embeddings);

    // A later checkpoint: the same identities in another row order, other vectors, two of the
    // sampled rows now repeating an earlier sampled vector (dropped, as in the sample).
    let mut later: Vec<Row> = rows(300, 300).into_iter().rev().map(|mut r| {
        r.v = vector(1000 + (r.seq * 10 + r.pos) as usize, 5);
        r
    }).collect();
    let key_of = |r: &Row| {
        let b = batch(vec![("seq_id", i64s([r.seq])), ("position", i64s([r.pos]))]);
        IdentityEncoder::new(&b.schema(), &ids(), Path::new("x")).unwrap().encode(&b, Path::new("x"), 0).unwrap().remove(0)
    };
    let position = |k: &[u8]| later.iter().position(|r| &*key_of(r) == k).unwrap();
    let (a, b, c) = (position(&sample.keys[0]), position(&sample.keys[5]), position(&sample.keys[7]));
    let v = later[a].v.clone();
    later[b].v = v.clone();
    later[c].v = v;
    let second = dir.path().join("step-200.parquet");
    write_rows(&second, &later);
    let sp2 = spec(vec![second], ids());
    let info2 = inspect(&sp2).unwrap();
    let r = sample_identities(&sp2, &info2, &sample.keys, Path::new("s.parquet")).unwrap();
    let want: Vec<Box<[u8]>> = sample.keys.iter().enumerate().filter(|(i, _)| *i != 5 && *i != 7).map(|(_, k)| k.clone()).collect();
    assert_eq!(r.keys, want, "the sample's identities, in its order, repeated vectors dropped");
    assert_eq!(r.stats.duplicates_dropped, 2);
    assert_eq!(&r.embeddings[..5], &later[a].v[..]);

    // A checkpoint without some of the tokens cannot be compared: named, not guessed.
    let third = dir.path().join("step-300.parquet");
    write_rows(&third, &rows(150, 150));
    let sp3 = spec(vec![third], ids());
    let e = sample_identities(&sp3, &inspect(&sp3).unwrap(), &sample.keys, Path::new("s.parquet")).unwrap_err().to_string();
    assert!(e.contains("identities in s.parquet are not in the corpus") && e.contains("seq_id"), "{e}");
}
