//! Small helpers that build real Parquet files for the unit tests.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, ListArray, RecordBatch, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

pub fn fsl(vecs: &[Vec<f32>]) -> ArrayRef {
    let dim = vecs.first().map_or(0, Vec::len) as i32;
    let values: Vec<f32> = vecs.iter().flatten().copied().collect();
    Arc::new(FixedSizeListArray::new(Arc::new(Field::new("item", DataType::Float32, true)), dim, Arc::new(Float32Array::from(values)), None))
}

pub fn list_f64(vecs: &[Vec<f32>]) -> ArrayRef {
    let values: Vec<f64> = vecs.iter().flatten().map(|&x| x as f64).collect();
    let offsets = OffsetBuffer::from_lengths(vecs.iter().map(Vec::len));
    Arc::new(ListArray::new(Arc::new(Field::new("element", DataType::Float64, true)), offsets, Arc::new(Float64Array::from(values)), None))
}

pub fn i64s(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

pub fn strs(v: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

pub fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).unwrap()
}

/// Writes `batch` to `path` with row groups of at most `row_group` rows.
pub fn write(path: &Path, batch: &RecordBatch, row_group: usize) {
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(row_group)).build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A deterministic vector for row `i`.
pub fn vector(i: usize, dim: usize) -> Vec<f32> {
    (0..dim).map(|j| ((i * 31 + j * 7) % 97) as f32 / 9.0 - 5.0).collect()
}
