//! The job API's implementation: turning requests into runs and runs into events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use lidscope_data::{Layout, SampleConfig, Staging};
use lidscope_engine::{ReferenceSource, RunConfig, ValidRun};
use lidscope_kernel::{parse_estimators, Estimator, LidConfig, LocalEstimator, SearchStrategy};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::runs::{self, Accepted, RunHandle, RunState};
use super::{CoordinatorConfig, Shared, SharedRef};
use crate::api::coordinator_server::Coordinator;
use crate::api::{self, run_spec::Reference, RunEvent, RunSpec};
use crate::error::ClusterError;
use crate::scheduler::Scheduler;

/// The job API over a scheduler.
pub(crate) struct Api {
    shared: SharedRef,
    runs: Arc<Mutex<HashMap<String, Arc<RunHandle>>>>,
    /// `host:port` of the scheduler service (this coordinator's own port).
    scheduler_address: String,
}

impl Api {
    pub fn new(scheduler: Scheduler, cfg: CoordinatorConfig, scheduler_address: String) -> Self {
        Api { shared: Arc::new(Shared { scheduler, cfg }), runs: Default::default(), scheduler_address }
    }
}

/// A run request as a [`RunConfig`], and its rows per shard.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field.
pub(crate) fn to_config(spec: &RunSpec, default_shard_rows: u64) -> Result<(RunConfig, u64), Status> {
    // Empty: the default run (TwoNN alone, as `lid`); else the estimators named, as `--estimator`.
    let estimators = match spec.estimator.as_str() {
        "" => Vec::new(),
        list => parse_estimators(list).map_err(|e| Status::invalid_argument(format!("estimator {list:?}: {e}")))?,
    };
    let estimator = estimators.first().and_then(LocalEstimator::as_twonn).unwrap_or(Estimator::TwoNN);
    let reference = match &spec.reference {
        Some(Reference::ReferenceFile(p)) => ReferenceSource::File(PathBuf::from(p)),
        Some(Reference::Sample(s)) => ReferenceSource::Sample(SampleConfig {
            exclude: (!s.exclude.is_empty()).then(|| s.exclude.clone()),
            ..SampleConfig::new(s.pool as usize, s.size as usize, s.seed)
        }),
        Some(Reference::IdentitiesFile(p)) => ReferenceSource::Identities(PathBuf::from(p)),
        None => return Err(Status::invalid_argument("no reference: give a reference file or a sample")),
    };
    let out = PathBuf::from(&spec.out);
    // An object URL names the same object everywhere; a relative path would be the client's.
    let placed = |p: &std::path::Path| p.is_absolute() || lidscope_data::store::is_object(p);
    if !placed(&out) || spec.corpus.iter().any(|c| !placed(std::path::Path::new(c))) {
        return Err(Status::invalid_argument("paths must be absolute (the coordinator does not share the client's working directory)"));
    }
    let cfg = RunConfig {
        corpus: spec.corpus.clone(),
        embedding_column: spec.embedding_column.clone(),
        id_columns: spec.id_columns.clone(),
        out,
        lid: LidConfig { k: spec.k as usize, estimator, discard_fraction: spec.discard_fraction },
        estimators,
        reference,
        overwrite: spec.overwrite,
        batch_rows: spec.batch_rows as usize,
        strategy: SearchStrategy::Auto,
        partition: spec.partition.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect(),
        filter: (!spec.where_predicate.is_empty()).then(|| spec.where_predicate.clone()),
    };
    let shard_rows = if spec.shard_rows == 0 { default_shard_rows } else { spec.shard_rows };
    Ok((cfg, shard_rows))
}

/// What makes two submissions the same run: its parameters and its inputs as they are now (size
/// and modification time of every file). Not the batch or shard size, which change how the work
/// is cut, not its result.
fn run_key(cfg: &RunConfig, valid: &ValidRun) -> Result<String, ClusterError> {
    // Files and objects alike (an object's size and last-modified time).
    let stamp = |p: &std::path::Path| -> Result<lidscope_data::InputStamp, ClusterError> { Ok(lidscope_data::InputStamp::of(p)?) };
    let files = &valid.inputs;
    let reference = match &cfg.reference {
        ReferenceSource::File(p) => serde_json::json!({ "file": stamp(p)? }),
        ReferenceSource::Sample(s) => serde_json::json!({ "size": s.size, "pool": s.pool, "seed": s.seed, "exclude": s.exclude }),
        ReferenceSource::Identities(p) => serde_json::json!({ "identities": stamp(p)? }),
    };
    let key = serde_json::json!({
        "files": files,
        "embedding_column": cfg.embedding_column,
        "id_columns": cfg.id_columns,
        "k": cfg.lid.k,
        "estimator": cfg.estimator_arg(),
        "estimators_named": !cfg.estimators.is_empty(),
        "discard_fraction": cfg.lid.discard_fraction,
        "reference": reference,
        "partition": cfg.partition,
        "where": cfg.filter,
        "out": cfg.out,
    });
    let digest = Sha256::digest(key.to_string().as_bytes());
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

fn status(e: ClusterError) -> Status {
    Status::from(e)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for Api {
    async fn cluster_info(&self, _request: Request<api::ClusterInfoRequest>) -> Result<Response<api::ClusterInfoReply>, Status> {
        Ok(Response::new(api::ClusterInfoReply { scheduler: self.scheduler_address.clone(), version: env!("CARGO_PKG_VERSION").to_string() }))
    }

    async fn submit_run(&self, request: Request<api::SubmitRunRequest>) -> Result<Response<api::SubmitRunReply>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("no run"))?;
        let (cfg, shard_rows) = to_config(&spec, self.shared.cfg.shard_rows)?;
        let checked = cfg.clone();
        let (valid, key) = tokio::task::spawn_blocking(move || -> Result<(ValidRun, String), ClusterError> {
            let valid = checked.validate()?;
            let key = run_key(&checked, &valid)?;
            Ok((valid, key))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)?;
        let id = key[..16].to_string();
        if let Some(h) = self.runs.lock().expect("runs poisoned").get(&id) {
            if h.state().0 == RunState::Running {
                return Ok(Response::new(api::SubmitRunReply { run_id: id, resumed: true }));
            }
        }
        let layout = Layout::new(&cfg.out, &cfg.partition);
        let overwrite = cfg.overwrite;
        let (staging, resumed) = tokio::task::spawn_blocking(move || Staging::resumable(layout, overwrite, &key))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status(ClusterError::from(e)))?;
        let handle = RunHandle::new(id.clone(), cfg.out.clone(), cfg.partition.clone());
        self.runs.lock().expect("runs poisoned").insert(id.clone(), handle.clone());
        tracing::info!(run = %id, resumed, out = %cfg.out.display(), "run accepted");
        tokio::spawn(runs::drive(self.shared.clone(), handle, Accepted { cfg, valid, staging, shard_rows }));
        Ok(Response::new(api::SubmitRunReply { run_id: id, resumed }))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(&self, request: Request<api::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = request.into_inner().run_id;
        let handle = self.runs.lock().expect("runs poisoned").get(&id).cloned().ok_or_else(|| Status::not_found(format!("no run {id}")))?;
        let events = futures::stream::unfold((handle, 0usize), |(h, i)| async move { h.event(i).await.map(|e| (Ok(e), (h, i + 1))) });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_runs(&self, _request: Request<api::ListRunsRequest>) -> Result<Response<api::ListRunsReply>, Status> {
        let runs = self.runs.lock().expect("runs poisoned");
        let mut out: Vec<api::RunInfo> = runs
            .values()
            .map(|h| {
                let (state, shards, shards_done) = h.state();
                api::RunInfo {
                    run_id: h.id.clone(),
                    out: h.out.display().to_string(),
                    partition: h.partition.iter().map(|(k, v)| api::KeyValue { key: k.clone(), value: v.clone() }).collect(),
                    state: state.name().to_string(),
                    shards,
                    shards_done,
                }
            })
            .collect();
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(Response::new(api::ListRunsReply { runs: out }))
    }

    async fn cancel_run(&self, request: Request<api::CancelRunRequest>) -> Result<Response<api::CancelRunReply>, Status> {
        let id = request.into_inner().run_id;
        let handle = self.runs.lock().expect("runs poisoned").get(&id).cloned().ok_or_else(|| Status::not_found(format!("no run {id}")))?;
        Ok(Response::new(api::CancelRunReply { cancelled: handle.cancel() }))
    }
}
