//! `lidscope run --cluster`: submits a run to a coordinator and follows it to its commit.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lidscope_data::Manifest;
use lidscope_engine::{Progress, ReferenceSource, RunConfig, RunSummary};

use crate::api::coordinator_client::CoordinatorClient;
use crate::api::run_event::Event;
use crate::api::{self, run_spec::Reference, RunSpec};
use crate::auth::{SendToken, Token};
use crate::error::{ClusterError, Result};
use crate::tls::{self, Tls};

/// How a client reaches a coordinator.
#[derive(Clone, Debug)]
pub struct Access {
    /// `http://HOST:PORT`, or `https://HOST:PORT` with [`Self::tls`].
    pub url: String,
    /// The cluster's token.
    pub token: Token,
    /// This client's certificate and the cluster's CA; `None`: plaintext.
    pub tls: Option<Tls>,
}

/// A run as the job API takes it: paths made absolute against this process's working directory
/// (the coordinator has its own).
///
/// # Errors
/// A path that cannot be made absolute.
pub fn to_spec(cfg: &RunConfig, shard_rows: u64) -> Result<RunSpec> {
    // An object URL (`s3://...`) names the same object from every node: it stays as it is.
    let abs = |p: &std::path::Path| {
        if lidscope_data::store::is_object(p) {
            return Ok(p.to_path_buf());
        }
        std::path::absolute(p).map_err(|e| ClusterError::Config(format!("{}: {e}", p.display())))
    };
    let reference = match &cfg.reference {
        ReferenceSource::File(p) => Reference::ReferenceFile(abs(p)?.display().to_string()),
        ReferenceSource::Sample(s) => Reference::Sample(api::Sample {
            size: s.size as u64,
            pool: s.pool as u64,
            seed: s.seed,
            exclude: s.exclude.clone().unwrap_or_default(),
        }),
        ReferenceSource::Identities(p) => Reference::IdentitiesFile(abs(p)?.display().to_string()),
    };
    Ok(RunSpec {
        corpus: cfg.corpus.iter().map(|c| abs(std::path::Path::new(c)).map(|p| p.display().to_string())).collect::<Result<_>>()?,
        embedding_column: cfg.embedding_column.clone(),
        id_columns: cfg.id_columns.clone(),
        out: abs(&cfg.out)?.display().to_string(),
        k: cfg.lid.k as u32,
        // Empty for the default run, so that the coordinator writes no `lid_<name>` column.
        estimator: match (cfg.estimators.is_empty(), cfg.lid.estimator) {
            (true, lidscope_kernel::Estimator::TwoNN) => String::new(),
            _ => cfg.estimator_arg(),
        },
        discard_fraction: cfg.lid.discard_fraction,
        reference: Some(reference),
        overwrite: cfg.overwrite,
        batch_rows: cfg.batch_rows as u64,
        partition: cfg.partition.iter().map(|(k, v)| api::KeyValue { key: k.clone(), value: v.clone() }).collect(),
        shard_rows,
        where_predicate: cfg.filter.clone().unwrap_or_default(),
    })
}

/// Submits `spec` to the coordinator `access` names and follows it, reporting shards to `progress`.
/// When `interrupt` resolves first (Ctrl-C), the run is cancelled: its committed shards stay for
/// the same command to resume.
///
/// # Errors
/// The coordinator's refusal (a bad token, bad input found before the run starts), the run's
/// failure, or its cancellation.
pub async fn run(access: &Access, spec: RunSpec, progress: &dyn Progress, interrupt: impl Future<Output = ()>) -> Result<RunSummary> {
    let url = access.url.as_str();
    let endpoint = tls::endpoint(url, access.tls.as_ref(), "--cluster")?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|source| tls::handshake_error(url, &source).unwrap_or(ClusterError::Connect { target: url.to_string(), source }))?;
    let mut client = CoordinatorClient::with_interceptor(channel, SendToken::new(&access.token)).max_decoding_message_size(64 << 20);
    // With TLS 1.3 a refused client certificate shows on the first call, not on connecting.
    let reply = client
        .submit_run(api::SubmitRunRequest { spec: Some(spec) })
        .await
        .map_err(|status| tls::handshake_error(url, &status).or_else(|| tls::dropped_error(url, &status)).unwrap_or(ClusterError::Status(status)))?
        .into_inner();
    if reply.resumed {
        progress.warn(&format!("resuming run {} (its committed shards are kept)", reply.run_id));
    }
    let mut events = client.watch_run(api::WatchRunRequest { run_id: reply.run_id.clone() }).await?.into_inner();
    let mut interrupt = std::pin::pin!(interrupt);
    let mut cancelling = false;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = &mut interrupt, if !cancelling => {
                cancelling = true;
                progress.warn("cancelling: shards in flight finish, committed shards are kept for a resume");
                client.cancel_run(api::CancelRunRequest { run_id: reply.run_id.clone() }).await?;
                continue;
            }
        };
        let Some(event) = event else {
            return Err(ClusterError::Ballista(format!("the coordinator stopped reporting run {} before it ended", reply.run_id)));
        };
        match event?.event {
            Some(Event::Phase(p)) if p.name != "lid" => progress.phase(&p.name, 0),
            Some(Event::Planned(p)) => {
                if p.shards_done > 0 {
                    progress.warn(&format!("{} of {} shards were committed before; computing the other {}", p.shards_done, p.shards, p.shards - p.shards_done));
                }
                progress.phase("lid", p.rows);
                progress.advance(p.rows_done);
            }
            Some(Event::ShardDone(d)) => progress.advance(d.rows),
            Some(Event::ShardRetry(r)) => progress.warn(&format!("shard {} failed (attempt {}), trying again: {}", r.shard, r.attempt, r.error)),
            Some(Event::Committed(c)) => {
                let manifest: Manifest = serde_json::from_str(&c.manifest_json).map_err(|e| ClusterError::Ballista(format!("the manifest: {e}")))?;
                for w in &c.warnings {
                    progress.warn(w);
                }
                return Ok(RunSummary { manifest, warnings: c.warnings, search: None });
            }
            Some(Event::Failed(f)) => return Err(ClusterError::Status(tonic::Status::failed_precondition(f.error))),
            Some(Event::Cancelled(_)) => return Err(ClusterError::Config(format!("run {} cancelled; the same command resumes it", reply.run_id))),
            _ => {}
        }
    }
}
