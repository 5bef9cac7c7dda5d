//! rest-gateway's section: its listener, bearer tokens and request limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, Secret, Section};

/// `enabled` (a token is required) or `disabled` (the cut-over's transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Enabled,
    Disabled,
}

/// rest-gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `RTMANAGER_INTERNAL_HTTP_ADDR` (`:8096` = all interfaces).
    pub listen: SocketAddr,
    /// One bearer token per line; reloaded on SIGHUP.
    pub api_tokens_file: Option<std::path::PathBuf>,
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
        Ok(Self {
            listen,
            api_tokens_file: (!raw.api_tokens_file.is_empty())
                .then(|| std::path::PathBuf::from(&raw.api_tokens_file)),
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
