//! The sweep's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SweepError>;

/// What can go wrong before or while a sweep runs. Errors about the spec name the spec file and,
/// when known, the line.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The spec is malformed or asks for something that cannot work.
    #[error("{}{}: {message}", .path.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// 1-based line of the offending key, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A file system error on `path`.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading or writing lidscope's files.
    #[error(transparent)]
    Data(#[from] lidscope_data::DataError),
    /// A run's own error.
    #[error(transparent)]
    Engine(#[from] lidscope_engine::EngineError),
}

impl SweepError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SweepError {
        let path = path.into();
        move |source| SweepError::Io { path, source }
    }
}
