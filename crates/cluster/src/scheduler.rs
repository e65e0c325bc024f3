//! The Ballista scheduler inside the coordinator, and running one plan on it as a job.
//!
//! Jobs are submitted in-process: the coordinator plans with a session of the scheduler's own
//! (the scan is lidscope's table, `lid()` is registered), so no logical plan is serialised; the
//! physical stages go to the workers through [`LidscopeCodec`]. A job's results stay on the
//! worker that computed them until the coordinator fetches them over Arrow Flight.

use std::sync::Arc;

use ballista_core::client::BallistaClient;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::job_status::Status;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::serde::protobuf::{JobStatus, SuccessfulJob};
use ballista_core::utils::{default_config_producer, default_session_builder};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use crate::codec::LidscopeCodec;
use crate::error::{ClusterError, Result};
use crate::tls::{flight_endpoint, Tls};

/// Largest gRPC message between coordinator and workers (plans and results).
const MAX_MESSAGE: usize = 64 << 20;

/// How quickly a lost worker is noticed: a busy worker polls at least every 5 s, so the timeout
/// must stay well above that.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// Seconds without a poll before a worker counts as lost (its tasks run again elsewhere).
    pub executor_timeout_seconds: u64,
    /// Seconds between checks.
    pub check_interval_seconds: u64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { executor_timeout_seconds: 12, check_interval_seconds: 1 }
    }
}

/// An embedded Ballista scheduler in pull mode, with `lid()` and lidscope's plan nodes.
#[derive(Clone)]
pub struct Scheduler {
    server: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
    /// With mutual TLS: how results are fetched from the workers' Flight ports.
    tls: Option<Tls>,
}

/// Why a job did not give results.
#[derive(Debug)]
pub enum JobError {
    /// The job ran and failed (the first failing task's error, as the worker reported it).
    Failed(String),
    /// The cluster could not run it (no results, a worker that vanished with them, ...).
    Cluster(String),
}

impl Scheduler {
    /// Starts the scheduler (its event loop and reaper run on the current tokio runtime). With
    /// `tls`, jobs tell the workers to fetch each other's data over TLS, and results are fetched
    /// from them with this node's certificate.
    ///
    /// # Errors
    /// Ballista's, when the scheduler cannot be created.
    pub async fn start(advertised_host: &str, port: u16, liveness: Liveness, tls: Option<Tls>) -> Result<Self> {
        let config = SchedulerConfig {
            scheduling_policy: TaskSchedulingPolicy::PullStaged,
            external_host: advertised_host.to_string(),
            bind_port: port,
            executor_timeout_seconds: liveness.executor_timeout_seconds,
            expire_dead_executor_interval_seconds: liveness.check_interval_seconds,
            // Results wait on the workers until fetched; keep them well past a slow fetch.
            finished_job_data_clean_up_interval_seconds: 600,
            no_executors_grace_period_seconds: 3600,
            override_session_builder: Some(Arc::new(|c: SessionConfig| {
                let mut state = default_session_builder(c)?;
                lidscope_engine::udf::register_state(&mut state)?;
                Ok(state)
            })),
            override_physical_codec: Some(Arc::new(LidscopeCodec::default())),
            ..Default::default()
        };
        let config = Arc::new(config);
        let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| ClusterError::Ballista(e.to_string()))?;
        let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config).await.map_err(|e| ClusterError::Ballista(e.to_string()))?;
        Ok(Scheduler { server, tls })
    }

    /// The scheduler's gRPC service, to be served (behind the token check) on the coordinator's
    /// port, where workers poll it for tasks.
    pub fn grpc_service(&self) -> SchedulerGrpcServer<SchedulerServer<LogicalPlanNode, PhysicalPlanNode>> {
        SchedulerGrpcServer::new(self.server.clone()).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
    }

    /// A session to plan jobs in. Its plans keep their scan's partitioning (no repartitioning),
    /// so that a shard's rows come back in corpus order.
    ///
    /// # Errors
    /// Ballista's.
    pub async fn session(&self, name: &str) -> Result<Arc<SessionContext>> {
        // A job's settings override the workers' own: `use_tls` must be set here, not only there.
        let config = default_config_producer().with_target_partitions(1).with_repartition_file_scans(false).with_ballista_use_tls(self.tls.is_some());
        self.server.state.session_manager.create_or_update_session(name, &config).await.map_err(|e| ClusterError::Ballista(e.to_string()))
    }

    /// How many workers are connected.
    pub async fn workers(&self) -> usize {
        self.server.state.executor_manager.get_executors_state().await.map(|v| v.len()).unwrap_or(0)
    }

    /// Runs `plan` (planned in a [`Self::session`]) as one job and returns a stream per output
    /// partition, in partition order.
    ///
    /// # Errors
    /// [`JobError::Failed`] with the job's error; [`JobError::Cluster`] when it could not run or
    /// its results could not be fetched.
    pub async fn run(&self, name: &str, ctx: Arc<SessionContext>, plan: &LogicalPlan) -> std::result::Result<Vec<SendableRecordBatchStream>, JobError> {
        // Status updates are dropped when the channel is full: leave room.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<JobStatus>(64);
        let job = self.server.submit_job(name, ctx, plan, Some(tx)).await.map_err(|e| JobError::Cluster(e.to_string()))?;
        let status = loop {
            match rx.recv().await {
                Some(JobStatus { status: Some(s @ (Status::Successful(_) | Status::Failed(_))), .. }) => break s,
                Some(_) => continue,
                None => {
                    // The subscriber went away: ask once more.
                    match self.server.state.task_manager.get_job_status(&job).await {
                        Ok(Some(JobStatus { status: Some(s @ (Status::Successful(_) | Status::Failed(_))), .. })) => break s,
                        Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                        Err(e) => return Err(JobError::Cluster(e.to_string())),
                    }
                }
            }
        };
        match status {
            Status::Successful(ok) => fetch(ok, self.tls.as_ref()).await.map_err(JobError::Cluster),
            Status::Failed(f) => Err(JobError::Failed(f.error)),
            _ => unreachable!("only final states leave the loop"),
        }
    }
}

/// The output partitions of a finished job, from the workers that hold them.
async fn fetch(ok: SuccessfulJob, tls: Option<&Tls>) -> std::result::Result<Vec<SendableRecordBatchStream>, String> {
    let mut locations = ok.partition_location;
    locations.sort_by_key(|l| l.partition_id.as_ref().map(|p| p.partition_id));
    // A location may be reported more than once (a task's status seen twice): fetch each once.
    let mut seen = std::collections::HashSet::new();
    locations.retain(|l| {
        let executor = l.executor_meta.as_ref().map(|m| m.id.clone());
        seen.insert((l.partition_id.as_ref().map(|p| p.partition_id), l.map_partition_id, l.file_id, executor))
    });
    let mut streams = Vec::with_capacity(locations.len());
    for loc in locations {
        let layout = loc.layout();
        let meta = loc.executor_meta.clone().ok_or("a result without its worker")?;
        let pid = loc.partition_id.clone().ok_or("a result without its partition")?;
        let mut client = BallistaClient::try_new(&meta.host, meta.port as u16, MAX_MESSAGE, tls.is_some(), tls.map(flight_endpoint), 3, 250, 0, 0)
            .await
            .map_err(|e| format!("fetching results from worker {}:{}: {e}", meta.host, meta.port))?;
        let stream = client
            .fetch_partition(&meta.id, &pid.into(), loc.file_id, layout, true)
            .await
            .map_err(|e| format!("fetching results from worker {}:{}: {e}", meta.host, meta.port))?;
        streams.push(stream);
    }
    Ok(streams)
}
