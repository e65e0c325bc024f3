//! One run on the cluster, from its plan to its commit.
//!
//! The run's directory is a resumable staging directory ([`lidscope_data::Staging::resumable`]):
//! its shard plan, its reference and every committed shard survive the coordinator, and the next
//! submission of the same run picks them up. Shards run as Ballista jobs, several at once; a
//! shard that fails is tried again up to the configured number of attempts, except that a failure
//! repeated word for word is the input's (a NaN, a null vector) and fails the run at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use lidscope_data::{merge_pools, read_reference, sample_from_pool, write_reference, Manifest, SampleConfig, Staging};
use lidscope_engine::{CommittedPart, CorpusScan, ReferenceSource, RunConfig, ShardedRun, ValidRun};
use tokio::sync::watch;

use super::shards::{Plan, ReferenceInfo, ShardStore};
use super::SharedRef;
use crate::api::{self, run_event::Event, RunEvent};
use crate::error::{ClusterError, Result};
use crate::pool::{self, PoolExec};
use crate::scheduler::JobError;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunState {
    Running,
    Committed,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Committed => "committed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// A run the coordinator knows: its events so far (replayed to every watcher) and its state.
pub(crate) struct RunHandle {
    pub id: String,
    pub out: PathBuf,
    pub partition: Vec<(String, String)>,
    events: Mutex<Vec<RunEvent>>,
    /// The number of events, for watchers to wait on.
    count: watch::Sender<usize>,
    state: Mutex<(RunState, u32, u32)>,
    cancel: watch::Sender<bool>,
}

impl RunHandle {
    pub fn new(id: String, out: PathBuf, partition: Vec<(String, String)>) -> Arc<Self> {
        Arc::new(RunHandle {
            id,
            out,
            partition,
            events: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            state: Mutex::new((RunState::Running, 0, 0)),
            cancel: watch::channel(false).0,
        })
    }

    fn emit(&self, event: Event) {
        let mut events = self.events.lock().expect("events poisoned");
        events.push(RunEvent { run_id: self.id.clone(), event: Some(event) });
        let n = events.len();
        drop(events);
        self.count.send_replace(n);
    }

    /// Event `i`, once it exists; `None` after the last event of a finished run.
    pub async fn event(&self, i: usize) -> Option<RunEvent> {
        let mut count = self.count.subscribe();
        loop {
            if let Some(e) = self.events.lock().expect("events poisoned").get(i) {
                return Some(e.clone());
            }
            if self.state().0 != RunState::Running {
                return None;
            }
            if count.changed().await.is_err() {
                return None;
            }
        }
    }

    /// State, shards, shards committed.
    pub fn state(&self) -> (RunState, u32, u32) {
        *self.state.lock().expect("state poisoned")
    }

    fn set(&self, f: impl FnOnce(&mut (RunState, u32, u32))) {
        f(&mut self.state.lock().expect("state poisoned"));
        // Wake watchers so that they see a finished run end.
        self.count.send_modify(|_| {});
    }

    /// Asks the run to stop; committed shards stay for a later resume.
    pub fn cancel(&self) -> bool {
        let running = self.state().0 == RunState::Running;
        self.cancel.send_replace(true);
        running
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }
}

/// A run accepted by the API, ready to be driven.
pub(crate) struct Accepted {
    pub cfg: RunConfig,
    pub valid: ValidRun,
    pub staging: Staging,
    pub shard_rows: u64,
}

/// Drives a run to its end, recording what happens as events.
pub(crate) async fn drive(shared: SharedRef, handle: Arc<RunHandle>, run: Accepted) {
    let Accepted { cfg, valid, staging, shard_rows } = run;
    let result = drive_inner(&shared, &handle, &cfg, &valid, &staging, shard_rows).await;
    match result {
        Ok((manifest, warnings)) => {
            let commit = tokio::task::spawn_blocking(move || staging.commit(&manifest)).await;
            match commit {
                Ok(Ok(manifest)) => {
                    let manifest_json = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
                    handle.emit(Event::Committed(api::Committed { manifest_json, warnings }));
                    handle.set(|s| s.0 = RunState::Committed);
                }
                Ok(Err(e)) => fail(&handle, ClusterError::from(e)),
                Err(e) => fail(&handle, ClusterError::Ballista(format!("commit: {e}"))),
            }
        }
        Err(Stop::Cancelled) => {
            handle.emit(Event::Cancelled(api::Cancelled {}));
            handle.set(|s| s.0 = RunState::Cancelled);
        }
        Err(Stop::Failed(e)) => {
            if e.is_bad_input() {
                // The same input fails the same way: nothing of it is worth keeping.
                staging.abandon();
            }
            fail(&handle, e);
        }
    }
}

fn fail(handle: &RunHandle, e: ClusterError) {
    tracing::warn!(run = %handle.id, "run failed: {e}");
    handle.emit(Event::Failed(api::Failed { error: e.to_string(), bad_input: e.is_bad_input() }));
    handle.set(|s| s.0 = RunState::Failed);
}

/// Why a run stopped early.
enum Stop {
    Cancelled,
    Failed(ClusterError),
}

impl<E: Into<ClusterError>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClusterError::Ballista(format!("a worker thread failed: {e}")))?
}

async fn drive_inner(
    shared: &SharedRef,
    handle: &Arc<RunHandle>,
    cfg: &RunConfig,
    valid: &ValidRun,
    staging: &Staging,
    shard_rows: u64,
) -> std::result::Result<(Manifest, Vec<String>), Stop> {
    let start = Instant::now();
    let mut timings = BTreeMap::new();
    let store = Arc::new(ShardStore::open(staging.dir())?);

    // The shards: fixed by the first attempt, so that committed shards keep their meaning.
    let plan = match store.plan()? {
        Some(p) => p,
        None => {
            let spec = valid.spec.clone();
            let shards = blocking(move || Ok(lidscope_data::slice_corpus(&spec, shard_rows)?)).await?;
            let plan = Plan { shards };
            store.save_plan(&plan)?;
            plan
        }
    };
    let n = plan.shards.len();

    handle.emit(Event::Phase(api::Phase { name: "reference".into() }));
    let t = Instant::now();
    let (reference, source) = reference(shared, handle, cfg, valid, &store, &plan).await?;
    timings.insert("reference".to_string(), t.elapsed().as_secs_f64());
    let (cfg2, valid2) = (cfg.clone(), valid.clone());
    let (sharded, warnings) = blocking(move || Ok(ShardedRun::new(cfg2, valid2, reference, source)?)).await?;
    let sharded = Arc::new(sharded);

    let done: Vec<Option<super::shards::ShardDone>> = (0..n).map(|i| store.done(i)).collect::<Result<_>>()?;
    let rows_done: u64 = done.iter().flatten().map(|d| d.rows).sum();
    let shards_done = done.iter().flatten().count();
    handle.set(|s| (s.1, s.2) = (n as u32, shards_done as u32));
    handle.emit(Event::Planned(api::Planned { shards: n as u32, rows: valid.info.total_rows, shards_done: shards_done as u32, rows_done }));
    handle.emit(Event::Phase(api::Phase { name: "lid".into() }));

    let t = Instant::now();
    let pending: Vec<usize> = (0..n).filter(|i| done[*i].is_none()).collect();
    let reference_path = store.reference_path();
    let results: Vec<std::result::Result<(), Stop>> = futures::stream::iter(pending)
        .map(|i| {
            let (shared, handle, store, sharded, reference_path) = (shared.clone(), handle.clone(), store.clone(), sharded.clone(), reference_path.clone());
            let slice = plan.shards[i].clone();
            let layout = staging.layout().clone();
            let whole = slice.first_row == 0 && slice.rows == valid.info.rows_per_file[slice.file_index];
            async move {
                let suffix = if whole { String::new() } else { format!("-{:012}", slice.first_row) };
                run_shard(&shared, &handle, &store, &sharded, &reference_path, &layout, i, slice, &suffix).await
            }
        })
        .buffer_unordered(shared.cfg.shards_in_flight.max(1))
        .collect()
        .await;
    let mut stop = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(Stop::Cancelled) => stop = stop.or(Some(Stop::Cancelled)),
            Err(e @ Stop::Failed(_)) => {
                if !matches!(stop, Some(Stop::Failed(_))) {
                    stop = Some(e);
                }
            }
        }
    }
    if let Some(s) = stop {
        return Err(s);
    }
    timings.insert("lid".to_string(), t.elapsed().as_secs_f64());

    // Every shard is committed: the totals, read back from the parts in corpus order.
    handle.emit(Event::Phase(api::Phase { name: "finish".into() }));
    let mut parts = Vec::new();
    for (i, slice) in plan.shards.iter().enumerate() {
        let d = store.done(i)?.ok_or_else(|| ClusterError::Ballista(format!("shard {i} is not committed")))?;
        for p in d.parts {
            parts.push(CommittedPart {
                path: store.data_dir().join(&p),
                relative: staging.layout().relative_data(&p),
                file_index: slice.file_index,
                first_row: slice.first_row,
            });
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (manifest, mut finish_warnings) = blocking(move || Ok(sharded.finish(&parts, timings, elapsed)?)).await?;
    let mut all = warnings;
    all.append(&mut finish_warnings);
    Ok((manifest, all))
}

/// The run's reference: the one stored by an earlier attempt, or read from its file, or drawn
/// from the shards' sample candidates; stored in the run's directory for the workers.
async fn reference(
    shared: &SharedRef,
    handle: &RunHandle,
    cfg: &RunConfig,
    valid: &ValidRun,
    store: &Arc<ShardStore>,
    plan: &Plan,
) -> Result<(lidscope_data::Reference, String)> {
    let path = store.reference_path();
    let (embedding, ids) = (cfg.embedding_column.clone(), reference_ids(cfg));
    if let Some(info) = store.reference_info()? {
        let p = path.clone();
        let mut r = blocking(move || Ok(read_reference(&p, &embedding, &ids)?)).await?;
        r.stats = info.stats;
        return Ok((r, info.source));
    }
    let (reference, source) = match &cfg.reference {
        ReferenceSource::File(p) => {
            let (p, e, ids) = (p.clone(), embedding.clone(), cfg.id_columns.clone());
            let source = p.display().to_string();
            (blocking(move || Ok(read_reference(&p, &e, &ids)?)).await?, source)
        }
        ReferenceSource::Sample(sample) => (draw_sample(shared, handle, valid, plan, sample.clone()).await?, "sample".to_string()),
        // Read here: one pass over the id columns, then the listed rows' vectors only.
        ReferenceSource::Identities(p) => {
            let (cfg, valid, p) = (cfg.clone(), valid.clone(), p.clone());
            let source = lidscope_engine::identities_source(&p);
            (blocking(move || Ok(lidscope_engine::reference_by_identities(&cfg, &valid, &p)?)).await?, source)
        }
    };
    let (p, r, e) = (path.clone(), reference, embedding);
    let reference = blocking(move || {
        write_reference(&p, &r, &e)?;
        Ok(r)
    })
    .await?;
    store.save_reference_info(&ReferenceInfo { source: source.clone(), stats: reference.stats })?;
    Ok((reference, source))
}

/// The identity columns a reference file of this run has (as the local run writes it).
fn reference_ids(cfg: &RunConfig) -> Vec<String> {
    match (cfg.id_columns.is_empty(), &cfg.reference) {
        (false, _) => cfg.id_columns.clone(),
        (true, ReferenceSource::Sample(_)) => vec!["file".into(), "row".into()],
        (true, ReferenceSource::File(_) | ReferenceSource::Identities(_)) => Vec::new(),
    }
}

/// The paper's sample without reading the corpus here: each shard's worker computes its best
/// candidates (one job per shard, several at once); the pool is merged and only its rows'
/// vectors are read.
async fn draw_sample(shared: &SharedRef, handle: &RunHandle, valid: &ValidRun, plan: &Plan, sample: SampleConfig) -> Result<lidscope_data::Reference> {
    let pools: Vec<Result<Vec<lidscope_data::PoolCandidate>>> = futures::stream::iter(plan.shards.iter().cloned().enumerate())
        .map(|(i, slice)| {
            let scan = CorpusScan {
                spec: valid.spec.clone(),
                info: valid.info.clone(),
                batch_rows: 65_536,
                dim: valid.info.dim.unwrap_or(0),
                dim_source: "sample".into(),
                partitions: Some(vec![vec![slice]]),
            };
            let exec = Arc::new(PoolExec::new(Arc::new(scan), sample.clone()));
            let (shared, id) = (shared.clone(), handle.id.clone());
            async move {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let ctx = shared.scheduler.session(&format!("{id}-pool-{i}-{attempt}")).await?;
                    let plan = pool_plan(&ctx, exec.clone())?;
                    let result = match shared.scheduler.run(&format!("lidscope {id} sample {i}"), ctx, &plan).await {
                        Ok(streams) => collect(streams).await.map_err(|e| JobError::Cluster(e.to_string())),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(b) => return Ok(pool::from_batches(&b)),
                        Err(e) if attempt >= shared.cfg.shard_attempts => return Err(job_error("the sample's candidates", e)),
                        Err(e) => tracing::warn!(run = %id, "sample candidates of shard {i}, attempt {attempt}: {e:?}"),
                    }
                }
            }
        })
        .buffer_unordered(shared.cfg.shards_in_flight.max(1))
        .collect()
        .await;
    let pools = pools.into_iter().collect::<Result<Vec<_>>>()?;
    let (spec, info) = (valid.spec.clone(), valid.info.clone());
    blocking(move || {
        let pool = merge_pools(&spec, &info, pools, &sample)?;
        Ok(sample_from_pool(&spec, &info, &sample, pool)?)
    })
    .await
}

/// A logical plan that runs `exec` (a [`PoolExec`]) as it is.
fn pool_plan(ctx: &datafusion::prelude::SessionContext, exec: Arc<PoolExec>) -> Result<datafusion::logical_expr::LogicalPlan> {
    let table = Arc::new(pool::PoolTable::new(exec));
    let df = ctx.read_table(table).map_err(|e| ClusterError::Ballista(e.to_string()))?;
    Ok(df.logical_plan().clone())
}

async fn collect(streams: Vec<datafusion::execution::SendableRecordBatchStream>) -> datafusion::error::Result<Vec<arrow::array::RecordBatch>> {
    let mut out = Vec::new();
    for mut s in streams {
        while let Some(b) = s.next().await {
            out.push(b?);
        }
    }
    Ok(out)
}

fn job_error(what: &str, e: JobError) -> ClusterError {
    match e {
        JobError::Failed(m) => ClusterError::Engine(lidscope_engine::EngineError::Invalid(clean_error(&m))),
        JobError::Cluster(m) => ClusterError::Ballista(format!("{what}: {m}")),
    }
}

/// A worker's error as the person reading it wants it: lidscope's own message when the report
/// carries one, else Ballista's report as it is.
pub(crate) fn clean_error(m: &str) -> String {
    lidscope_engine::carried_message(m).unwrap_or(m).trim().to_string()
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    shared: &SharedRef,
    handle: &Arc<RunHandle>,
    store: &ShardStore,
    sharded: &ShardedRun,
    reference_path: &Path,
    layout: &lidscope_data::Layout,
    i: usize,
    slice: lidscope_data::CorpusSlice,
    suffix: &str,
) -> std::result::Result<(), Stop> {
    let mut last_error: Option<String> = None;
    for attempt in 1..=shared.cfg.shard_attempts.max(1) {
        if handle.cancelled() {
            return Err(Stop::Cancelled);
        }
        let scratch = store.scratch(i, attempt)?;
        let result = attempt_shard(shared, handle, sharded, reference_path, layout, i, slice.clone(), &scratch, suffix).await;
        match result {
            Ok(parts) => {
                store.commit(i, &scratch, parts, slice.rows)?;
                handle.set(|s| s.2 += 1);
                handle.emit(Event::ShardDone(api::ShardDone { shard: i as u32, rows: slice.rows }));
                return Ok(());
            }
            Err(e) => {
                let message = match &e {
                    JobError::Failed(m) => clean_error(m),
                    JobError::Cluster(m) => m.clone(),
                };
                let repeated = last_error.as_deref() == Some(message.as_str()) && matches!(e, JobError::Failed(_));
                if repeated || attempt == shared.cfg.shard_attempts.max(1) {
                    let err = match (repeated, e) {
                        (true, _) | (_, JobError::Failed(_)) => ClusterError::Engine(lidscope_engine::EngineError::Invalid(message)),
                        (false, JobError::Cluster(m)) => ClusterError::Ballista(format!("shard {i}: {m}")),
                    };
                    return Err(Stop::Failed(err));
                }
                tracing::warn!(run = %handle.id, "shard {i}, attempt {attempt}: {message}");
                handle.emit(Event::ShardRetry(api::ShardRetry { shard: i as u32, attempt, error: message.clone() }));
                last_error = Some(message);
            }
        }
    }
    unreachable!("the last attempt returns")
}

#[allow(clippy::too_many_arguments)]
async fn attempt_shard(
    shared: &SharedRef,
    handle: &RunHandle,
    sharded: &ShardedRun,
    reference_path: &Path,
    layout: &lidscope_data::Layout,
    i: usize,
    slice: lidscope_data::CorpusSlice,
    scratch: &Path,
    suffix: &str,
) -> std::result::Result<Vec<String>, JobError> {
    let cluster = |e: ClusterError| JobError::Cluster(e.to_string());
    let ctx = shared.scheduler.session(&format!("{}-{i}", handle.id)).await.map_err(cluster)?;
    let df = sharded.plan(&ctx, vec![slice], reference_path).map_err(|e| JobError::Cluster(e.to_string()))?;
    let plan = df.logical_plan().clone();
    let schema = Arc::new(df.schema().as_arrow().clone());
    let streams = shared.scheduler.run(&format!("lidscope {} shard {i}", handle.id), ctx, &plan).await?;
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(streams).flatten()));
    let names = sharded.write_shard(stream, scratch, layout, suffix).await.map_err(|e| match e.is_transient() {
        true => JobError::Cluster(e.to_string()),
        false => JobError::Failed(e.to_string()),
    })?;
    Ok(names.iter().map(|n| Path::new(n).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| n.clone())).collect())
}
