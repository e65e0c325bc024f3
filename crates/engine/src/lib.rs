//! Runs lidscope jobs: streams a corpus through the kernel and writes result tables.
//!
//! This is the one place where Arrow data becomes `&[f32]` rows for the kernel and kernel results
//! become Arrow columns again. [`run`] is the whole `lidscope run` job: reference, neighbourhoods,
//! local estimates, global estimate, and an atomic commit of the result directory.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rustdoc::broken_intra_doc_links)]

mod commit;
mod error;
mod progress;
mod run;
mod scan;
pub mod sql;
pub mod udf;

pub use error::{EngineError, Result};
pub use progress::{NoProgress, Progress};
pub use run::{run, ReferenceSource, RunConfig, RunSummary, OUTPUT_COLUMNS};
