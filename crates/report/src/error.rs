//! Why a report could not be made. Every variant names the file or directory involved, so that a
//! command-line message alone says what to fix.

use std::path::PathBuf;

/// A report failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The input is not a result directory, or holds nothing to report on.
    #[error("{path}: {reason}")]
    Input {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The result tables could not be read or queried.
    #[error("reading {path}: {message}")]
    Read {
        /// The result directory.
        path: PathBuf,
        /// The engine's or DataFusion's message.
        message: String,
    },
    /// `--x KEY` names no partition key, or one whose values are not numbers.
    #[error("--x {key}: {reason}")]
    Axis {
        /// The key asked for.
        key: String,
        /// Why it cannot be the x axis.
        reason: String,
    },
    /// An output file could not be written.
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS, Arrow or Parquet message.
        message: String,
    },
    /// A figure could not be drawn (a bug rather than bad data: the inputs are checked first).
    #[error("drawing {figure}: {message}")]
    Draw {
        /// Which figure.
        figure: String,
        /// plotters' message.
        message: String,
    },
}

/// `Result` with [`ReportError`].
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

pub(crate) fn write_error(path: &std::path::Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Write { path: path.to_path_buf(), message: e.to_string() }
}
