//! `lidscope coordinator`, `lidscope worker`, `lidscope run --cluster` and `lidscope certs`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use lidscope_cluster::auth::Token;
use lidscope_cluster::client::Access;
use lidscope_cluster::tls::{Tls, TlsFiles};
use lidscope_cluster::coordinator::{self, CoordinatorConfig};
use lidscope_cluster::worker::{self, WorkerConfig};
use lidscope_cluster::Liveness;
use lidscope_engine::{RunConfig, RunSummary};

use crate::args::{CertsArgs, CoordinatorArgs, RunArgs, TlsArgs, WorkerArgs};
use crate::progress::Bar;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub fn coordinator_main(a: &CoordinatorArgs) -> Result<()> {
    let cfg = CoordinatorConfig {
        bind: a.bind.clone(),
        advertise: a.advertise.clone(),
        token: Token::load(a.token_file.as_deref())?,
        liveness: Liveness { executor_timeout_seconds: a.worker_timeout, check_interval_seconds: 1 },
        shards_in_flight: a.shards_in_flight as usize,
        shard_attempts: a.shard_attempts,
        shard_rows: a.shard_rows,
        tls: tls(&a.tls)?,
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    runtime()?.block_on(coordinator::serve(
        cfg,
        |addr| {
            // Scripts read the port from here when --bind asked for any free port.
            println!("lidscope coordinator: listening on {scheme}://{addr}");
            let _ = std::io::stdout().flush();
        },
        terminated(),
    ))?;
    Ok(())
}

pub fn worker_main(a: &WorkerArgs) -> Result<()> {
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n as usize).build_global().context("starting the worker pool")?;
    }
    let cfg = WorkerConfig {
        coordinator: a.coordinator.clone(),
        token: Token::load(a.token_file.as_deref())?,
        bind_host: a.bind.clone(),
        advertise: a.advertise.clone(),
        flight_port: a.flight_port,
        work_dir: a.work_dir.clone(),
        tasks: a.tasks as usize,
        tls: tls(&a.tls)?,
    };
    runtime()?.block_on(worker::serve(
        cfg,
        |addr| {
            println!("lidscope worker: serving results on {addr}");
            let _ = std::io::stdout().flush();
        },
        terminated(),
    ))?;
    Ok(())
}

/// A run on the cluster at `url`, with a progress bar fed by the coordinator's events.
pub fn run(a: &RunArgs, cfg: &RunConfig, url: &str, quiet: bool) -> Result<RunSummary> {
    let access = access(url, a.token_file.as_deref(), &a.tls)?;
    let spec = lidscope_cluster::client::to_spec(cfg, a.shard_rows.unwrap_or(0))?;
    let bar = Bar::new(quiet);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let result = rt.block_on(lidscope_cluster::client::run(&access, spec, &bar, async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    bar.clear();
    Ok(result?)
}

/// The TLS files of `--tls-*`, read, or `None` without them.
fn tls(a: &TlsArgs) -> Result<Option<Tls>> {
    match (&a.tls_ca, &a.tls_cert, &a.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some(Tls::load(&TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })?)),
        // clap asks for all three together.
        _ => Ok(None),
    }
}

/// How a client reaches the coordinator at `url`.
pub fn access(url: &str, token_file: Option<&Path>, a: &TlsArgs) -> Result<Access> {
    Ok(Access { url: url.to_string(), token: Token::load(token_file)?, tls: tls(a)? })
}

/// `--tls-*` means something only with `--cluster`.
pub fn tls_needs_cluster(a: &TlsArgs, cluster: Option<&str>) -> Result<()> {
    if a.tls_ca.is_some() && cluster.is_none() {
        bail!("--tls-ca, --tls-cert and --tls-key are for --cluster https://...; a local run needs none");
    }
    Ok(())
}

pub fn certs_main(a: &CertsArgs) -> Result<()> {
    let w = lidscope_cluster::certs::create(&a.out, &a.nodes)?;
    if w.new_ca {
        println!("{}: a new CA (its key: {})", w.ca.display(), a.out.join(lidscope_cluster::certs::CA_KEY).display());
    } else {
        println!("{}: the existing CA signed the new nodes", w.ca.display());
    }
    for ((cert, key), node) in w.nodes.iter().zip(&a.nodes) {
        println!("{} {}: {} ({})", cert.display(), key.display(), node.name, node.hosts.join(", "));
    }
    Ok(())
}
