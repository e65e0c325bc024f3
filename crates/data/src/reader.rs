//! Streaming a corpus (many Parquet files) as batches of carried columns plus decoded embeddings.
//!
//! Memory is bounded by a few batches whatever the corpus size: files are opened one after the
//! other, only the needed columns are decoded (projection), and nothing is ever read whole.
//! [`inspect`] validates the whole corpus from footers alone so that a bad file deep in a corpus
//! fails the run before hours of work, not after.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::reader::{ChunkReader, Length};

use crate::embedding::{decode_embeddings, embedding_field_dim, EXPECTED_EMBEDDING};
use crate::error::{DataError, Result};
use crate::identity::IdentityEncoder;
use crate::store::{ObjectFile, ObjectUrl};

/// What to read: the resolved files, the embedding column and the identity columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusSpec {
    /// Input files, in the order that defines positional identity (see [`crate::resolve_inputs`]).
    pub files: Vec<PathBuf>,
    /// The column holding one embedding vector per row.
    pub embedding_column: String,
    /// Columns whose values name a token (may be empty: identity is then file index and row).
    pub id_columns: Vec<String>,
    /// The rows measured (`--where`); `None`: every row. The sample's pool leaves the others out.
    pub filter: Option<crate::SharedFilter>,
}

/// What [`inspect`] learnt from the files' metadata.
#[derive(Debug, Clone)]
pub struct CorpusInfo {
    /// The Arrow schema of the first file; a field is nullable if it is in any file.
    pub schema: SchemaRef,
    /// Every non-embedding column, in the first file's order (id columns included).
    pub carried: Vec<String>,
    /// Rows of all files together.
    pub total_rows: u64,
    /// Rows of each file, in `spec.files` order.
    pub rows_per_file: Vec<u64>,
    /// The embedding dimension when the first file stores `FixedSizeList`; `None` for `List`.
    pub dim: Option<usize>,
}

/// A Parquet reader of `path`, a local file or an `s3://` object (read in ranges), for the
/// callers outside this crate that read Parquet of their own (`embed`'s texts).
///
/// # Errors
/// [`DataError::Io`] or the store's errors naming the path, [`DataError::NotParquet`].
pub fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<ParquetInput>> {
    let input = match ObjectUrl::of(path)? {
        Some(url) => ParquetInput::Object(ObjectFile::open(&url)?),
        None => ParquetInput::Local(File::open(path).map_err(|e| DataError::io(path, e))?),
    };
    ParquetRecordBatchReaderBuilder::try_new(input).map_err(|source| DataError::NotParquet { path: path.to_path_buf(), source })
}

/// An input file: local, or an object read in ranges ([`crate::store`]).
#[derive(Debug)]
pub enum ParquetInput {
    /// A file of this host.
    Local(File),
    /// An object of an S3-compatible store.
    Object(ObjectFile),
}

impl Length for ParquetInput {
    fn len(&self) -> u64 {
        match self {
            ParquetInput::Local(f) => f.len(),
            ParquetInput::Object(o) => o.len(),
        }
    }
}

impl ChunkReader for ParquetInput {
    type T = Box<dyn std::io::Read>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            ParquetInput::Local(f) => Box::new(f.get_read(start)?),
            ParquetInput::Object(o) => Box::new(o.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            ParquetInput::Local(f) => f.get_bytes(start, length),
            ParquetInput::Object(o) => o.get_bytes(start, length),
        }
    }
}

/// A projection of `builder`'s file onto the named top-level columns (all must exist).
pub(crate) fn projection(builder: &ParquetRecordBatchReaderBuilder<ParquetInput>, path: &Path, names: &[&str]) -> Result<ProjectionMask> {
    let schema = builder.schema();
    let mut indices = Vec::with_capacity(names.len());
    for name in names {
        indices.push(schema.index_of(name).map_err(|_| DataError::column_not_found(path, name, schema))?);
    }
    Ok(ProjectionMask::roots(builder.parquet_schema(), indices))
}

pub(crate) fn check_embedding_field(schema: &Schema, path: &Path, column: &str) -> Result<Option<usize>> {
    let field = schema.field_with_name(column).map_err(|_| DataError::column_not_found(path, column, schema))?;
    embedding_field_dim(field.data_type()).map_err(|found| DataError::ColumnType {
        path: path.to_path_buf(),
        column: column.to_string(),
        expected: EXPECTED_EMBEDDING.to_string(),
        found,
    })
}

fn list_files(files: &[PathBuf]) -> String {
    let mut names: Vec<String> = files.iter().take(5).map(|p| p.display().to_string()).collect();
    if files.len() > 5 {
        names.push(format!("and {} more", files.len() - 5));
    }
    names.join(", ")
}

/// Validates a corpus from Parquet metadata only (no data pages are read).
///
/// # Errors
/// [`DataError::NotParquet`]/[`DataError::Io`] for an unreadable file, [`DataError::ColumnNotFound`]
/// for a missing embedding or id column, [`DataError::ColumnType`] for an unsupported embedding or
/// id type, [`DataError::SchemaMismatch`] naming the first file whose columns differ from the first
/// file's, [`DataError::DimensionMismatch`] when fixed-size embedding dimensions differ between
/// files, [`DataError::EmptyInput`] when no file holds a row, and [`DataError::InvalidArgument`]
/// when there are no files or an id column is the embedding column.
pub fn inspect(spec: &CorpusSpec) -> Result<CorpusInfo> {
    let Some(first) = spec.files.first() else {
        return Err(DataError::InvalidArgument("no input files".into()));
    };
    if spec.id_columns.contains(&spec.embedding_column) {
        return Err(DataError::InvalidArgument(format!(
            "the embedding column \"{}\" cannot be an id column",
            spec.embedding_column
        )));
    }
    let mut schema: Option<Schema> = None;
    let mut dim = None;
    let mut rows_per_file = Vec::with_capacity(spec.files.len());
    for path in &spec.files {
        let builder = open_parquet(path)?;
        let file_schema = builder.schema().clone();
        rows_per_file.push(builder.metadata().file_metadata().num_rows().max(0) as u64);
        let file_dim = check_embedding_field(&file_schema, path, &spec.embedding_column)?;
        match &mut schema {
            None => {
                IdentityEncoder::new(&file_schema, &spec.id_columns, path)?;
                dim = file_dim;
                schema = Some(file_schema.as_ref().clone());
            }
            Some(first_schema) => {
                compare_schemas(first_schema, &file_schema, path, first, &spec.embedding_column)?;
                if let (Some(d0), Some(d)) = (dim, file_dim) {
                    if d0 != d {
                        return Err(DataError::DimensionMismatch {
                            path: path.clone(),
                            column: spec.embedding_column.clone(),
                            row: 0,
                            found: d,
                            expected: d0,
                            origin: format!(" in {}", first.display()),
                        });
                    }
                }
                // A field is nullable in the corpus if it is nullable in any file.
                let fields: Vec<Field> = first_schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let other = file_schema.field_with_name(f.name()).map(|o| o.is_nullable()).unwrap_or(false);
                        f.as_ref().clone().with_nullable(f.is_nullable() || other)
                    })
                    .collect();
                *first_schema = Schema::new_with_metadata(fields, first_schema.metadata().clone());
            }
        }
    }
    let schema = Arc::new(schema.expect("at least one file"));
    let total_rows = rows_per_file.iter().sum();
    if total_rows == 0 {
        return Err(DataError::EmptyInput { files: list_files(&spec.files) });
    }
    let carried = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| *n != spec.embedding_column)
        .collect();
    Ok(CorpusInfo { schema, carried, total_rows, rows_per_file, dim })
}

fn compare_schemas(first: &Schema, other: &Schema, path: &Path, first_path: &Path, embedding: &str) -> Result<()> {
    let mismatch = |message: String| DataError::SchemaMismatch { path: path.to_path_buf(), first: first_path.to_path_buf(), message };
    for f in first.fields() {
        let Ok(o) = other.field_with_name(f.name()) else {
            return Err(mismatch(format!("column \"{}\" is missing", f.name())));
        };
        // The embedding may be stored differently per file (checked on its own); other columns must
        // agree up to nested field names, which differ between writers.
        if f.name() != embedding && !f.data_type().equals_datatype(o.data_type()) {
            return Err(mismatch(format!("column \"{}\" is {} here, {} there", f.name(), o.data_type(), f.data_type())));
        }
    }
    if let Some(extra) = other.fields().iter().find(|o| first.field_with_name(o.name()).is_err()) {
        return Err(mismatch(format!("extra column \"{}\"", extra.name())));
    }
    Ok(())
}

/// One batch of a corpus.
#[derive(Debug, Clone)]
pub struct CorpusBatch {
    /// Index of the file in `spec.files`.
    pub file_index: usize,
    /// Row index within the file of this batch's first row.
    pub first_row: u64,
    /// The requested non-embedding columns, typed as in [`CorpusInfo::schema`] (row count set even
    /// when no column is requested).
    pub columns: RecordBatch,
    /// Row-major `rows * dim` embedding values, when requested.
    pub embeddings: Option<Vec<f32>>,
    /// Embedding dimension (`CorpusInfo::dim` or 0 when embeddings are not read and unknown).
    pub dim: usize,
}

/// A piece of one corpus file that can be read without the rest: whole row groups (or the whole
/// file). Rows keep their numbering within the file, so identities and part files do not depend
/// on how a corpus was cut.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorpusSlice {
    /// Index of the file in `spec.files`.
    pub file_index: usize,
    /// Row groups `start..end` of the file; `None` for the whole file.
    pub row_groups: Option<std::ops::Range<usize>>,
    /// The file row of the slice's first row.
    pub first_row: u64,
    /// Rows in the slice.
    pub rows: u64,
}

fn whole_files(rows_per_file: &[u64]) -> Vec<CorpusSlice> {
    rows_per_file.iter().enumerate().map(|(file_index, &rows)| CorpusSlice { file_index, row_groups: None, first_row: 0, rows }).collect()
}

/// Cuts a corpus into slices of about `target_rows` rows (whole row groups; a row group larger
/// than the target is a slice of its own), in corpus order, for work spread over many machines.
/// Reads footers only.
///
/// # Errors
/// [`DataError::NotParquet`]/[`DataError::Io`] for an unreadable file.
pub fn slice_corpus(spec: &CorpusSpec, target_rows: u64) -> Result<Vec<CorpusSlice>> {
    let target = target_rows.max(1);
    let mut out = Vec::new();
    for (file_index, path) in spec.files.iter().enumerate() {
        let builder = open_parquet(path)?;
        let groups: Vec<u64> = builder.metadata().row_groups().iter().map(|g| g.num_rows().max(0) as u64).collect();
        let (mut start, mut first_row, mut rows, mut row) = (0, 0, 0, 0);
        for (g, n) in groups.iter().enumerate() {
            if rows > 0 && rows + n > target {
                out.push(CorpusSlice { file_index, row_groups: Some(start..g), first_row, rows });
                (start, first_row, rows) = (g, row, 0);
            }
            rows += n;
            row += n;
        }
        if rows > 0 {
            out.push(CorpusSlice { file_index, row_groups: Some(start..groups.len()), first_row, rows });
        }
    }
    Ok(out)
}

/// Streams a corpus file after file; an iterator of [`CorpusBatch`]es that stops after the first
/// error.
pub struct CorpusReader {
    files: Vec<PathBuf>,
    embedding_column: String,
    columns: Vec<String>,
    out_schema: SchemaRef,
    with_embeddings: bool,
    batch_rows: usize,
    /// What to read, in order: whole files unless [`Self::with_slices`] chose pieces.
    slices: Vec<CorpusSlice>,
    slice_index: usize,
    current: Option<ParquetRecordBatchReader>,
    row_in_file: u64,
    dim: Option<usize>,
    /// The file that established `dim`, for error messages.
    dim_file: Option<usize>,
    done: bool,
}

impl CorpusReader {
    /// Prepares to stream `spec`'s files in batches of at most `batch_rows` rows.
    ///
    /// `columns` selects non-embedding columns (in the given order); `None` means every carried
    /// column. With `with_embeddings` false the embedding column is not decoded at all; with no
    /// columns and no embeddings, batches carry only row counts and no file data is read.
    ///
    /// # Errors
    /// [`DataError::ColumnNotFound`] for a requested column that is not carried,
    /// [`DataError::InvalidArgument`] for `batch_rows == 0`.
    pub fn new(spec: &CorpusSpec, info: &CorpusInfo, batch_rows: usize, with_embeddings: bool, columns: Option<Vec<String>>) -> Result<Self> {
        if batch_rows == 0 {
            return Err(DataError::InvalidArgument("batch size must be at least 1 row".into()));
        }
        let columns = columns.unwrap_or_else(|| info.carried.clone());
        let mut fields = Vec::with_capacity(columns.len());
        for name in &columns {
            if !info.carried.contains(name) {
                return Err(DataError::column_not_found(&spec.files[0], name, &info.schema));
            }
            fields.push(info.schema.field_with_name(name).expect("carried columns are in the schema").clone());
        }
        Ok(CorpusReader {
            files: spec.files.clone(),
            embedding_column: spec.embedding_column.clone(),
            columns,
            out_schema: Arc::new(Schema::new(fields)),
            with_embeddings,
            batch_rows,
            slices: whole_files(&info.rows_per_file),
            slice_index: 0,
            current: None,
            row_in_file: 0,
            dim: info.dim,
            dim_file: info.dim.map(|_| 0),
            done: false,
        })
    }

    /// Reads only `slices` (in their order) instead of every file whole: a shard of the corpus.
    /// Rows keep their file's numbering.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] for a slice of a file the corpus does not have.
    pub fn with_slices(mut self, slices: Vec<CorpusSlice>) -> Result<Self> {
        if let Some(s) = slices.iter().find(|s| s.file_index >= self.files.len()) {
            return Err(DataError::InvalidArgument(format!("slice of file {} in a corpus of {} files", s.file_index, self.files.len())));
        }
        self.slices = slices;
        self.slice_index = 0;
        self.row_in_file = self.slices.first().map_or(0, |s| s.first_row);
        Ok(self)
    }

    /// The schema of [`CorpusBatch::columns`].
    pub fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// Moves on to the next slice.
    fn advance(&mut self) {
        self.current = None;
        self.slice_index += 1;
        self.row_in_file = self.slices.get(self.slice_index).map_or(0, |s| s.first_row);
    }

    fn open(&self, slice: &CorpusSlice) -> Result<ParquetRecordBatchReader> {
        let path = &self.files[slice.file_index];
        let mut builder = open_parquet(path)?;
        if let Some(groups) = &slice.row_groups {
            let available = builder.metadata().num_row_groups();
            if groups.end > available {
                return Err(DataError::InvalidArgument(format!(
                    "{}: row groups {}..{} asked for, the file has {available} (was it rewritten since the run was planned?)",
                    path.display(),
                    groups.start,
                    groups.end
                )));
            }
            builder = builder.with_row_groups(groups.clone().collect());
        }
        let mut names: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        if self.with_embeddings {
            names.push(&self.embedding_column);
        }
        let mask = projection(&builder, path, &names)?;
        builder
            .with_projection(mask)
            .with_batch_size(self.batch_rows)
            .build()
            .map_err(|source| DataError::Parquet { path: path.clone(), source })
    }

    fn next_batch(&mut self) -> Option<Result<CorpusBatch>> {
        loop {
            let slice = self.slices.get(self.slice_index)?.clone();
            let index = slice.file_index;
            if self.columns.is_empty() && !self.with_embeddings {
                // Nothing to decode: row counts come from the footer.
                let end = slice.first_row + slice.rows;
                if self.row_in_file >= end {
                    self.advance();
                    continue;
                }
                let n = (end - self.row_in_file).min(self.batch_rows as u64) as usize;
                let batch = RecordBatch::try_new_with_options(self.out_schema.clone(), vec![], &RecordBatchOptions::new().with_row_count(Some(n)))
                    .expect("an empty batch with a row count is valid");
                let first_row = self.row_in_file;
                self.row_in_file += n as u64;
                return Some(Ok(CorpusBatch { file_index: index, first_row, columns: batch, embeddings: None, dim: self.dim.unwrap_or(0) }));
            }
            if self.current.is_none() {
                match self.open(&slice) {
                    Ok(r) => self.current = Some(r),
                    Err(e) => return Some(Err(e)),
                }
            }
            let reader = self.current.as_mut().expect("opened above");
            match reader.next() {
                None => self.advance(),
                Some(Err(e)) => return Some(Err(DataError::arrow(&self.files[index], e))),
                Some(Ok(batch)) => {
                    let first_row = self.row_in_file;
                    self.row_in_file += batch.num_rows() as u64;
                    return Some(self.convert(index, first_row, &batch));
                }
            }
        }
    }

    fn convert(&mut self, index: usize, first_row: u64, batch: &RecordBatch) -> Result<CorpusBatch> {
        let path = &self.files[index];
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (name, field) in self.columns.iter().zip(self.out_schema.fields()) {
            let col = batch.column_by_name(name).ok_or_else(|| DataError::column_not_found(path, name, &batch.schema()))?;
            if col.data_type() == field.data_type() {
                cols.push(col.clone());
            } else {
                cols.push(arrow::compute::cast(col, field.data_type()).map_err(|e| DataError::arrow(path, e))?);
            }
        }
        let columns = RecordBatch::try_new_with_options(
            self.out_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| DataError::arrow(path, e))?;
        let mut embeddings = None;
        if self.with_embeddings {
            let col = batch
                .column_by_name(&self.embedding_column)
                .ok_or_else(|| DataError::column_not_found(path, &self.embedding_column, &batch.schema()))?;
            let (values, dim) = match decode_embeddings(col.as_ref(), path, &self.embedding_column, first_row, self.dim) {
                Ok(v) => v,
                Err(DataError::DimensionMismatch { path, column, row, found, expected, origin }) => {
                    let origin = match self.dim_file {
                        Some(f) if f != index => format!(" in {}", self.files[f].display()),
                        Some(_) if origin == " (expected)" => " (earlier rows of this file)".to_string(),
                        _ => origin,
                    };
                    return Err(DataError::DimensionMismatch { path, column, row, found, expected, origin });
                }
                Err(e) => return Err(e),
            };
            if self.dim.is_none() && batch.num_rows() > 0 {
                self.dim = Some(dim);
                self.dim_file = Some(index);
            }
            embeddings = Some(values);
        }
        Ok(CorpusBatch { file_index: index, first_row, columns, embeddings, dim: self.dim.unwrap_or(0) })
    }
}

impl Iterator for CorpusReader {
    type Item = Result<CorpusBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_batch();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
            self.current = None;
        }
        item
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
