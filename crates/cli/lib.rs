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
        Command::Certs(a) => cluster_cmd::certs_main(a),
    }
}

/// Parameters the engine refused before any work (a malformed `--partition`, ...): a usage error,
/// like the ones clap reports (exit code 2).
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<lidscope_engine::EngineError>(), Some(lidscope_engine::EngineError::Usage(_))))
}

/// The reader of our standard output went away (`lidscope sql ... | head`): not a failure.
/// Only a pipe closed on [`stdout`] counts (a broken connection to a cluster is an error); it
/// is remembered where it happened, since writers such as Arrow's CSV writer keep only the
/// message of the I/O error they met.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Standard output for results, whose broken pipe [`stdout_closed`] recognises.
pub fn stdout() -> impl std::io::Write + Send {
    struct Out(std::io::Stdout);
    fn mark(e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }
    impl std::io::Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf).map_err(mark)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush().map_err(mark)
        }
    }
    Out(std::io::stdout())
}
