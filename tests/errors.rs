//! Bad input: each case fails with exit code 1 and names the file, the column and the problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, ListArray, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type};

use crate::util::*;

fn ids(n: usize, from: i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(from..from + n as i64))
}

/// A corpus file with `seq_id`, `position` and `emb`.
fn corpus(dir: &Path, name: &str, n: usize, dim: usize, emb: Option<ArrayRef>) -> PathBuf {
    let p = dir.join(name);
    let emb = emb.unwrap_or_else(|| fsl(vectors(n, dim, n as u64 + dim as u64), dim));
    write_parquet(&p, &batch(vec![("seq_id", ids(n, 0)), ("position", ids(n, 0)), ("emb", emb)]));
    p
}

/// Runs `lidscope run` on `corpus` with `extra` arguments; asserts exit 1 and that stderr names
/// every string in `must`.
fn fails(dir: &Path, corpus: &[&Path], extra: &[&str], must: &[&str]) -> String {
    let out = s(&dir.join("out"));
    let mut args = vec!["run".to_string(), "--corpus".into()];
    args.extend(corpus.iter().map(|p| s(p)));
    args.extend(["--embedding-column".into(), "emb".into(), "--out".into(), out, "--k".into(), "5".into()]);
    args.extend(extra.iter().map(|x| x.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = lidscope_err(&argv);
    for m in must {
        assert!(stderr.contains(m), "stderr should mention {m:?}:\n{stderr}");
    }
    assert!(!dir.join("out/manifest.json").exists(), "a failed run must not leave a manifest");
    stderr
}

#[test]
fn missing_embedding_column() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), "a.parquet", 20, 4, None);
    lidscope_err(&["run", "--corpus", &s(&c), "--embedding-column", "nope", "--out", &s(&d.path().join("o"))])
        .contains("nope")
        .then_some(())
        .expect("names the column");
    fails(d.path(), &[&c], &["--id-columns", "seq_id,missing_id"], &["a.parquet", "missing_id"]);
}

#[test]
fn wrong_embedding_type() {
    let d = tempfile::tempdir().unwrap();
    let strings: ArrayRef = Arc::new(StringArray::from_iter_values((0..20).map(|i| format!("v{i}"))));
    let c = corpus(d.path(), "a.parquet", 20, 4, Some(strings));
    fails(d.path(), &[&c], &[], &["a.parquet", "emb", "Utf8"]);
}

#[test]
fn non_finite_and_null_embeddings() {
    let d = tempfile::tempdir().unwrap();
    let mut v = vectors(20, 4, 1);
    v[13 * 4 + 2] = f32::NAN;
    let c = corpus(d.path(), "nan.parquet", 20, 4, Some(fsl(v, 4)));
    fails(d.path(), &[&c], &[], &["nan.parquet", "emb", "13", "NaN"]);

    let mut v = vectors(20, 4, 2);
    v[4] = f32::INFINITY;
    let c = corpus(d.path(), "inf.parquet", 20, 4, Some(fsl(v, 4)));
    fails(d.path(), &[&c], &[], &["inf.parquet", "emb", "inf"]);

    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let values = Arc::new(Float32Array::from(vectors(20, 4, 3)));
    let nulls = arrow::buffer::NullBuffer::from((0..20).map(|i| i != 7).collect::<Vec<_>>());
    let with_null: ArrayRef = Arc::new(FixedSizeListArray::try_new(item, 4, values, Some(nulls)).unwrap());
    let c = corpus(d.path(), "null.parquet", 20, 4, Some(with_null));
    fails(d.path(), &[&c], &[], &["null.parquet", "emb", "7", "null"]);
}

#[test]
fn mixed_and_mismatched_dimensions() {
    let d = tempfile::tempdir().unwrap();
    // Within one file: a List<Float64> column whose rows change length.
    let rows: Vec<Option<Vec<Option<f64>>>> =
        (0..20).map(|i| Some((0..if i == 11 { 3 } else { 4 }).map(|j| Some((i * 5 + j) as f64 * 0.1)).collect())).collect();
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(rows));
    let c = corpus(d.path(), "ragged.parquet", 20, 4, Some(list));
    fails(d.path(), &[&c], &[], &["ragged.parquet", "emb", "11", "dimension"]);

    // Across files.
    let a = corpus(d.path(), "a.parquet", 20, 4, None);
    let b = corpus(d.path(), "b.parquet", 20, 6, None);
    fails(d.path(), &[&a, &b], &[], &["b.parquet", "emb"]);

    // Corpus against reference.
    let r = corpus(d.path(), "ref6.parquet", 20, 6, None);
    fails(d.path(), &[&a], &["--reference", &s(&r)], &["ref6.parquet", "emb", "dimension"]);
}

#[test]
fn empty_unreadable_and_missing_inputs() {
    let d = tempfile::tempdir().unwrap();
    let empty = corpus(d.path(), "empty.parquet", 0, 4, Some(fsl(vec![], 4)));
    fails(d.path(), &[&empty], &[], &["empty.parquet"]);

    let junk = d.path().join("junk.parquet");
    std::fs::write(&junk, b"this is not parquet").unwrap();
    fails(d.path(), &[&junk], &[], &["junk.parquet", "Parquet"]);

    let none = d.path().join("nothing-*.parquet");
    fails(d.path(), &[&none], &[], &["nothing-*.parquet"]);
}

#[test]
fn too_few_reference_rows_and_bad_k() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), "a.parquet", 50, 4, None);
    let r = corpus(d.path(), "small_ref.parquet", 5, 4, None);
    fails(d.path(), &[&c], &["--reference", &s(&r)], &["too few reference rows", "small_ref.parquet", "k = 5"]);
    fails(d.path(), &[&c], &["--reference-size", "5"], &["too few reference rows", "k = 5"]);

    let out = lidscope(&["run", "--corpus", &s(&c), "--embedding-column", "emb", "--out", "x", "--k", "2"]);
    assert_eq!(out.status.code(), Some(2), "k < 3 is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--k"));

    // Parameters the engine refuses before any work are usage errors too, and leave nothing.
    let o = d.path().join("p");
    let out = lidscope(&["run", "--corpus", &s(&c), "--embedding-column", "emb", "--out", &s(&o), "--k", "5", "--partition", "model=a/b"]);
    assert_eq!(out.status.code(), Some(2), "a malformed --partition is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partition model=a/b"));
    assert!(!o.exists());
}

#[test]
fn duplicate_identity_in_reference() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path(), "a.parquet", 30, 4, None);
    let r = d.path().join("dup_ref.parquet");
    let seq: ArrayRef = Arc::new(Int64Array::from_iter_values((0..10).map(|i| if i == 6 { 2 } else { i })));
    write_parquet(&r, &batch(vec![("seq_id", seq.clone()), ("position", seq), ("emb", fsl(vectors(10, 4, 9), 4))]));
    fails(d.path(), &[&c], &["--reference", &s(&r), "--id-columns", "seq_id,position"], &["dup_ref.parquet", "2", "6"]);
}

#[test]
fn output_column_collision() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("has_lid.parquet");
    let lid: ArrayRef = Arc::new(Float64Array::from_iter_values((0..20).map(|i| i as f64)));
    write_parquet(&p, &batch(vec![("lid", lid), ("emb", fsl(vectors(20, 4, 4), 4))]));
    fails(d.path(), &[&p], &[], &["has_lid.parquet", "\"lid\""]);
    // Names the run's plan uses for itself.
    let p = d.path().join("reserved.parquet");
    let row: ArrayRef = Arc::new(Float64Array::from_iter_values((0..20).map(|i| i as f64)));
    write_parquet(&p, &batch(vec![("__lidscope_row", row), ("emb", fsl(vectors(20, 4, 4), 4))]));
    fails(d.path(), &[&p], &[], &["reserved.parquet", "\"__lidscope_row\"", "reserved"]);
}

#[test]
fn failed_rerun_keeps_the_committed_result() {
    let d = tempfile::tempdir().unwrap();
    let good = corpus(d.path(), "good.parquet", 40, 4, None);
    let out = s(&d.path().join("out"));
    lidscope_ok(&["-q", "run", "--corpus", &s(&good), "--embedding-column", "emb", "--out", &out, "--k", "5"]);
    let manifest = std::fs::read(d.path().join("out/manifest.json")).unwrap();
    let data = read_batches(&d.path().join("out/data"));

    // Without --overwrite: refused, nothing touched.
    let e = lidscope_err(&["run", "--corpus", &s(&good), "--embedding-column", "emb", "--out", &out, "--k", "5"]);
    assert!(e.contains("--overwrite"), "{e}");

    // With --overwrite but bad input: fails, the old result stays complete and unchanged.
    let mut v = vectors(40, 4, 5);
    v[30 * 4] = f32::NAN;
    let bad = corpus(d.path(), "bad.parquet", 40, 4, Some(fsl(v, 4)));
    let e = lidscope_err(&["run", "--corpus", &s(&bad), "--embedding-column", "emb", "--out", &out, "--k", "5", "--overwrite"]);
    assert!(e.contains("bad.parquet"), "{e}");
    assert_eq!(std::fs::read(d.path().join("out/manifest.json")).unwrap(), manifest);
    assert_eq!(read_batches(&d.path().join("out/data")), data);
    let leftovers: Vec<_> = std::fs::read_dir(d.path().join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 3, "only data/, reference.parquet and manifest.json remain: {leftovers:?}");
}

/// A batch that fails after an earlier file's part was handed to the result writer: the run names
/// the file and row, and neither a result part nor a temporary file is left behind.
#[test]
fn failure_after_a_written_part_leaves_no_part() {
    let d = tempfile::tempdir().unwrap();
    let good = corpus(d.path(), "a_good.parquet", 40, 4, None);
    let mut v = vectors(40, 4, 5);
    v[30 * 4] = f32::NAN;
    let bad = corpus(d.path(), "b_bad.parquet", 40, 4, Some(fsl(v, 4)));
    fails(d.path(), &[&good, &bad], &["--reference", &s(&good)], &["b_bad.parquet", "30"]);
    fn files(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut left = Vec::new();
    files(&d.path().join("out"), &mut left);
    assert!(left.is_empty(), "a failed run must leave no files: {left:?}");
}
