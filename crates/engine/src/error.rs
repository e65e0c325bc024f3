//! The engine's error type: data and kernel errors with the context the engine knows, and
//! DataFusion's errors unwrapped back into lidscope's own where they started as ours.
//!
//! Callers branch on the kind: a [`EngineError::Usage`] is the caller's mistake (the CLI exits 2,
//! a job API answers `INVALID_ARGUMENT`), [`EngineError::is_transient`] says whether trying again
//! may help (a file system hiccup, not a bad vector).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::DataFusionError;
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
    /// Parameters that cannot work, whatever the data (a malformed partition, a zero batch size).
    #[error("{0}")]
    Usage(String),
    /// Inputs that cannot be measured together (a reference of another dimension, too few
    /// reference rows for `k`, a corpus column that collides with an output column).
    #[error("{0}")]
    Invalid(String),
    /// DataFusion failed for a reason of its own (planning, SQL, resources); `context` says what
    /// lidscope was doing.
    #[error("{context}: {source}")]
    Query {
        /// What was being done.
        context: String,
        /// DataFusion's error.
        #[source]
        source: DataFusionError,
    },
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

    /// A DataFusion error as lidscope's: ours unwrapped (with their messages intact), DataFusion's
    /// own kept with `context`.
    pub fn query(context: impl Into<String>, e: DataFusionError) -> Self {
        match unwrap_ours(e) {
            Ok(ours) => ours,
            Err(e) => EngineError::Query { context: context.into(), source: e },
        }
    }

    /// Whether the same call may succeed when tried again: I/O failures (a file system that
    /// hiccups, a full disk freed), not bad input or bad parameters.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Io { .. } | EngineError::Data(DataError::Io { .. }) => true,
            EngineError::Query { source, .. } => {
                matches!(source.find_root(), DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) | DataFusionError::ResourcesExhausted(_))
            }
            _ => false,
        }
    }
}

/// The engine error inside a DataFusion error, if it started as one (or as a data error);
/// otherwise the DataFusion error itself.
fn unwrap_ours(e: DataFusionError) -> std::result::Result<EngineError, DataFusionError> {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<Carried>() {
            Ok(c) => Ok(c.0),
            Err(inner) => match inner.downcast::<EngineError>() {
                Ok(e) => Ok(*e),
                Err(inner) => match inner.downcast::<DataError>() {
                    Ok(e) => Ok(EngineError::Data(*e)),
                    Err(inner) => Err(DataFusionError::External(inner)),
                },
            },
        },
        DataFusionError::Context(c, inner) => unwrap_ours(*inner).map_err(|e| DataFusionError::Context(c, Box::new(e))),
        DataFusionError::Shared(inner) => match Arc::try_unwrap(inner) {
            Ok(e) => unwrap_ours(e),
            Err(shared) => Err(DataFusionError::Shared(shared)),
        },
        other => Err(other),
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        EngineError::query("query", e)
    }
}

/// An engine error travelling inside a DataFusion error.
///
/// Its `Debug` is its message between [`CARRIED_START`] and [`CARRIED_END`]: a Ballista worker
/// reports a failed task with `{:?}` of the error, and the coordinator then finds lidscope's own
/// sentence (file, column, row) between the marks instead of a dump of nested structs.
pub struct Carried(pub EngineError);

/// Opens a [`Carried`] error's message in its `Debug` form.
pub const CARRIED_START: &str = "<<lidscope: ";
/// Closes it.
pub const CARRIED_END: &str = " :lidscope>>";

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{CARRIED_START}{}{CARRIED_END}", self.0)
    }
}

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Carried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// lidscope's message in a failure report that holds a [`Carried`] error's `Debug` form.
pub fn carried_message(report: &str) -> Option<&str> {
    let start = report.find(CARRIED_START)? + CARRIED_START.len();
    let end = report.rfind(CARRIED_END)?;
    (end >= start).then(|| &report[start..end])
}

impl From<EngineError> for DataFusionError {
    fn from(e: EngineError) -> Self {
        DataFusionError::External(Box::new(Carried(e)))
    }
}

/// Engine result alias.
pub type Result<T> = std::result::Result<T, EngineError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_errors_come_back_out_of_datafusion_with_their_messages() {
        let data = DataError::InvalidArgument("bad".into());
        let wrapped = DataFusionError::Context("scan".into(), Box::new(DataFusionError::External(Box::new(data))));
        let e = EngineError::from(wrapped);
        assert!(matches!(e, EngineError::Data(DataError::InvalidArgument(_))), "{e:?}");
        assert_eq!(e.to_string(), "invalid argument: bad");

        let shared = DataFusionError::Shared(Arc::new(DataFusionError::External(Box::new(EngineError::Usage("k".into())))));
        // A shared error cannot be taken apart while others hold it: it stays DataFusion's.
        let other_holder = match &shared {
            DataFusionError::Shared(a) => a.clone(),
            _ => unreachable!(),
        };
        assert!(matches!(EngineError::from(shared), EngineError::Query { .. }));
        drop(other_holder);

        // Carried across a process boundary as Ballista reports it, with `{:?}`.
        let e = DataFusionError::from(EngineError::Data(DataError::InvalidArgument("x \"y\" (z)".into())));
        let report = format!("Task failed due to runtime execution error: {:?}", Some(e));
        assert_eq!(carried_message(&report), Some("invalid argument: x \"y\" (z)"));
        assert_eq!(carried_message("no marks"), None);

        let plan = EngineError::query("--table t", DataFusionError::Plan("no such table".into()));
        assert_eq!(plan.to_string(), "--table t: Error during planning: no such table");
        assert!(!plan.is_transient());
        let io = EngineError::query("q", DataFusionError::IoError(std::io::Error::other("disk")));
        assert!(io.is_transient());
        assert!(!EngineError::Usage("x".into()).is_transient());
    }
}
