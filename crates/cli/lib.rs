//! The `lidscope` command line as a library: its argument parser and its jobs.
//!
//! The binary (`main.rs`) is a thin shell over [`dispatch`]; the Python package calls the same
//! jobs ([`run_cmd::run`], [`sql_cmd::query`], [`embed_cmd::embed`]) with arguments parsed by the
//! same [`args::Cli`], so that both take the same options, defaults and errors.

pub mod args;
mod bench;
mod bench_cluster;
mod cluster_cmd;
mod demo;
pub mod embed_cmd;
mod plot;
mod progress;
mod report_cmd;
pub mod run_cmd;
pub mod sql_cmd;
mod sweep_cmd;
mod synth;

use args::{Cli, Command};

/// Runs one parsed command line: what `lidscope ...` does after parsing, before the exit code.
pub fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Run(a) => run_cmd::main(a, cli.quiet),
        Command::Demo(a) => demo::main(a, cli.quiet),
        Command::Bench(a) if a.embed.is_some() => embed_cmd::bench(a),
        Command::Bench(a) => bench::main(a),
        Command::Sql(a) => sql_cmd::main(a),
        Command::Plot(a) => plot::main(a),
        Command::Report(a) => report_cmd::main(a, cli.quiet),
        Command::Sweep(a) => sweep_cmd::main(a, cli.quiet),
        Command::Coordinator(a) => cluster_cmd::coordinator_main(a),
        Command::Worker(a) => cluster_cmd::worker_main(a),
        Command::Embed(a) => embed_cmd::main(a, cli.quiet),
    }
}

/// Parameters the engine refused before any work (a malformed `--partition`, ...): a usage error,
/// like the ones clap reports (exit code 2).
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<lidscope_engine::EngineError>(), Some(lidscope_engine::EngineError::Usage(_))))
}
