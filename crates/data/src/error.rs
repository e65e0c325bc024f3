//! The one error type of `lidscope-data`.
//!
//! Every error about input names the file, the column and (when known) the zero-based row within
//! that file, because the person reading it has a corpus of hundreds of files and needs to find the
//! one bad vector without a debugger.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result alias used throughout `lidscope-data`.
pub type Result<T> = std::result::Result<T, DataError>;

/// What went wrong while resolving, reading or writing lidscope's Parquet and JSON files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An operating-system error on `path`.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An object store refused or failed a request (credentials, a missing bucket, the network).
    #[error("{url}: {message}")]
    Store {
        /// The object or prefix involved, `s3://bucket/key`.
        url: String,
        /// What went wrong, and what to check.
        message: String,
    },
    /// An input pattern names a path that does not exist.
    #[error("{}: no such file or directory", .path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A glob or directory matched no Parquet files.
    #[error("no Parquet files match \"{pattern}\"")]
    NoMatch {
        /// The pattern as given.
        pattern: String,
    },
    /// A glob pattern is malformed.
    #[error("invalid input pattern \"{pattern}\": {message}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What the glob parser said.
        message: String,
    },
    /// The file exists but its footer or metadata cannot be read as Parquet.
    #[error("{}: not a readable Parquet file: {source}", .path.display())]
    NotParquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// Decoding data of a file failed (corrupt page, unsupported encoding, ...).
    #[error("reading {}: {source}", .path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow computation (cast, row encoding, batch assembly) failed for a file.
    #[error("reading {}: {source}", .path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The Arrow error.
        source: arrow::error::ArrowError,
    },
    /// Writing a Parquet file failed.
    #[error("writing {}: {source}", .path.display())]
    Write {
        /// The file being written (its final name).
        path: PathBuf,
        /// The Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// A required column is missing.
    #[error("reading {}: column \"{column}\" not found (columns: {available})", .path.display())]
    ColumnNotFound {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns the file does have, comma separated.
        available: String,
    },
    /// A column has a type lidscope cannot use.
    #[error("reading {}: column \"{column}\": expected {expected}, found {found}", .path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What lidscope accepts.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A file's columns differ from the first file's.
    #[error("reading {}: columns differ from {}: {message}", .path.display(), .first.display())]
    SchemaMismatch {
        /// The file that differs.
        path: PathBuf,
        /// The first input file, which sets the schema.
        first: PathBuf,
        /// What differs.
        message: String,
    },
    /// A value is unusable: null embedding, null element, empty list, null identity, ...
    #[error("reading {}: column \"{column}\"{}: {message}", .path.display(), RowSuffix(*.row))]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Zero-based row within the file, when known.
        row: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// An embedding element is NaN or infinite.
    #[error("reading {}: column \"{column}\": row {row}: {value} at element {element}", .path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The embedding column.
        column: String,
        /// Zero-based row within the file.
        row: u64,
        /// Zero-based index of the element within the vector.
        element: usize,
        /// `NaN`, `inf` or `-inf`.
        value: String,
    },
    /// An embedding's length differs from the dimension established earlier.
    #[error("reading {}: column \"{column}\": row {row}: dimension {found} differs from {expected}{origin}", .path.display())]
    DimensionMismatch {
        /// The file.
        path: PathBuf,
        /// The embedding column.
        column: String,
        /// Zero-based row within the file.
        row: u64,
        /// This row's length.
        found: usize,
        /// The dimension established earlier.
        expected: usize,
        /// Where `expected` came from, with a leading space, e.g. ` in a.parquet`.
        origin: String,
    },
    /// A file holds no rows where rows are required (a reference file).
    #[error("reading {}: file holds no rows", .path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// All input files together hold no rows.
    #[error("empty input: no rows in {files}")]
    EmptyInput {
        /// The files, comma separated.
        files: String,
    },
    /// Two rows share one identity, so "the same token" would be ambiguous.
    #[error("duplicate identity {identity}: {} row {first_row} and {} row {second_row}", .first_path.display(), .second_path.display())]
    DuplicateIdentity {
        /// The identity values, e.g. `(seq_id=3, position=7)`.
        identity: String,
        /// File of the first row.
        first_path: PathBuf,
        /// Zero-based row of the first row within its file.
        first_row: u64,
        /// File of the second row.
        second_path: PathBuf,
        /// Zero-based row of the second row within its file.
        second_row: u64,
    },
    /// A JSON file (manifest) could not be parsed or produced.
    #[error("{}: invalid JSON: {source}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The output directory already holds a complete result.
    #[error("{} already holds a result ({manifest}); pass --overwrite to replace it", .dir.display())]
    OutputExists {
        /// The directory of the result's manifest.
        dir: PathBuf,
        /// The manifest's file name.
        manifest: String,
    },
    /// Runs of one result directory carry a column in types that no one type holds without loss
    /// (see [`crate::table_schema`]), so they cannot be read as one table.
    #[error("{}: {message}", .dir.display())]
    IncompatibleRuns {
        /// The result directory.
        dir: PathBuf,
        /// The column, both types, and the runs and files that hold them.
        message: String,
    },
    /// A caller-supplied setting is unusable (e.g. a reference size of zero).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Renders `: row N` when the row is known, nothing otherwise.
struct RowSuffix(Option<u64>);

impl fmt::Display for RowSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(row) => write!(f, ": row {row}"),
            None => Ok(()),
        }
    }
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn invalid(path: &Path, column: &str, row: Option<u64>, message: impl Into<String>) -> Self {
        DataError::InvalidValue {
            path: path.to_path_buf(),
            column: column.to_string(),
            row,
            message: message.into(),
        }
    }

    pub(crate) fn arrow(path: &Path, source: arrow::error::ArrowError) -> Self {
        DataError::Arrow { path: path.to_path_buf(), source }
    }

    pub(crate) fn column_not_found(path: &Path, column: &str, schema: &arrow::datatypes::Schema) -> Self {
        let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        DataError::ColumnNotFound {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: available.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_column_and_row() {
        let e = DataError::NonFinite {
            path: "corpus/part-0007.parquet".into(),
            column: "emb".into(),
            row: 12,
            element: 5,
            value: "NaN".into(),
        };
        assert_eq!(e.to_string(), r#"reading corpus/part-0007.parquet: column "emb": row 12: NaN at element 5"#);
        let e = DataError::invalid(Path::new("a.parquet"), "emb", Some(3), "null embedding");
        assert_eq!(e.to_string(), r#"reading a.parquet: column "emb": row 3: null embedding"#);
        let e = DataError::invalid(Path::new("a.parquet"), "emb", None, "bad");
        assert_eq!(e.to_string(), r#"reading a.parquet: column "emb": bad"#);
        let e = DataError::DimensionMismatch {
            path: "b.parquet".into(),
            column: "emb".into(),
            row: 0,
            found: 384,
            expected: 768,
            origin: " in a.parquet".into(),
        };
        assert_eq!(e.to_string(), r#"reading b.parquet: column "emb": row 0: dimension 384 differs from 768 in a.parquet"#);
    }
}
