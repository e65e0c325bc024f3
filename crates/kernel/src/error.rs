//! The kernel's one error type.

/// Why the kernel refused an input.
///
/// The kernel never sees files, so these name shapes and row numbers; the caller adds the path and
/// column it knows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A buffer's length is not `rows * dim`, or two matrices disagree on `dim`.
    #[error("shape mismatch: expected {expected}, got {got}")]
    Shape {
        /// What the call needed.
        expected: String,
        /// What it was given.
        got: String,
    },
    /// Fewer reference rows than a neighbourhood needs.
    #[error("too few reference rows: {n} rows cannot give {k} neighbours to every query (need at least {needed})")]
    TooFewPoints {
        /// Reference rows available.
        n: usize,
        /// Neighbours asked for.
        k: usize,
        /// Rows the request needs (k, plus one when queries may exclude themselves).
        needed: usize,
    },
    /// A parameter outside its domain (k < 3, discard fraction outside [0, 1), ...).
    #[error("invalid parameter: {0}")]
    Parameter(String),
    /// A value that is NaN or infinite.
    #[error("row {row}: non-finite value at element {element}")]
    NonFinite {
        /// Row index within the matrix.
        row: usize,
        /// Element index within the row.
        element: usize,
    },
}

/// Kernel result alias.
pub type Result<T> = std::result::Result<T, KernelError>;
