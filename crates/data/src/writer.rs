//! Atomic file output: a result part, a reference or a manifest appears whole under its final name
//! or not at all.
//!
//! Readers (SQL queries over a results directory, a resumed run checking what is done) must never
//! see a half-written Parquet file, so everything is written to a hidden temporary name in the same
//! directory, fsynced and renamed. Hidden names start with `.`, which [`crate::resolve_inputs`] and
//! most Parquet readers skip.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Type as PhysicalType, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};

use crate::error::{DataError, Result};

fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| DataError::InvalidArgument(format!("{}: not a file path", path.display())))?;
    let tmp = format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

/// Makes a completed rename durable by syncing the directory that holds it (best effort off Unix).
fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| DataError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writer properties for `schema`: zstd, except the values of float lists ([`plain_float_lists`]).
fn properties(schema: &Schema, metadata: Option<Vec<KeyValue>>) -> WriterProperties {
    let b = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).set_key_value_metadata(metadata);
    plain_float_lists(b, schema).build()
}

/// Sets the values of `schema`'s float lists (embeddings, hidden states, a reference's vectors)
/// to be written plain, without compression or dictionary, whatever `builder` sets for the other
/// columns. A model's float32 vectors shrink by about 3 to 6% under zstd (MiniLM hidden states:
/// 88 to 83 MB) and no dictionary holds them, while compressing them cost a run a third to half
/// a second of a core, and reading them back a fifth to a third of its sampling
/// (docs/performance.md). A schema that does not convert is left to the writer, which reports
/// it when opened.
pub fn plain_float_lists(mut builder: WriterPropertiesBuilder, schema: &Schema) -> WriterPropertiesBuilder {
    if let Ok(parquet) = ArrowSchemaConverter::new().convert(schema) {
        for c in parquet.columns() {
            if c.max_rep_level() > 0 && matches!(c.physical_type(), PhysicalType::FLOAT | PhysicalType::DOUBLE) {
                builder = builder.set_column_compression(c.path().clone(), Compression::UNCOMPRESSED).set_column_dictionary_enabled(c.path().clone(), false);
            }
        }
    }
    builder
}

/// Writes record batches to a Parquet file that appears under its final name only on
/// [`finish`](Self::finish). Dropping it unfinished removes the temporary file.
pub struct AtomicParquetWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl AtomicParquetWriter {
    /// Starts writing `path` with the given schema, via `<dir>/.<name>.tmp-<pid>`: zstd, but
    /// vectors of floats plain ([`properties`]).
    ///
    /// # Errors
    /// [`DataError::Io`] if the temporary file cannot be created, [`DataError::Write`] if the schema
    /// cannot be written as Parquet.
    pub fn new(path: &Path, schema: SchemaRef) -> Result<Self> {
        let props = properties(&schema, None);
        Self::with_properties(path, schema, props)
    }

    /// As [`Self::new`], with `metadata` in the file's key-value metadata (e.g. the run's
    /// parameters, [`crate::Manifest::part_metadata`]).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_metadata(path: &Path, schema: SchemaRef, metadata: Vec<(String, String)>) -> Result<Self> {
        let kv = metadata.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        let props = properties(&schema, Some(kv));
        Self::with_properties(path, schema, props)
    }

    /// As [`Self::new`] with explicit writer properties (row group size, statistics, ...).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_properties(path: &Path, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let tmp = temp_path(path)?;
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let writer = match ArrowWriter::try_new(file, schema, Some(props)) {
            Ok(w) => w,
            Err(source) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(DataError::Write { path: path.to_path_buf(), source });
            }
        };
        Ok(AtomicParquetWriter { path: path.to_path_buf(), tmp, writer: Some(writer) })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch.
    ///
    /// # Errors
    /// [`DataError::Write`] when the batch does not match the schema or writing fails.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self.writer.as_mut().expect("writer is present until finish");
        w.write(batch).map_err(|source| DataError::Write { path: self.path.clone(), source })
    }

    /// Writes the footer, fsyncs, and renames the file to its final name (replacing any old file).
    ///
    /// # Errors
    /// [`DataError::Write`] or [`DataError::Io`]; the temporary file is then removed.
    pub fn finish(mut self) -> Result<()> {
        let writer = self.writer.take().expect("writer is present until finish");
        let file = writer.into_inner().map_err(|source| DataError::Write { path: self.path.clone(), source })?;
        file.sync_all().map_err(|e| DataError::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| DataError::io(&self.path, e))?;
        sync_dir(&self.path)
    }
}

impl Drop for AtomicParquetWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename.
///
/// # Errors
/// [`DataError::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| DataError::io(&tmp, e))?;
        f.sync_all().map_err(|e| DataError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.parquet");
        let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
        let mut w = AtomicParquetWriter::new(&path, batch.schema()).unwrap();
        w.write(&batch).unwrap();
        assert_eq!(names(dir.path()), vec![format!(".part-0.parquet.tmp-{}", std::process::id())]);
        w.finish().unwrap();
        assert_eq!(names(dir.path()), vec!["part-0.parquet"]);
        let r = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap();
        let rows: usize = r.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 3);

        let other = dir.path().join("part-1.parquet");
        let mut w = AtomicParquetWriter::new(&other, batch.schema()).unwrap();
        w.write(&batch).unwrap();
        drop(w);
        assert_eq!(names(dir.path()), vec!["part-0.parquet"]);
    }

    /// Float vectors are written plain (no compression, no dictionary), everything else zstd.
    #[test]
    fn float_vectors_plain_the_rest_zstd() {
        use arrow::array::{FixedSizeListArray, Float32Array, StringArray};
        use arrow::datatypes::{DataType, Field};
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.parquet");
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let values = Float32Array::from((0..3000).map(|v| (v % 7) as f32).collect::<Vec<_>>());
        let vectors = FixedSizeListArray::try_new(item, 3, Arc::new(values), None).unwrap();
        let tokens = StringArray::from((0..1000).map(|v| format!("t{}", v % 5)).collect::<Vec<_>>());
        let batch = RecordBatch::try_from_iter([("token", Arc::new(tokens) as _), ("hidden_L6", Arc::new(vectors) as _)]).unwrap();
        let mut w = AtomicParquetWriter::with_metadata(&path, batch.schema(), vec![("k".into(), "v".into())]).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let meta = SerializedFileReader::new(File::open(&path).unwrap()).unwrap().metadata().clone();
        let columns = meta.row_group(0).columns();
        let by_name = |name: &str| columns.iter().find(|c| c.column_path().string().starts_with(name)).unwrap();
        let (token, vector) = (by_name("token"), by_name("hidden_L6"));
        assert!(matches!(token.compression(), Compression::ZSTD(_)), "{:?}", token.compression());
        assert!(token.dictionary_page_offset().is_some(), "the strings keep their dictionary");
        assert_eq!(vector.compression(), Compression::UNCOMPRESSED);
        assert!(vector.dictionary_page_offset().is_none(), "no dictionary for the vectors");
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        assert!(kv.iter().any(|e| e.key == "k" && e.value.as_deref() == Some("v")));
    }

    #[test]
    fn atomic_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"[1]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[1]");
        assert_eq!(names(dir.path()), vec!["m.json"]);
        let e = write_atomic(&dir.path().join("no/such/dir.json"), b"x").unwrap_err();
        assert!(e.to_string().contains("dir.json"), "{e}");
    }
}
