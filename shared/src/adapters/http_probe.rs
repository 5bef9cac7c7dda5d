//! One `GET /healthz` and its classification: a 2xx answer is a success;
//! anything else (another status, a timeout, a refused or reset connection,
//! a failed name lookup) is a failure, described for operators in the
//! `last_error` of `probe_failed` (e.g. `timeout after 2s`, `connection
//! refused`, `status 500`; `last_status` 0 without a response).
//!
//! One [`ProbeClient`] ([`http_client`]: reqwest on hyper's keep-alive pool,
//! idle connections kept longer than the interval) serves every probe, so a
//! healthy engine is probed over one long-lived connection instead of a
//! connect per probe. This adapter is the only code of the prober that
//! speaks reqwest.

use std::time::Duration;

/// One HTTP probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Healthy {
        status: u16,
    },
    /// `status` is 0 when no response arrived.
    Unhealthy {
        status: u16,
        error: String,
    },
}

impl ProbeResult {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy { .. })
    }
}

/// Bytes of a `/healthz` body read (and discarded) so the connection can go
/// back to the pool; a longer body is cut and its connection not reused.
const MAX_BODY: usize = 64 * 1024;

/// The HTTP client of the probes (cheap to clone: one shared pool).
#[derive(Clone)]
pub struct ProbeClient(reqwest::Client);

/// The probe client could not be built (no TLS or resolver backend).
#[derive(Debug, thiserror::Error)]
#[error("building the probe HTTP client: {0}")]
pub struct ProbeClientError(String);

/// The one client every probe uses: no proxy (proxy variables must not
/// reroute engine traffic), no redirects, Nagle off, and idle connections
/// kept beyond one interval so the next round reuses them.
pub fn http_client(interval: Duration) -> Result<ProbeClient, ProbeClientError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout((interval * 3).max(Duration::from_secs(90)))
        .user_agent(concat!(
            "rtmanager-healthz-prober/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| ProbeClientError(e.to_string()))?;
    Ok(ProbeClient(client))
}

/// `GET url` within `timeout`, classified. The bare HTTP part of a probe.
pub async fn http_probe(client: &ProbeClient, url: &str, timeout: Duration) -> ProbeResult {
    let response = match client.0.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => {
            return ProbeResult::Unhealthy {
                status: 0,
                error: describe(&e, timeout),
            }
        }
    };
    let status = response.status().as_u16();
    let mut response = response;
    let mut read = 0usize;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return ProbeResult::Unhealthy {
                    status,
                    error: describe(&e, timeout),
                }
            }
        }
    }
    if (200..300).contains(&status) {
        ProbeResult::Healthy { status }
    } else {
        ProbeResult::Unhealthy {
            status,
            error: format!("status {status}"),
        }
    }
}

/// The failure's class for `rtmanager_probes_total{reason}`, from the
/// wording [`describe`] gives it: `timeout`, `connect` (refused, reset,
/// aborted, failed), `dns`, `status` (an answer that is not 2xx), `request`
/// (anything else); empty for a healthy probe.
pub fn failure_reason(result: &ProbeResult) -> &'static str {
    let ProbeResult::Unhealthy { error, .. } = result else {
        return "";
    };
    if error.starts_with("timeout") {
        "timeout"
    } else if error.starts_with("connection") {
        "connect"
    } else if error.starts_with("dns") {
        "dns"
    } else if error.starts_with("status") {
        "status"
    } else {
        "request"
    }
}

/// An operator-readable `last_error`: short, stable wording for the common
/// cases, the innermost cause otherwise.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timeout after {}", humantime::format_duration(timeout));
    }
    let mut innermost: &dyn std::error::Error = err;
    let mut chain = String::new();
    let mut io_kind = None;
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        chain.push_str(&e.to_string());
        chain.push('\n');
        innermost = e;
        source = e.source();
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::ConnectionRefused) => return "connection refused".into(),
        Some(K::ConnectionReset) => return "connection reset".into(),
        Some(K::ConnectionAborted) => return "connection aborted".into(),
        Some(K::TimedOut) => {
            return format!("timeout after {}", humantime::format_duration(timeout))
        }
        _ => {}
    }
    if chain.contains("dns error") {
        return format!("dns lookup failed: {innermost}");
    }
    if err.is_connect() {
        return format!("connection failed: {innermost}");
    }
    format!("request failed: {innermost}")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(reply: &'static [u8], delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(delay).await;
            let _ = s.write_all(reply).await;
        });
        format!("http://{addr}/healthz")
    }

    #[tokio::test]
    async fn failures_are_described_for_operators() {
        let client = http_client(Duration::from_secs(1)).unwrap();
        let timeout = Duration::from_millis(300);

        let url = serve_once(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let status_500 = http_probe(&client, &url, timeout).await;
        assert_eq!(
            status_500,
            ProbeResult::Unhealthy {
                status: 500,
                error: "status 500".into()
            }
        );
        assert_eq!(failure_reason(&status_500), "status");

        let url = serve_once(b"", Duration::from_secs(5)).await;
        let timed_out = http_probe(&client, &url, timeout).await;
        assert_eq!(
            timed_out,
            ProbeResult::Unhealthy {
                status: 0,
                error: "timeout after 300ms".into()
            }
        );
        assert_eq!(failure_reason(&timed_out), "timeout");

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let refused = http_probe(&client, &format!("http://{addr}/healthz"), timeout).await;
        assert_eq!(
            refused,
            ProbeResult::Unhealthy {
                status: 0,
                error: "connection refused".into()
            }
        );
        assert_eq!(failure_reason(&refused), "connect");

        let url = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Duration::ZERO,
        )
        .await;
        let healthy = http_probe(&client, &url, timeout).await;
        assert_eq!(healthy, ProbeResult::Healthy { status: 200 });
        assert_eq!(failure_reason(&healthy), "");
    }
}
