//! The cluster's error type, and how it crosses the job API.

use lidscope_data::DataError;
use lidscope_engine::EngineError;
use tonic::{Code, Status};

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The run itself: bad input, bad parameters, a failed write (as a local run says it).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A bad setting of the coordinator, worker or client (token, address).
    #[error("{0}")]
    Config(String),
    /// Ballista refused or failed.
    #[error("cluster: {0}")]
    Ballista(String),
    /// The coordinator could not be reached or answered with an error.
    #[error("{}", status_message(.0))]
    Status(#[from] Status),
    /// A connection could not be made.
    #[error("connecting to {target}: {}", causes(.source))]
    Connect {
        /// The address.
        target: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

impl From<DataError> for ClusterError {
    fn from(e: DataError) -> Self {
        ClusterError::Engine(EngineError::Data(e))
    }
}

/// An error and its causes, outermost first, as one line (tonic's transport errors say only
/// "transport error" themselves; the reason, a refused certificate say, is in their causes).
pub(crate) use lidscope_data::store::causes;

fn status_message(s: &Status) -> String {
    match s.code() {
        Code::Unauthenticated => format!("the coordinator refused the request: {} (check --token-file)", s.message()),
        Code::Unavailable => match std::error::Error::source(s) {
            Some(cause) => format!("the coordinator is unreachable: {}: {}", s.message(), causes(cause)),
            None => format!("the coordinator is unreachable: {}", s.message()),
        },
        _ => s.message().to_string(),
    }
}

impl ClusterError {
    /// Whether the caller's input is at fault (the same request fails again).
    pub fn is_bad_input(&self) -> bool {
        match self {
            ClusterError::Engine(e) => !e.is_transient(),
            ClusterError::Config(_) => true,
            ClusterError::Status(s) => matches!(s.code(), Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition | Code::Unauthenticated),
            _ => false,
        }
    }
}

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Self {
        let message = e.to_string();
        match &e {
            ClusterError::Engine(EngineError::Data(DataError::OutputExists { .. })) => Status::already_exists(message),
            ClusterError::Engine(EngineError::Usage(_)) => Status::invalid_argument(message),
            ClusterError::Status(s) => s.clone(),
            _ if e.is_bad_input() => Status::invalid_argument(message),
            _ => Status::internal(message),
        }
    }
}

/// Cluster result alias.
pub type Result<T> = std::result::Result<T, ClusterError>;
