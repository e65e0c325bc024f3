//! lidscope's one integration-test binary: golden parity with the reference implementation
//! (through the kernel API and through the CLI), the CLI's contracts, bad-input handling, process
//! kills and concurrent runs, and SQL.

mod cli;
mod errors;
mod faults;
mod golden;
mod sql;
mod util;
