//! The reference sample as a value and as a reusable Parquet file.
//!
//! A reference written once (`lidscope sample`) can be reused by many runs; its content hash goes
//! into every manifest so that results measured against different references are never compared
//! by mistake.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use sha2::{Digest, Sha256};

use crate::embedding::decode_embeddings;
use crate::error::{DataError, Result};
use crate::identity::{describe_positional, positional_key, IdentityEncoder};
use crate::reader::{check_embedding_field, open_parquet, projection};
use crate::sample::{positional_batch, SampleStats};
use crate::writer::AtomicParquetWriter;

/// A reference sample: identities and vectors, in pool order (or file order when read from a file).
#[derive(Debug, Clone)]
pub struct Reference {
    /// Identity columns with canonical types; without id columns, `file` (Utf8) and `row` (UInt64).
    pub ids: RecordBatch,
    /// Identity keys, one per row, comparable with the corpus's keys.
    pub keys: Vec<Box<[u8]>>,
    /// Row-major `rows * dim` vectors.
    pub embeddings: Vec<f32>,
    /// Vector dimension.
    pub dim: usize,
    /// How the sample was drawn; for a reference read from a file, every count is its row count and
    /// no duplicates are reported.
    pub stats: SampleStats,
}

impl Reference {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the reference holds no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Reads a reference file: identity columns plus an embedding column.
///
/// Without id columns every key is [`positional_key`]`(u32::MAX, row)`: such a reference shares no
/// identity with the corpus, so no corpus token is excluded from its own neighbourhood.
///
/// # Errors
/// Unreadable file, missing or mistyped columns, invalid vectors (as for a corpus),
/// [`DataError::EmptyFile`] for a file without rows and [`DataError::DuplicateIdentity`] naming both
/// rows when two rows share an identity.
pub fn read_reference(path: &Path, embedding_column: &str, id_columns: &[String]) -> Result<Reference> {
    let builder = open_parquet(path)?;
    let schema = builder.schema().clone();
    let fixed_dim = check_embedding_field(&schema, path, embedding_column)?;
    let encoder = if id_columns.is_empty() { None } else { Some(IdentityEncoder::new(&schema, id_columns, path)?) };
    let mut names: Vec<&str> = id_columns.iter().map(String::as_str).collect();
    names.push(embedding_column);
    let mask = projection(&builder, path, &names)?;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|source| DataError::Parquet { path: path.to_path_buf(), source })?;

    let mut dim = fixed_dim;
    let mut embeddings = Vec::new();
    let mut keys: Vec<Box<[u8]>> = Vec::new();
    let mut id_cols: Vec<Vec<ArrayRef>> = Vec::new();
    let mut seen: HashMap<Box<[u8]>, u64> = HashMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| DataError::arrow(path, e))?;
        let first_row = keys.len() as u64;
        let col = batch.column_by_name(embedding_column).expect("projected");
        let (values, d) = decode_embeddings(col.as_ref(), path, embedding_column, first_row, dim)?;
        if batch.num_rows() > 0 {
            dim = Some(d);
        }
        embeddings.extend_from_slice(&values);
        let batch_keys = match &encoder {
            Some(e) => {
                id_cols.push(e.canonical_columns(&batch, path, first_row)?);
                e.encode(&batch, path, first_row)?
            }
            None => (0..batch.num_rows() as u64).map(|r| positional_key(u32::MAX, first_row + r)).collect(),
        };
        for (r, key) in batch_keys.into_iter().enumerate() {
            let row = first_row + r as u64;
            if let Some(&first) = seen.get(&key) {
                return Err(DataError::DuplicateIdentity {
                    identity: encoder.as_ref().map_or_else(|| describe_positional(&key), |e| e.describe(&key)),
                    first_path: path.to_path_buf(),
                    first_row: first,
                    second_path: path.to_path_buf(),
                    second_row: row,
                });
            }
            seen.insert(key.clone(), row);
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(DataError::EmptyFile { path: path.to_path_buf() });
    }
    let n = keys.len();
    let ids = match &encoder {
        Some(e) => {
            let mut cols = Vec::with_capacity(id_columns.len());
            for c in 0..id_columns.len() {
                let parts: Vec<&dyn arrow::array::Array> = id_cols.iter().map(|b| b[c].as_ref()).collect();
                cols.push(arrow::compute::concat(&parts).map_err(|e| DataError::arrow(path, e))?);
            }
            RecordBatch::try_new(e.schema().clone(), cols).map_err(|e| DataError::arrow(path, e))?
        }
        None => positional_batch(vec![path.display().to_string(); n], (0..n as u64).collect()),
    };
    let stats = SampleStats { pool_requested: n, pool_rows: n, duplicates_dropped: 0, requested: n, rows: n };
    Ok(Reference { ids, keys, embeddings, dim: dim.unwrap_or(0), stats })
}

/// Writes a reference as its identity columns plus `embedding_column` as
/// `FixedSizeList<Float32, dim>`, atomically (see [`AtomicParquetWriter`]).
///
/// # Errors
/// [`DataError::InvalidArgument`] when the vectors do not fill `rows * dim`, and write errors.
pub fn write_reference(path: &Path, r: &Reference, embedding_column: &str) -> Result<()> {
    let n = r.ids.num_rows();
    let dim = i32::try_from(r.dim).map_err(|_| DataError::InvalidArgument(format!("dimension {} too large", r.dim)))?;
    if r.embeddings.len() != n * r.dim || r.dim == 0 {
        return Err(DataError::InvalidArgument(format!(
            "reference has {n} rows and {} values, not a multiple of dimension {}",
            r.embeddings.len(),
            r.dim
        )));
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields: Vec<Field> = r.ids.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(embedding_column, DataType::FixedSizeList(item.clone(), dim), false));
    let schema = Arc::new(Schema::new(fields));
    let mut writer = AtomicParquetWriter::new(path, schema.clone())?;
    const CHUNK: usize = 16 * 1024;
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        let values = Float32Array::from(r.embeddings[start * r.dim..(start + len) * r.dim].to_vec());
        let list = FixedSizeListArray::try_new(item.clone(), dim, Arc::new(values), None).map_err(|e| DataError::arrow(path, e))?;
        let mut cols: Vec<ArrayRef> = r.ids.slice(start, len).columns().to_vec();
        cols.push(Arc::new(list));
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| DataError::arrow(path, e))?;
        writer.write(&batch)?;
        start += len;
    }
    writer.finish()
}

/// Hex SHA-256 of the vectors' little-endian f32 bytes, row-major: the reference's content hash.
///
/// # Panics
/// When `dim` is 0 and `embeddings` is not empty, or `embeddings.len()` is not a multiple of `dim`.
#[track_caller]
pub fn vectors_sha256(embeddings: &[f32], dim: usize) -> String {
    assert!(
        (dim == 0 && embeddings.is_empty()) || (dim > 0 && embeddings.len().is_multiple_of(dim)),
        "{} values are not rows of dimension {dim}",
        embeddings.len()
    );
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in embeddings.chunks(4096) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&buf);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "reference_tests.rs"]
mod tests;
