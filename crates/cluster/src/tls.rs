//! Mutual TLS between every node of a cluster.
//!
//! One CA signs every node's certificate; each node presents its own and accepts a peer only with
//! one the CA signed. That covers the three kinds of connection: clients and workers to the
//! coordinator (job API and scheduler), and the coordinator and workers to a worker's Arrow
//! Flight port. Flight calls carry no bearer token, so there the certificate is the only proof
//! of who is asking; on the coordinator's port the token stays as a second factor.
//!
//! A URL says which transport a peer speaks: `https://` with TLS files, `http://` without. The
//! two are never mixed silently (tonic would dial an `http://` URL in plaintext even with TLS
//! configured), so [`endpoint`] refuses either mismatch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ballista_core::extension::{BallistaConfigGrpcEndpoint, EndpointOverrideFn};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::error::{ClusterError, Result};

/// The PEM files one node needs: the cluster's CA certificate, this node's certificate (signed
/// by that CA) and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate every peer's certificate must be signed by.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// A node's TLS settings, read once from its [`TlsFiles`].
#[derive(Clone)]
pub struct Tls {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(<certificates>)")
    }
}

impl Tls {
    /// Reads the three files.
    ///
    /// # Errors
    /// A file that cannot be read or holds no PEM block of the kind its flag asks for (named by
    /// flag and path).
    pub fn load(files: &TlsFiles) -> Result<Self> {
        let ca = read_pem(&files.ca, "--tls-ca", "CERTIFICATE")?;
        let cert = read_pem(&files.cert, "--tls-cert", "CERTIFICATE")?;
        let key = read_pem(&files.key, "--tls-key", "PRIVATE KEY")?;
        Ok(Tls { ca: Certificate::from_pem(ca), identity: Identity::from_pem(cert, key) })
    }

    /// A server that presents this node's certificate and requires a client certificate signed
    /// by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// A client that trusts only the CA and presents this node's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone())
    }
}

fn read_pem(path: &Path, flag: &str, kind: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| ClusterError::Config(format!("{flag} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    // "BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY" and "BEGIN RSA PRIVATE KEY" all end so.
    let found = text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !found {
        return Err(ClusterError::Config(format!("{flag} {}: no PEM {kind} in the file", path.display())));
    }
    Ok(bytes)
}

/// An endpoint for `url` (`what` names the flag it came from): `https://` with `tls`, `http://`
/// without.
///
/// # Errors
/// A malformed URL, `https://` without TLS files, TLS files with an `http://` URL.
pub fn endpoint(url: &str, tls: Option<&Tls>, what: &str) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| ClusterError::Config(format!("{what} {url}: {e}")))?;
    let https = endpoint.uri().scheme_str() == Some("https");
    match (tls, https) {
        (Some(tls), true) => endpoint.tls_config(tls.client()).map_err(|e| ClusterError::Config(format!("{what} {url}: {e}"))),
        (None, false) => Ok(endpoint),
        (Some(_), false) => Err(ClusterError::Config(format!("{what} {url}: with --tls-ca/--tls-cert/--tls-key the URL must be https://"))),
        (None, true) => Err(ClusterError::Config(format!("{what} {url}: an https:// cluster needs --tls-ca, --tls-cert and --tls-key"))),
    }
}

/// How Ballista's clients (result fetches, shuffle reads) dial a worker's Flight port: with this
/// node's certificate, trusting only the CA. Ballista has made the URL `https://` already.
pub(crate) fn flight_endpoint(tls: &Tls) -> Arc<BallistaConfigGrpcEndpoint> {
    Arc::new(BallistaConfigGrpcEndpoint::new(flight_dial(tls)))
}

/// [`flight_endpoint`]'s hook itself, as a worker's session settings take it.
pub(crate) fn flight_dial(tls: &Tls) -> EndpointOverrideFn {
    let client = tls.client();
    Arc::new(move |e: Endpoint| Ok(e.tls_config(client.clone())?))
}

/// A TLS failure of a call to `url` as an error a person can act on; `None` for other errors.
pub(crate) fn handshake_error(url: &str, error: &(dyn std::error::Error + 'static)) -> Option<ClusterError> {
    is_tls_failure(error).then(|| {
        ClusterError::Config(format!(
            "the TLS handshake with {url} failed: {} (check --tls-ca, --tls-cert and --tls-key: both ends need certificates of the same CA)",
            crate::error::causes(error)
        ))
    })
}

/// A call whose connection the server dropped, as an error that names the likely cause; `None`
/// for other errors (a refused connection, a status the server sent).
///
/// Neither side of a failed TLS setup gets a clear reason: a TLS server reads plaintext HTTP/2 as
/// a bad handshake, and under TLS 1.3 a server checks the client's certificate after the client
/// thinks the handshake done; either way the server just closes, and tonic reports a transport
/// error ("h2 protocol error", "broken pipe", or, when the close wins the race with the request,
/// hyper's "operation was canceled: connection closed").
pub(crate) fn dropped_error(url: &str, status: &tonic::Status) -> Option<ClusterError> {
    let transport = std::error::Error::source(status).is_some();
    if !transport || !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::Cancelled) {
        return None;
    }
    let hint = if url.starts_with("https://") {
        "a server with mutual TLS drops a client whose certificate its CA did not sign (check --tls-ca, --tls-cert and --tls-key)"
    } else {
        "if the cluster uses mutual TLS, its URL is https:// and it needs --tls-ca, --tls-cert and --tls-key"
    };
    Some(ClusterError::Config(format!("{url} broke the connection ({}): {hint}", crate::error::causes(status))))
}

/// Whether `error` (or what caused it) is a TLS failure: a certificate refused by either side.
/// Such a failure repeats on every try, unlike a peer that is not up yet.
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}
