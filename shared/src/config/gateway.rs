//! rest-gateway's section: its listener (and its TLS files), bearer tokens
//! and request limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, Secret, Section, PREFIX};

/// `enabled` (a token is required) or `disabled` (the cut-over's transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Enabled,
    Disabled,
}

/// The API listener's certificate chain and private key, PEM files
/// (`RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE`, `RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// rest-gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `RTMANAGER_INTERNAL_HTTP_ADDR` (`:8096` = all interfaces).
    pub listen: SocketAddr,
    /// HTTPS only when set (both files); `None`: plain HTTP, as the Go
    /// service served.
    pub tls: Option<TlsFiles>,
    /// One bearer token per line; reloaded on SIGHUP.
    pub api_tokens_file: Option<PathBuf>,
    /// Comma-separated bearer tokens.
    pub api_tokens: Secret,
    pub auth: AuthMode,
    pub request_timeout: Duration,
    pub body_limit: usize,
}

#[derive(Deserialize)]
pub struct GatewayEnv {
    #[serde(default = "d::internal_http_addr")]
    internal_http_addr: String,
    #[serde(default)]
    internal_http_tls_cert_file: String,
    #[serde(default)]
    internal_http_tls_key_file: String,
    #[serde(default)]
    api_tokens_file: String,
    #[serde(default)]
    api_tokens: Secret,
    #[serde(default = "d::api_auth")]
    api_auth: String,
    #[serde(default = "d::http_request_timeout", with = "humantime_serde")]
    http_request_timeout: Duration,
    #[serde(default = "d::http_body_limit")]
    http_body_limit: usize,
}

impl Section for GatewayConfig {
    type Raw = GatewayEnv;
    fn from_raw(raw: GatewayEnv) -> Result<Self, ConfigError> {
        ranges::check(&[
            ("HTTP_REQUEST_TIMEOUT", raw.http_request_timeout.into()),
            ("HTTP_BODY_LIMIT", raw.http_body_limit.into()),
        ])?;
        let auth = match raw.api_auth.as_str() {
            "enabled" => AuthMode::Enabled,
            "disabled" => AuthMode::Disabled,
            _ => return Err(ConfigError::var("API_AUTH", "must be enabled or disabled")),
        };
        let addr = &raw.internal_http_addr;
        let full = match addr.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => addr.clone(),
        };
        let listen = full
            .parse()
            .map_err(|e| ConfigError::var("INTERNAL_HTTP_ADDR", format!("{addr:?}: {e}")))?;
        let tls = match (
            raw.internal_http_tls_cert_file.as_str(),
            raw.internal_http_tls_key_file.as_str(),
        ) {
            ("", "") => None,
            (cert, key) if !cert.is_empty() && !key.is_empty() => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (cert, _) => {
                let (set, unset) = if cert.is_empty() {
                    ("KEY_FILE", "CERT_FILE")
                } else {
                    ("CERT_FILE", "KEY_FILE")
                };
                return Err(ConfigError(format!(
                    "{PREFIX}INTERNAL_HTTP_TLS_CERT_FILE and {PREFIX}INTERNAL_HTTP_TLS_KEY_FILE \
                     go together (HTTPS with both, plain HTTP with neither): \
                     {PREFIX}INTERNAL_HTTP_TLS_{set} is set, {PREFIX}INTERNAL_HTTP_TLS_{unset} is not"
                )));
            }
        };
        Ok(Self {
            listen,
            tls,
            api_tokens_file: (!raw.api_tokens_file.is_empty())
                .then(|| PathBuf::from(&raw.api_tokens_file)),
            api_tokens: raw.api_tokens,
            auth,
            request_timeout: raw.http_request_timeout,
            body_limit: raw.http_body_limit,
        })
    }
}

mod d {
    use std::time::Duration;

    pub fn internal_http_addr() -> String {
        ":8096".into()
    }
    pub fn api_auth() -> String {
        "enabled".into()
    }
    pub fn http_request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn http_body_limit() -> usize {
        64 * 1024
    }
}
