//! `lidscope worker`: a Ballista executor with lidscope's functions and plan nodes, polling a
//! coordinator for tasks.
//!
//! The executor is assembled from Ballista's parts rather than started whole, for two reasons:
//! its polls must carry the coordinator's token, and its Arrow Flight port (where results wait
//! for the coordinator) is bound before it registers, so that a port chosen by the system is the
//! port it advertises. If the coordinator goes away the poll loop keeps trying the same address,
//! so a coordinator restarted on its port finds its workers again by itself. With mutual TLS the
//! worker dials the coordinator with its certificate, serves Flight only to peers with one the
//! cluster's CA signed, and has its own tasks' shuffle reads dial other workers the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::ExecutorRegistration;
use ballista_core::serde::scheduler::{ExecutorOperatingSystemSpecification, ExecutorSpecification};
use ballista_core::serde::{BallistaCodec, BallistaLogicalExtensionCodec};
use ballista_core::utils::default_config_producer;
use ballista_core::{ConfigProducer, RuntimeProducer, BALLISTA_PROTOCOL_VERSION};
use ballista_executor::execution_loop::poll_loop;
use ballista_executor::executor::Executor;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::health::ExecutorHealth;
use ballista_executor::metrics::LoggingMetricsCollector;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::api::coordinator_client::CoordinatorClient;
use crate::api::ClusterInfoRequest;
use crate::auth::{SendToken, Token};
use crate::codec::LidscopeCodec;
use crate::error::{ClusterError, Result};
use crate::tls::{self, Tls};

/// Largest gRPC message (plans and results).
const MAX_MESSAGE: usize = 64 << 20;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator, `http://HOST:PORT` (`https://` with [`Self::tls`]).
    pub coordinator: String,
    /// The shared secret.
    pub token: Token,
    /// Address to bind the Arrow Flight port to.
    pub bind_host: String,
    /// Host the coordinator and other workers reach this worker by (default: the bind host).
    pub advertise: Option<String>,
    /// Arrow Flight port (0: any free port).
    pub flight_port: u16,
    /// Where task results wait to be fetched (default: a temporary directory).
    pub work_dir: Option<PathBuf>,
    /// Tasks at a time. Each `lid()` call already uses every core, so one is the default.
    pub tasks: usize,
    /// Mutual TLS to the coordinator, on the Flight port and between workers; `None`: plaintext.
    pub tls: Option<Tls>,
}

/// This machine's name, as the kernel reports it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "localhost".into())
}

/// Runs until `shutdown` resolves. `ready` is called once the worker has reached the coordinator
/// and opened its Flight port.
///
/// # Errors
/// A coordinator that refuses the token, a port that cannot be bound.
pub async fn serve(cfg: WorkerConfig, ready: impl FnOnce(SocketAddr), shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let endpoint = tls::endpoint(&cfg.coordinator, cfg.tls.as_ref(), "--coordinator")?;
    let channel = endpoint.connect_timeout(Duration::from_secs(5)).connect_lazy();
    let send = SendToken::new(&cfg.token);

    // Reach the coordinator first: a wrong token is an error now, not a silent idle worker.
    let mut api = CoordinatorClient::with_interceptor(channel.clone(), send.clone());
    let mut waited = 0;
    // Connections dropped by the coordinator in a row: a certificate it refuses (or plaintext
    // to a TLS port) is dropped on every try, a coordinator going down only once.
    let mut dropped = 0;
    let info = loop {
        match api.cluster_info(ClusterInfoRequest {}).await {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => return Err(ClusterError::Status(s)),
            Err(s) => {
                // A certificate refused by this side is refused again on every try.
                if let Some(e) = tls::handshake_error(&cfg.coordinator, &s) {
                    return Err(e);
                }
                match tls::dropped_error(&cfg.coordinator, &s) {
                    Some(e) if dropped >= 2 => return Err(e),
                    Some(_) => dropped += 1,
                    None => dropped = 0,
                }
                if waited % 20 == 0 {
                    tracing::warn!("waiting for the coordinator at {}: {}", cfg.coordinator, s.message());
                }
                waited += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    tracing::info!("coordinator {} (lidscope {}), scheduler at {}", cfg.coordinator, info.version, info.scheduler);

    let work_dir = match &cfg.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| ClusterError::Config(format!("--work-dir {}: {e}", d.display())))?;
            d.clone()
        }
        None => {
            let d = std::env::temp_dir().join(format!("lidscope-worker-{}", std::process::id()));
            std::fs::create_dir_all(&d).map_err(|e| ClusterError::Config(format!("{}: {e}", d.display())))?;
            d
        }
    };
    let work = work_dir.display().to_string();
    let listener = tokio::net::TcpListener::bind((cfg.bind_host.as_str(), cfg.flight_port))
        .await
        .map_err(|e| ClusterError::Config(format!("binding the Flight port {}:{}: {e}", cfg.bind_host, cfg.flight_port)))?;
    let flight_addr = listener.local_addr().map_err(|e| ClusterError::Config(e.to_string()))?;
    let flight = FlightServiceServer::new(BallistaFlightService::new(work.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut server = Server::builder();
    if let Some(tls) = &cfg.tls {
        server = server.tls_config(tls.server()).map_err(|e| ClusterError::Config(format!("--tls-cert/--tls-key: {e}")))?;
    }
    let flight_server = tokio::spawn(server.add_service(flight).serve_with_incoming(TcpIncoming::from(listener)));

    let tasks = cfg.tasks.max(1);
    let host = cfg.advertise.clone().unwrap_or_else(|| match cfg.bind_host.as_str() {
        // Bound to every interface: others reach this host by its name (a container's, a pod's).
        "0.0.0.0" | "::" | "[::]" => host_name(),
        h => h.to_string(),
    });
    let metadata = ExecutorRegistration {
        id: ballista_core::ids::new_instance_id(),
        host: Some(host),
        port: flight_addr.port() as u32,
        // Pull mode has no executor gRPC server; nothing listens here.
        grpc_port: 0,
        specification: Some(ExecutorSpecification::default().with_vcores(tasks as u32).into()),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
    };
    let mut state = SessionStateBuilder::new().with_default_features().build();
    lidscope_engine::udf::register_state(&mut state).map_err(|e| ClusterError::Ballista(e.to_string()))?;
    let registry = Arc::new(BallistaFunctionRegistry::from(&state));
    // Shuffle reads from other workers: TLS with this worker's certificate. (The job's own
    // settings say `use_tls` too; the endpoint hook is this worker's and never travels.)
    let config_producer: ConfigProducer = match &cfg.tls {
        None => Arc::new(default_config_producer),
        Some(t) => {
            let dial = tls::flight_dial(t);
            Arc::new(move || default_config_producer().with_ballista_use_tls(true).with_ballista_override_create_grpc_client_endpoint(dial.clone()))
        }
    };
    let temp = work.clone();
    let runtime_producer: RuntimeProducer = Arc::new(move |_| Ok(Arc::new(RuntimeEnvBuilder::new().with_temp_file_path(temp.clone()).build()?)));
    let executor = Arc::new(Executor::with_default_execution_engine(
        metadata,
        &work,
        runtime_producer,
        config_producer,
        registry,
        Arc::new(LoggingMetricsCollector::default()),
        tasks,
    ));
    let codec: BallistaCodec = BallistaCodec::new(Arc::new(BallistaLogicalExtensionCodec::default()), Arc::new(LidscopeCodec::default()));
    let scheduler = SchedulerGrpcClient::with_interceptor(channel, send).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
    let polling = tokio::spawn(poll_loop(scheduler, executor, codec, None, None, ExecutorHealth::new()));
    ready(flight_addr);
    tracing::info!("worker serving results on {flight_addr}, {tasks} task(s) at a time");

    tokio::select! {
        () = shutdown => {}
        r = polling => return Err(ClusterError::Ballista(format!("the task loop stopped: {r:?}"))),
        r = flight_server => return Err(ClusterError::Ballista(format!("the Flight server stopped: {r:?}"))),
    }
    if cfg.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

