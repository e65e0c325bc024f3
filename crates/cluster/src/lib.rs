//! lidscope on many machines, on Apache DataFusion Ballista.
//!
//! A **coordinator** embeds a Ballista scheduler (pull mode) with `lid()` and lidscope's plan
//! nodes, and serves lidscope's job API ([`api`]) on the same port, behind a bearer token (and,
//! when asked, mutual TLS on every port: [`tls`]). It
//! cuts a run into shards (row-group ranges of the corpus), draws the reference sample from the
//! shards' candidates, runs each shard as a Ballista job, retries failed shards, and commits each
//! finished shard into the run's resumable staging directory, so that a restarted coordinator
//! goes on where the last one stopped. **Workers** are Ballista executors with the same
//! functions and codec, polling the coordinator for tasks. The **client** submits a run and
//! follows its events.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod certs;
pub mod client;
mod codec;
pub mod coordinator;
mod error;
mod pool;
mod scheduler;
pub mod tls;
pub mod worker;

pub use codec::LidscopeCodec;
pub use error::{ClusterError, Result};
pub use scheduler::{JobError, Liveness, Scheduler};
