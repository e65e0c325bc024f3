//! The bearer token that guards the coordinator's port.
//!
//! One shared secret: the coordinator accepts a call only with `authorization: Bearer <token>`,
//! compared in constant time; clients and workers send it on every call. It protects the job API
//! and the Ballista scheduler service alike, since both are served on the coordinator's port.
//! Workers' Arrow Flight ports (results and shuffle data between workers) carry no token: there
//! a client certificate is the check ([`crate::tls`]); without TLS, keep them on a private
//! network (see docs/cluster.md). Under TLS the token is the second factor on the coordinator's
//! port, and no longer travels in clear.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::{ClusterError, Result};

/// The environment variable a token may come from when no `--token-file` is given.
pub const TOKEN_ENV: &str = "LIDSCOPE_TOKEN";

/// A token, never printed.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl Token {
    /// The token in `file` (surrounding whitespace ignored), or else in `$LIDSCOPE_TOKEN`.
    ///
    /// # Errors
    /// An unreadable or empty file, a token that cannot be sent as a header, or neither source.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let (text, origin) = match file {
            Some(f) => (std::fs::read_to_string(f).map_err(|e| ClusterError::Config(format!("{}: {e}", f.display())))?, f.display().to_string()),
            None => match std::env::var(TOKEN_ENV) {
                Ok(t) => (t, format!("${TOKEN_ENV}")),
                Err(_) => return Err(ClusterError::Config(format!("no token: give --token-file or set {TOKEN_ENV}"))),
            },
        };
        Self::new(text.trim()).map_err(|e| ClusterError::Config(format!("{origin}: {e}")))
    }

    /// A token from its text.
    ///
    /// # Errors
    /// Empty, or not printable ASCII.
    pub fn new(text: &str) -> std::result::Result<Self, String> {
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".into());
        }
        Ok(Token(text.to_string()))
    }

    fn header(&self) -> MetadataValue<Ascii> {
        format!("Bearer {}", self.0).parse().expect("printable ASCII is a valid header")
    }
}

/// Server side: refuses calls without the token.
#[derive(Clone)]
pub struct RequireToken(Token);

impl RequireToken {
    /// Accepts `token` only.
    pub fn new(token: Token) -> Self {
        RequireToken(token)
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let given = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), self.0 .0.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated("no bearer token (authorization: Bearer <token>)")),
        }
    }
}

/// Client side: sends the token.
#[derive(Clone)]
pub struct SendToken(MetadataValue<Ascii>);

impl SendToken {
    /// Sends `token` on every call.
    pub fn new(token: &Token) -> Self {
        SendToken(token.header())
    }
}

impl Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_passes() {
        let t = Token::new("s3cret").unwrap();
        let mut check = RequireToken::new(t.clone());
        let mut send = SendToken::new(&t);
        assert!(check.call(send.call(Request::new(())).unwrap()).is_ok());
        let e = check.call(Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let wrong = SendToken::new(&Token::new("s3cres").unwrap()).call(Request::new(())).unwrap();
        assert_eq!(check.call(wrong).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(Token::new("").is_err() && Token::new("a b").is_err());
        assert_eq!(format!("{t:?}"), "Token(<hidden>)");
    }
}
