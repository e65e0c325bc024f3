//! Token identity: which columns name a token, how they become comparable bytes, and the seeded
//! order in which tokens are sampled.
//!
//! The reference sample must pick the *same tokens* for every checkpoint of a model, whatever the
//! file layout, batch size or column types a writer happened to use. So identity is encoded from
//! canonicalised types (every integer as Int64, every string as Utf8, dictionaries as their values)
//! with Arrow's row format, and the sampling order is a hash of those bytes, not a position.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// The type an identity column is encoded as, so that equal values written with different physical
/// types (Int32 vs UInt64, Utf8 vs LargeUtf8, dictionary vs plain) give equal keys.
pub fn canonical_identity_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DataType::Int64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => canonical_identity_type(value),
        other => other.clone(),
    }
}

/// Encodes the identity columns of record batches into owned, comparable byte keys.
#[derive(Debug)]
pub struct IdentityEncoder {
    columns: Vec<String>,
    schema: SchemaRef,
    converter: RowConverter,
}

impl IdentityEncoder {
    /// Builds an encoder for `id_columns` as typed in `schema` (the schema of file `path`).
    ///
    /// # Errors
    /// [`DataError::ColumnNotFound`] when a column is missing, [`DataError::ColumnType`] when its
    /// type cannot be row-encoded.
    pub fn new(schema: &Schema, id_columns: &[String], path: &Path) -> Result<Self> {
        let mut fields = Vec::with_capacity(id_columns.len());
        for name in id_columns {
            let field = schema.field_with_name(name).map_err(|_| DataError::column_not_found(path, name, schema))?;
            let dt = canonical_identity_type(field.data_type());
            if !RowConverter::supports_fields(&[SortField::new(dt.clone())]) {
                return Err(DataError::ColumnType {
                    path: path.to_path_buf(),
                    column: name.clone(),
                    expected: "an identity type (integer, string, binary, ...)".into(),
                    found: field.data_type().to_string(),
                });
            }
            fields.push(Field::new(name, dt, false));
        }
        let sort_fields = fields.iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = RowConverter::new(sort_fields).map_err(|e| DataError::arrow(path, e))?;
        Ok(IdentityEncoder { columns: id_columns.to_vec(), schema: Arc::new(Schema::new(fields)), converter })
    }

    /// The identity columns, canonical types, non-nullable.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The identity columns of `batch`, cast to their canonical types.
    ///
    /// `path` and `first_row` (row index within the file of the batch's first row) go into errors.
    ///
    /// # Errors
    /// [`DataError::ColumnNotFound`] for a missing column, [`DataError::InvalidValue`] for a null
    /// identity value or one that does not fit the canonical type (e.g. a UInt64 above `i64::MAX`).
    pub fn canonical_columns(&self, batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<ArrayRef>> {
        let options = CastOptions { safe: false, ..Default::default() };
        let mut out = Vec::with_capacity(self.columns.len());
        for (name, field) in self.columns.iter().zip(self.schema.fields()) {
            let col = batch.column_by_name(name).ok_or_else(|| DataError::column_not_found(path, name, &batch.schema()))?;
            if let Some(nulls) = col.logical_nulls().filter(|n| n.null_count() > 0) {
                let i = nulls.iter().position(|valid| !valid).unwrap_or(0);
                return Err(DataError::invalid(path, name, Some(first_row + i as u64), "null identity value"));
            }
            let cast = cast_with_options(col, field.data_type(), &options)
                .map_err(|e| DataError::invalid(path, name, None, format!("identity value does not fit {}: {e}", field.data_type())))?;
            out.push(cast);
        }
        Ok(out)
    }

    /// One owned key per row of `batch`: equal identities give equal bytes across files and types.
    ///
    /// # Errors
    /// As [`Self::canonical_columns`], plus [`DataError::Arrow`] if row encoding fails.
    pub fn encode(&self, batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<Box<[u8]>>> {
        let cols = self.canonical_columns(batch, path, first_row)?;
        let rows = self.converter.convert_columns(&cols).map_err(|e| DataError::arrow(path, e))?;
        Ok(rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())).collect())
    }

    /// Turns keys produced by [`Self::encode`] back into identity columns (canonical types).
    ///
    /// # Panics
    /// May panic when a key was not produced by an encoder of the same identity types.
    pub fn decode(&self, keys: &[Box<[u8]>]) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let cols = self
            .converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))
            .map_err(|e| DataError::InvalidArgument(format!("decoding identity keys: {e}")))?;
        RecordBatch::try_new(self.schema.clone(), cols).map_err(|e| DataError::InvalidArgument(format!("decoding identity keys: {e}")))
    }

    /// A readable rendering of one key, e.g. `(seq_id=3, position=7)`, for error messages.
    pub fn describe(&self, key: &[u8]) -> String {
        let Ok(batch) = self.decode(&[Box::from(key)]) else {
            return "(undecodable)".into();
        };
        let parts: Vec<String> = batch
            .columns()
            .iter()
            .zip(&self.columns)
            .map(|(col, name)| {
                let value = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
                    .map(|f| f.value(0).to_string())
                    .unwrap_or_default();
                format!("{name}={value}")
            })
            .collect();
        format!("({})", parts.join(", "))
    }
}

/// The identity of a row when no id columns are given: its file's index in the resolved input list
/// and its row within that file, as 12 big-endian bytes (so byte order is (file, row) order).
pub fn positional_key(file_index: u32, row: u64) -> Box<[u8]> {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&file_index.to_be_bytes());
    key[4..].copy_from_slice(&row.to_be_bytes());
    Box::new(key)
}

/// Renders a [`positional_key`] as `(file #i, row r)`.
pub(crate) fn describe_positional(key: &[u8]) -> String {
    if key.len() == 12 {
        let file = u32::from_be_bytes(key[..4].try_into().unwrap_or_default());
        let row = u64::from_be_bytes(key[4..].try_into().unwrap_or_default());
        format!("(file #{file}, row {row})")
    } else {
        "(positional)".into()
    }
}

/// The seeded sampling priority of an identity key: the first 8 bytes, big-endian, of
/// SHA-256(`seed` as little-endian bytes ++ `key`). Sorting by it gives a random order that
/// depends only on the seed and the identities, never on file layout or batching.
pub fn priority(seed: u64, key: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key);
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Int32Array, LargeStringArray, StringArray, UInt64Array};
    use arrow::datatypes::Int8Type;

    use super::*;

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    #[test]
    fn keys_agree_across_physical_types() {
        let ids = vec!["seq_id".to_string(), "doc".to_string()];
        let a = batch(vec![
            ("seq_id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            ("doc", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
        ]);
        let dict: DictionaryArray<Int8Type> = vec!["x", "y"].into_iter().collect();
        let b = batch(vec![
            ("doc", Arc::new(dict) as ArrayRef),
            ("seq_id", Arc::new(UInt64Array::from(vec![1, 2])) as ArrayRef),
        ]);
        let c = batch(vec![
            ("seq_id", Arc::new(UInt64Array::from(vec![2, 1])) as ArrayRef),
            ("doc", Arc::new(LargeStringArray::from(vec!["y", "y"])) as ArrayRef),
        ]);
        let p = Path::new("a.parquet");
        let ka = IdentityEncoder::new(&a.schema(), &ids, p).unwrap().encode(&a, p, 0).unwrap();
        let kb = IdentityEncoder::new(&b.schema(), &ids, p).unwrap().encode(&b, p, 0).unwrap();
        let enc_c = IdentityEncoder::new(&c.schema(), &ids, p).unwrap();
        let kc = enc_c.encode(&c, p, 0).unwrap();
        assert_eq!(ka, kb);
        assert_eq!(ka[1], kc[0]);
        assert_ne!(ka[0], kc[1]);
        assert_eq!(enc_c.describe(&kc[1]), "(seq_id=1, doc=y)");
        let back = enc_c.decode(&ka).unwrap();
        assert_eq!(back.column(0).as_ref(), &arrow::array::Int64Array::from(vec![1, 2]) as &dyn Array);
    }

    #[test]
    fn null_identity_names_row() {
        let ids = vec!["seq_id".to_string()];
        let a = batch(vec![("seq_id", Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef)]);
        let p = Path::new("a.parquet");
        let e = IdentityEncoder::new(&a.schema(), &ids, p).unwrap().encode(&a, p, 100).unwrap_err();
        assert_eq!(e.to_string(), r#"reading a.parquet: column "seq_id": row 101: null identity value"#);
        let e = IdentityEncoder::new(&a.schema(), &["nope".to_string()], p).unwrap_err();
        assert_eq!(e.to_string(), r#"reading a.parquet: column "nope" not found (columns: seq_id)"#);
    }

    #[test]
    fn positional_keys_and_priority() {
        assert_eq!(&*positional_key(1, 2), &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert!(positional_key(0, u64::MAX) < positional_key(1, 0));
        assert_eq!(describe_positional(&positional_key(3, 9)), "(file #3, row 9)");
        let k = positional_key(0, 0);
        assert_eq!(priority(7, &k), priority(7, &k));
        assert_ne!(priority(7, &k), priority(8, &k));
        // Pinned: SHA-256(0u64 LE ++ []) = af5570f5a1810b7a...
        assert_eq!(priority(0, &[]), 0xaf55_70f5_a181_0b7a);
    }
}
