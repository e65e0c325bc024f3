//! Sweeps: many lidscope runs described by one TOML file, run incrementally.
//!
//! A training team measures every layer of every checkpoint of several models, and new
//! checkpoints keep arriving. A sweep spec names them all with path patterns whose named
//! captures (`emb/{model}/step-{step}/layer-{layer}.parquet`) become the runs' partition keys, so
//! that the results directory is one table. The modules follow a sweep's life:
//!
//! - [`spec`]: the file, checked with errors that name its line or key;
//! - [`pattern`]: a path pattern as a glob to list and a regex to read captures back;
//! - [`plan`]: which runs exist and, against their committed manifests, which are done;
//! - [`samples`]: the reference identities shared by the runs of a dataset, so that all
//!   checkpoints are measured on the same tokens;
//! - [`execute`]: running what is missing through a [`execute::Runner`] (local or cluster).
//!
//! The binary only wires flags and signals; `lidscope report` reads the results.

pub mod error;
pub mod execute;
pub mod pattern;
pub mod plan;
pub mod samples;
pub mod spec;
pub mod watch;

pub use error::{Result, SweepError};
pub use execute::{execute, LocalRunner, Observer, Outcome, Runner};
pub use plan::{plan, Plan, PlannedRun, Status};
pub use spec::Spec;
pub use watch::{watch, Round};
