//! `<job> healthcheck`: one `GET /healthz` of the process's own metrics
//! listener (`RTMANAGER_METRICS_ADDR`), for the container health checks of
//! compose: a scratch image has no shell and no curl, so the binary checks
//! itself. Exit 0 on a 2xx answer, 1 otherwise, with one line saying which.
//!
//! It reads only `RTMANAGER_METRICS_ADDR` (the container's environment is
//! the process's), connects nothing else and logs nothing. An unspecified
//! listen address (`0.0.0.0`, `[::]`) is checked on the loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::adapters::http_probe::{http_client, http_probe, ProbeResult};
use crate::config::{Env, ProcessConfig};

/// The argument that asks for the check: `<job> healthcheck`.
pub const ARG: &str = "healthcheck";

/// Bound on the whole check; below compose's `timeout` (5 s) so the check
/// answers itself instead of being killed.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the process was started as `<job> healthcheck`.
pub fn requested() -> bool {
    let mut args = std::env::args().skip(1);
    matches!((args.next(), args.next()), (Some(a), None) if a == ARG)
}

/// The URL of the process's own `/healthz`, from `RTMANAGER_METRICS_ADDR`.
pub fn url(metrics_addr: Option<&str>) -> anyhow::Result<String> {
    let raw = metrics_addr.ok_or_else(|| {
        anyhow::anyhow!("RTMANAGER_METRICS_ADDR is empty: the process serves no /healthz to check")
    })?;
    let addr: SocketAddr = raw
        .parse()
        .map_err(|e| anyhow::anyhow!("RTMANAGER_METRICS_ADDR {raw:?}: {e}"))?;
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "http://{}/healthz",
        SocketAddr::new(ip, addr.port())
    ))
}

/// `<job> healthcheck`: `Ok` (exit 0) with the line printed when `/healthz`
/// answers 2xx; an error of one line (exit 1) otherwise.
pub async fn run() -> anyhow::Result<()> {
    let process: ProcessConfig = Env::from_process()
        .section()
        .map_err(|e| anyhow::anyhow!("unhealthy: {e}"))?;
    let url =
        url(process.metrics_addr.as_deref()).map_err(|e| anyhow::anyhow!("unhealthy: {e}"))?;
    let client = http_client(TIMEOUT).map_err(|e| anyhow::anyhow!("unhealthy: {e}"))?;
    match http_probe(&client, &url, TIMEOUT).await {
        ProbeResult::Healthy { status } => {
            println!("healthy: GET {url} answered {status}");
            Ok(())
        }
        ProbeResult::Unhealthy { error, .. } => anyhow::bail!("unhealthy: GET {url}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_goes_to_the_loopback_when_the_listener_binds_every_address() {
        assert_eq!(
            url(Some("0.0.0.0:9464")).unwrap(),
            "http://127.0.0.1:9464/healthz"
        );
        assert_eq!(url(Some("[::]:9464")).unwrap(), "http://[::1]:9464/healthz");
        assert_eq!(
            url(Some("10.1.2.3:9000")).unwrap(),
            "http://10.1.2.3:9000/healthz"
        );
        let empty = url(None).unwrap_err().to_string();
        assert!(empty.contains("RTMANAGER_METRICS_ADDR"), "{empty}");
        let bad = url(Some(":9464")).unwrap_err().to_string();
        assert!(bad.contains("RTMANAGER_METRICS_ADDR"), "{bad}");
    }
}
