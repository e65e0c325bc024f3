//! Runs lidscope jobs on DataFusion: the `lid()` function, corpora and results as tables, and the
//! `lidscope run` job as a plan over them.
//!
//! This is the one place where Arrow data becomes `&[f32]` rows for the kernel and kernel results
//! become Arrow columns again, inside [`udf::LidUdf`]. [`run`] is the whole `lidscope run` job:
//! the reference, a DataFusion plan that calls `lid()` on every corpus batch, the global estimate,
//! and an atomic commit of the result directory. [`sql`] registers result directories, corpora
//! and references as tables and views for `lidscope sql`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rustdoc::broken_intra_doc_links)]

mod error;
mod filter;
mod progress;
mod run;
mod scan;
pub mod sql;
pub mod udf;

pub use filter::row_filter;
pub use error::{carried_message, Carried, EngineError, Result};
pub use progress::{NoProgress, Progress};
pub use scan::{CorpusExec, CorpusScan, CorpusTable};
pub use run::{identities_source, reference_by_identities, run, CommittedPart, ReferenceSource, RunConfig, RunSummary, ShardedRun, ValidRun, OUTPUT_COLUMNS};
