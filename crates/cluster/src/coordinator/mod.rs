//! `lidscope coordinator`: the job API and the embedded Ballista scheduler on one port.
//!
//! Both services sit behind the bearer token ([`crate::auth`]): a request without it changes
//! nothing. Workers poll the scheduler service on this same port, so a worker needs only the
//! coordinator's URL and the token (and, with mutual TLS, its certificate: [`crate::tls`]).

mod runs;
mod service;
mod shards;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::api::coordinator_server::CoordinatorServer;
use crate::auth::{RequireToken, Token};
use crate::error::{ClusterError, Result};
use crate::scheduler::{Liveness, Scheduler};
use crate::tls::Tls;

/// How a coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// `HOST:PORT` to listen on (port 0: any free port).
    pub bind: String,
    /// The host workers and clients reach this coordinator by (default: the bind host).
    pub advertise: Option<String>,
    /// The shared secret.
    pub token: Token,
    /// How quickly lost workers are noticed.
    pub liveness: Liveness,
    /// Shards of one run computed at the same time.
    pub shards_in_flight: usize,
    /// Tries per shard before the run fails.
    pub shard_attempts: u32,
    /// Corpus rows per shard when a run does not say.
    pub shard_rows: u64,
    /// Mutual TLS on the port (and for fetching results from workers); `None`: plaintext.
    pub tls: Option<Tls>,
}

/// Serves until `shutdown` resolves. `listening` is called with the bound address once the port
/// is open (port 0 becomes the port chosen).
///
/// # Errors
/// The address cannot be bound; the scheduler cannot start.
pub async fn serve(cfg: CoordinatorConfig, listening: impl FnOnce(SocketAddr), shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.bind).await.map_err(|e| ClusterError::Config(format!("--bind {}: {e}", cfg.bind)))?;
    let addr = listener.local_addr().map_err(|e| ClusterError::Config(format!("--bind {}: {e}", cfg.bind)))?;
    let host = cfg.advertise.clone().unwrap_or_else(|| addr.ip().to_string());
    let scheduler = Scheduler::start(&host, addr.port(), cfg.liveness, cfg.tls.clone()).await?;
    let token = RequireToken::new(cfg.token.clone());
    let api = service::Api::new(scheduler.clone(), cfg.clone(), format!("{host}:{}", addr.port()));
    let mut server = Server::builder();
    if let Some(tls) = &cfg.tls {
        server = server.tls_config(tls.server()).map_err(|e| ClusterError::Config(format!("--tls-cert/--tls-key: {e}")))?;
    }
    listening(addr);
    tracing::info!("coordinator listening on {addr}{}", if cfg.tls.is_some() { " (mutual TLS)" } else { "" });
    server
        .add_service(InterceptedService::new(CoordinatorServer::new(api), token.clone()))
        .add_service(InterceptedService::new(scheduler.grpc_service(), token))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| ClusterError::Ballista(format!("serving: {e}")))
}


/// Shared by the service and the runs it drives.
pub(crate) struct Shared {
    pub scheduler: Scheduler,
    pub cfg: CoordinatorConfig,
}

pub(crate) type SharedRef = Arc<Shared>;
