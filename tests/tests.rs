//! lidscope's one integration-test binary: golden parity with the reference implementation
//! (through the kernel API and through the CLI), the CLI's contracts, and bad-input handling.

mod cli;
mod errors;
mod golden;
mod sql;
mod util;
