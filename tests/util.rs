//! Shared helpers: fixture paths, running the built binary, reading Parquet columns.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, FixedSizeListArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

/// `../shared/fixtures` beside the checkout, or `$LIDSCOPE_FIXTURES`.
pub fn fixtures() -> PathBuf {
    if let Ok(p) = std::env::var("LIDSCOPE_FIXTURES") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    assert!(p.join("README.md").exists(), "golden fixtures not found at {} (set LIDSCOPE_FIXTURES)", p.display());
    p
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// Runs the built `lidscope` with `args`.
pub fn lidscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lidscope")).args(args).env_remove("RUST_LOG").env_remove("LIDSCOPE_LOG").env_remove("LIDSCOPE_TOKEN").output().unwrap()
}

/// Runs and asserts success; returns stdout.
pub fn lidscope_ok(args: &[&str]) -> String {
    let out = lidscope(args);
    assert!(out.status.success(), "lidscope {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and asserts failure with exit code 1; returns stderr.
pub fn lidscope_err(args: &[&str]) -> String {
    let out = lidscope(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "lidscope {args:?} should fail with 1, stderr:\n{stderr}");
    stderr
}

/// All record batches of a Parquet file or of every `*.parquet` in a directory (sorted).
pub fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .flat_map(|f| ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap()).unwrap().build().unwrap().map(|b| b.unwrap()))
        .collect()
}

/// A numeric column as f64, concatenated over batches.
pub fn f64_column(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
            match c.data_type() {
                DataType::Float64 => c.as_primitive::<Float64Type>().values().to_vec(),
                DataType::Int64 => c.as_primitive::<Int64Type>().values().iter().map(|v| *v as f64).collect(),
                DataType::Int32 => c.as_primitive::<Int32Type>().values().iter().map(|v| *v as f64).collect(),
                t => panic!("column {name}: unexpected {t}"),
            }
        })
        .collect()
}

/// A string column (Utf8, LargeUtf8 or Utf8View).
pub fn string_column(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")), &DataType::Utf8).unwrap();
            c.as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect()
}

/// A boolean column.
pub fn bool_column(batches: &[RecordBatch], name: &str) -> Vec<bool> {
    batches.iter().flat_map(|b| b.column_by_name(name).unwrap().as_boolean().iter().map(|v| v.unwrap()).collect::<Vec<_>>()).collect()
}

/// A FixedSizeList<Float32> column as row-major values and its dimension.
pub fn embeddings(batches: &[RecordBatch], name: &str) -> (Vec<f32>, usize) {
    let mut out = Vec::new();
    let mut dim = 0;
    for b in batches {
        let l = b.column_by_name(name).unwrap().as_fixed_size_list();
        dim = l.value_length() as usize;
        out.extend_from_slice(l.values().as_primitive::<Float32Type>().values());
    }
    (out, dim)
}

/// Writes one batch to a Parquet file.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Writes one batch to a Parquet file in row groups of at most `rows` rows.
pub fn write_parquet_groups(path: &Path, batch: &RecordBatch, rows: usize) {
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(rows)).build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A FixedSizeList<Float32, dim> array of the given rows.
pub fn fsl(values: Vec<f32>, dim: usize) -> ArrayRef {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Arc::new(FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), None).unwrap())
}

/// A batch from named columns.
pub fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Arc::new(Schema::new(cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), a.null_count() > 0)).collect::<Vec<_>>()));
    RecordBatch::try_new(schema, cols.into_iter().map(|(_, a)| a).collect()).unwrap()
}

/// The README's tolerance: per-point |error| <= 1e-3 for at least 99.9% of rows, and the mean
/// within 1e-4 relative.
pub fn assert_golden(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let bad = got.iter().zip(want).filter(|(g, w)| (*g - *w).abs().is_nan() || (*g - *w).abs() > 1e-3).count();
    let allowed = (want.len() as f64 * 0.001).floor() as usize;
    assert!(bad <= allowed, "{what}: {bad} of {} rows off by more than 1e-3 (allowed {allowed})", want.len());
    let (mg, mw) = (mean(got), mean(want));
    assert!(((mg - mw) / mw).abs() <= 1e-4, "{what}: mean {mg} vs golden {mw}");
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub fn assert_rel(what: &str, got: f64, want: f64, tol: f64) {
    assert!(((got - want) / want).abs() <= tol, "{what}: {got} vs {want} (relative tolerance {tol})");
}


/// `n` distinct vectors of dimension `dim` in general position.
pub fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n * dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}
