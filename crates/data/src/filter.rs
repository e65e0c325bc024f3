//! Which corpus rows a run measures: a predicate over the corpus's columns (`run --where`).
//!
//! The data layer does not parse SQL (that is DataFusion's job, in the engine); it only asks a
//! [`RowFilter`] which rows of a batch to keep, so that the sample's pool is drawn from the rows
//! a run measures and from no others.

use std::fmt;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};

/// A row predicate. Rows it rejects are neither measured nor sampled; a null verdict rejects, as
/// SQL's `WHERE` does.
pub trait RowFilter: Send + Sync {
    /// The predicate as the user wrote it: what the manifest records, and what tells two filters
    /// apart.
    fn sql(&self) -> &str;
    /// The corpus columns it reads (never the embedding column).
    fn columns(&self) -> &[String];
    /// The verdict on each row of `batch`, which holds at least [`columns`](Self::columns).
    ///
    /// # Errors
    /// A message saying why the predicate could not be evaluated on this batch.
    fn keep(&self, batch: &RecordBatch) -> Result<BooleanArray, String>;
}

/// A [`RowFilter`] shared by the readers of a corpus; equal when their predicates are.
#[derive(Clone)]
pub struct SharedFilter(pub Arc<dyn RowFilter>);

impl SharedFilter {
    /// The predicate's text.
    pub fn sql(&self) -> &str {
        self.0.sql()
    }
}

impl fmt::Debug for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedFilter({:?})", self.0.sql())
    }
}

impl PartialEq for SharedFilter {
    fn eq(&self, other: &Self) -> bool {
        self.0.sql() == other.0.sql()
    }
}

impl Eq for SharedFilter {}
