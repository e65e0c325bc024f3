//! The engine's error type: data and kernel errors with the context the engine knows.

use std::path::PathBuf;

use lidscope_data::DataError;
use lidscope_kernel::KernelError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Bad or unreadable input, or a failed write (the message names file and column).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The kernel refused the data; `context` says which file/column/batch.
    #[error("{context}: {source}")]
    Kernel {
        /// Where it happened.
        context: String,
        /// What the kernel said.
        #[source]
        source: KernelError,
    },
    /// An invalid combination of parameters or inputs.
    #[error("{0}")]
    Invalid(String),
    /// The output directory already holds a complete result.
    #[error("{0} already holds a result (manifest.json); pass --overwrite to replace it")]
    OutputExists(PathBuf),
    /// A file-system operation on the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub(crate) fn kernel(context: impl Into<String>, source: KernelError) -> Self {
        EngineError::Kernel { context: context.into(), source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io { path: path.into(), source }
    }
}

/// Engine result alias.
pub type Result<T> = std::result::Result<T, EngineError>;
