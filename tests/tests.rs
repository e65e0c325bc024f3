//! lidscope's one integration-test binary: golden parity with the reference implementation
//! (through the kernel API and through the CLI), the CLI's contracts, bad-input handling, process
//! kills and concurrent runs, SQL, and the cluster (real coordinator and worker processes).

mod cli;
mod cluster;
mod embed;
mod errors;
mod estimators;
mod faults;
mod filter;
mod golden;
mod grokking;
mod report;
mod schema;
mod sql;
mod store;
mod sweep;
mod util;
