//! `lidscope certs`: a cluster CA and node certificates, for a first try and for tests.
//!
//! A team with its own PKI should use it; this makes what mutual TLS needs with no other tool.
//! Every node certificate is good for both ends of a connection (server and client
//! authentication), since coordinators and workers are both. The CA's key is kept beside its
//! certificate so that nodes can be added later: a second call into the same directory signs the
//! new nodes with the existing CA instead of making a new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::error::{ClusterError, Result};

/// The CA's subject: the same on every call, so that a reloaded CA key signs as the CA did.
const CA_NAME: &str = "lidscope cluster CA";
/// File names in the output directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (keep it off the nodes).
pub const CA_KEY: &str = "ca.key";

/// One node to certify: its name (the files' stem and the certificate's common name) and the
/// host names or IP addresses peers reach it by.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `coordinator`, `worker-1`, `client`, ...
    pub name: String,
    /// DNS names and IP addresses (subject alternative names).
    pub hosts: Vec<String>,
}

impl Node {
    /// `NAME` or `NAME=HOST,HOST,...`; a bare name is reachable as itself, `localhost` and
    /// `127.0.0.1` (a first try on one machine).
    ///
    /// # Errors
    /// An empty name or one that is not a plain file name.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let (name, hosts) = match spec.split_once('=') {
            Some((n, h)) => (n, h.split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect::<Vec<_>>()),
            None => (spec, Vec::new()),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || name.starts_with('.') {
            return Err(format!("{name:?}: a node name is letters, digits, '-', '_' and '.'"));
        }
        let hosts = if hosts.is_empty() { vec![name.to_string(), "localhost".into(), "127.0.0.1".into()] } else { hosts };
        Ok(Node { name: name.to_string(), hosts })
    }
}

/// What [`create`] wrote.
#[derive(Debug)]
pub struct Written {
    /// Whether the CA was made now (false: an existing one signed the nodes).
    pub new_ca: bool,
    /// `<dir>/ca.pem`.
    pub ca: PathBuf,
    /// Each node's certificate and key.
    pub nodes: Vec<(PathBuf, PathBuf)>,
}

/// Writes `<dir>/<node>.pem` and `<dir>/<node>.key` for every node, signed by the CA in `dir`
/// (made first when `dir` has none). Keys are written readable by their owner only.
///
/// # Errors
/// A node whose files exist already (nothing is overwritten), an unreadable CA key, a failed write.
pub fn create(dir: &Path, nodes: &[Node]) -> Result<Written> {
    let fail = |p: &Path, e: &dyn std::fmt::Display| ClusterError::Config(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    for n in nodes {
        for p in [dir.join(format!("{}.pem", n.name)), dir.join(format!("{}.key", n.name))] {
            if p.exists() {
                return Err(ClusterError::Config(format!("{}: exists already (node names must be new)", p.display())));
            }
        }
    }
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let year = this_year();
    let new_ca = !ca_key.exists();
    let key = if new_ca {
        if ca_cert.exists() {
            return Err(ClusterError::Config(format!("{}: a CA certificate without its key {}", ca_cert.display(), ca_key.display())));
        }
        let key = KeyPair::generate().map_err(|e| fail(&ca_key, &e))?;
        let mut params = ca_params();
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        let cert = params.self_signed(&key).map_err(|e| fail(&ca_cert, &e))?;
        write_private(&ca_key, &key.serialize_pem())?;
        std::fs::write(&ca_cert, cert.pem()).map_err(|e| fail(&ca_cert, &e))?;
        key
    } else {
        let pem = std::fs::read_to_string(&ca_key).map_err(|e| fail(&ca_key, &e))?;
        KeyPair::from_pem(&pem).map_err(|e| fail(&ca_key, &e))?
    };
    let issuer = Issuer::new(ca_params(), key);
    let mut written = Vec::new();
    for n in nodes {
        let (cert_path, key_path) = (dir.join(format!("{}.pem", n.name)), dir.join(format!("{}.key", n.name)));
        let mut params = CertificateParams::new(n.hosts.clone()).map_err(|e| ClusterError::Config(format!("node {}: {e}", n.name)))?;
        params.distinguished_name.push(DnType::CommonName, n.name.as_str());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
        let key = KeyPair::generate().map_err(|e| fail(&key_path, &e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| fail(&cert_path, &e))?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(|e| fail(&cert_path, &e))?;
        written.push((cert_path, key_path));
    }
    Ok(Written { new_ca, ca: ca_cert, nodes: written })
}

/// The CA's parameters but for its validity (which a signer does not need).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))
}

/// The calendar year now (to the day is not needed: validity starts a year back).
fn this_year() -> i32 {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    1970 + (days as f64 / 365.2425) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs() {
        assert_eq!(Node::parse("w1").unwrap().hosts, ["w1", "localhost", "127.0.0.1"]);
        assert_eq!(Node::parse("c=10.0.0.5, coord.lan").unwrap(), Node { name: "c".into(), hosts: vec!["10.0.0.5".into(), "coord.lan".into()] });
        assert!(Node::parse("../x").is_err() && Node::parse("=h").is_err());
    }

    #[test]
    fn a_second_call_signs_with_the_same_ca_and_overwrites_nothing() {
        let d = tempfile::tempdir().unwrap();
        let first = create(d.path(), &[Node::parse("a").unwrap()]).unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        let second = create(d.path(), &[Node::parse("b").unwrap()]).unwrap();
        assert!(first.new_ca && !second.new_ca);
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca, "the CA was replaced");
        assert!(create(d.path(), &[Node::parse("a").unwrap()]).is_err(), "node a overwritten");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&second.nodes[0].1).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
