//! `--where`: rows the predicate rejects are neither measured nor sampled. The proof: a run with
//! the predicate equals, to the bit, a run on a corpus that holds only the rows it keeps (the
//! same identities, so the same sample), for `run`, for a sweep (its shared sample too), and the
//! manifest says what chose the rows. Bad predicates fail before any work.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;

use crate::util::*;

const ROWS: usize = 1200;
const DIM: usize = 12;

/// 300 texts of 4 tokens: `seq_id`, `position`, `split` (a third `validation`), `special` (the
/// first token of each text), `emb`.
fn corpus(seed: u64) -> RecordBatch {
    batch(vec![
        ("seq_id", Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| (i / 4) as i64))) as ArrayRef),
        ("position", Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| (i % 4) as i64)))),
        ("split", Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| if (i / 4) % 3 == 0 { "validation" } else { "train" })))),
        ("special", Arc::new(BooleanArray::from_iter((0..ROWS).map(|i| Some(i % 4 == 0))))),
        ("emb", fsl(vectors(ROWS, DIM, seed), DIM)),
    ])
}

/// The rows of `b` a Rust closure keeps, as their own corpus.
fn kept(b: &RecordBatch, keep: impl Fn(usize) -> bool) -> RecordBatch {
    filter_record_batch(b, &BooleanArray::from_iter((0..b.num_rows()).map(|i| Some(keep(i))))).unwrap()
}

fn run_args<'a>(corpus: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["-q", "run", "--corpus", corpus, "--embedding-column", "emb", "--id-columns", "seq_id,position", "--k", "10", "--reference-size", "150", "--pool", "250", "--out", out, "--json"]
}

fn lids(out: &Path) -> Vec<(i64, i64, u64)> {
    let t = format!("lid={}", s(out));
    let csv = lidscope_ok(&["sql", "--table", &t, "--format", "csv", "SELECT seq_id, position, lid FROM lid ORDER BY seq_id, position"]);
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse::<f64>().unwrap().to_bits())
        })
        .collect()
}

fn reference_ids(out: &Path) -> Vec<(i64, i64)> {
    let b = read_batches(&out.join("reference.parquet"));
    let mut v: Vec<(i64, i64)> = f64_column(&b, "seq_id").into_iter().zip(f64_column(&b, "position")).map(|(a, b)| (a as i64, b as i64)).collect();
    v.sort();
    v
}

#[test]
fn where_measures_and_samples_only_the_rows_it_keeps() {
    let d = tempfile::tempdir().unwrap();
    let full = corpus(7);
    let all = d.path().join("all.parquet");
    write_parquet(&all, &full);
    for (predicate, keep) in [
        ("position = 3", Box::new(|i: usize| i % 4 == 3) as Box<dyn Fn(usize) -> bool>),
        ("split = 'validation' AND NOT special", Box::new(|i: usize| (i / 4).is_multiple_of(3) && !i.is_multiple_of(4))),
    ] {
        let subset = d.path().join("subset.parquet");
        write_parquet(&subset, &kept(&full, &keep));
        let (a, b) = (d.path().join("filtered"), d.path().join("physical"));
        let mut args = run_args(&s(&all), &s(&a)).into_iter().map(String::from).collect::<Vec<_>>();
        args.extend(["--where".to_string(), predicate.to_string(), "--overwrite".to_string()]);
        let m: serde_json::Value = serde_json::from_str(&lidscope_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
        let (sub_s, b_s) = (s(&subset), s(&b));
        let mut physical = run_args(&sub_s, &b_s);
        physical.push("--overwrite");
        let want: serde_json::Value = serde_json::from_str(&lidscope_ok(&physical)).unwrap();
        let n = (0..ROWS).filter(|&i| keep(i)).count() as u64;
        assert_eq!(m["rows"].as_u64(), Some(n), "{predicate}");
        assert_eq!(m["where"], predicate, "the manifest records the predicate");
        assert!(want.get("where").is_none(), "absent without --where");
        assert_eq!(m["reference_sha256"], want["reference_sha256"], "{predicate}: the same sample");
        assert_eq!(m["mean_lid"], want["mean_lid"], "{predicate}");
        assert_eq!(lids(&a), lids(&b), "{predicate}: every lid to the bit");
        assert!(reference_ids(&a).iter().all(|&(s, p)| keep((s * 4 + p) as usize)), "{predicate}: only kept rows are sampled");
    }
}

#[test]
fn bad_predicates_are_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let all = d.path().join("all.parquet");
    write_parquet(&all, &corpus(3));
    let out = d.path().join("out");
    let (all_s, out_s) = (s(&all), s(&out));
    for (predicate, says) in [
        ("positon = 3", vec!["positon", "all.parquet", "seq_id, position, split, special"]),
        ("position + 1", vec!["true or false", "Int64"]),
        ("emb IS NOT NULL", vec!["embedding column"]),
        ("position = ", vec!["--where"]),
    ] {
        let mut args = run_args(&all_s, &out_s);
        args.extend(["--where", predicate]);
        let o = lidscope(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{predicate}: a usage error: {err}");
        for w in says {
            assert!(err.contains(w), "{predicate}: {w:?} missing from: {err}");
        }
        assert!(!out.exists(), "{predicate}: nothing written");
    }
}

#[test]
fn a_sweep_with_where_shares_a_sample_of_the_kept_rows() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for step in [100, 200] {
        let path = root.join(format!("emb/step-{step}/c.parquet"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_parquet(&path, &corpus(step));
        let sub = root.join(format!("sub/step-{step}/c.parquet"));
        std::fs::create_dir_all(sub.parent().unwrap()).unwrap();
        write_parquet(&sub, &kept(&corpus(step), |i| i % 4 == 3));
    }
    let spec = |dir: &str, filter: &str| {
        format!("results = \"{dir}-results\"\nembedding_column = \"emb\"\nid_columns = [\"seq_id\", \"position\"]\nk = 10\nreference_size = 150\npool = 250\n{filter}\n[[corpus]]\npattern = \"{dir}/step-{{step}}/c.parquet\"\n")
    };
    std::fs::write(root.join("a.toml"), spec("emb", "where = \"position = 3\"")).unwrap();
    std::fs::write(root.join("b.toml"), spec("sub", "")).unwrap();
    lidscope_ok(&["-q", "sweep", &s(&root.join("a.toml"))]);
    lidscope_ok(&["-q", "sweep", &s(&root.join("b.toml"))]);
    for step in [100, 200] {
        let m = |dir: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(root.join(format!("{dir}-results/data/step={step}/_manifest.json"))).unwrap()).unwrap() };
        let (a, b) = (m("emb"), m("sub"));
        assert_eq!(a["where"], "position = 3");
        assert_eq!(a["rows"].as_u64(), Some((ROWS / 4) as u64));
        assert_eq!(a["reference_sha256"], b["reference_sha256"], "step {step}: one shared sample of the kept rows");
        assert_eq!(a["mean_lid"], b["mean_lid"], "step {step}");
    }
    // Another predicate makes every run a changed one.
    std::fs::write(root.join("a.toml"), spec("emb", "where = \"position = 2\"")).unwrap();
    let plan = lidscope_ok(&["sweep", &s(&root.join("a.toml")), "--dry-run"]);
    assert!(plan.contains("where was Some(\"position = 3\")"), "{plan}");
}
