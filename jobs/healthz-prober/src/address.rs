//! Where a probe is sent (`RTMANAGER_PROBE_ADDRESS_MODE`).
//!
//! - `hostname` (default): `GET {engine_endpoint}/healthz` with the stored
//!   endpoint, `http://galaxy-game-{game_id}:8080`, as Game Master calls it.
//!   The name resolves only through Docker's DNS inside the engines' network,
//!   so the prober runs there: a `FROM scratch` container of the static binary
//!   attached to `RTMANAGER_DOCKER_NETWORK` (compose), or a pod that can
//!   resolve the engines. It exercises the same path as Game Master.
//! - `container_ip`: for a prober running on the Docker host itself (outside
//!   any container), where the host reaches bridge-network addresses but
//!   cannot resolve container names. It inspects the record's current
//!   container, takes its IP on the record's `docker_network` and probes
//!   `http://{ip}:{endpoint port}/healthz`. The address is cached per
//!   container id (in [`TargetState`]) and re-inspected after any failure.
//!   Docker being away skips the round (it is not the engine's failure); a
//!   missing container counts.
//!
//! Both modes need Docker reachable at start-up (the shared bootstrap pings
//! it); only `container_ip` uses it afterwards.

use std::time::Duration;

use shared::ports::{ContainerEngine, EngineError};

use crate::settings::AddressMode;
use crate::target::{Target, TargetState};
use shared::adapters::ProbeResult;

/// Where one probe of a target goes, or why it goes nowhere.
pub(crate) enum Address {
    /// `GET` this URL.
    Url(String),
    /// The engine is not there: a failure, without an HTTP exchange.
    Missing(ProbeResult),
    /// Docker could not answer: not the engine's failure, the slot is skipped.
    EngineUnavailable(EngineError),
}

/// The target's `/healthz` URL in `mode`. `timeout` is the probe timeout;
/// an inspect gets at least 2 s, since a slow Docker is not a slow engine.
pub(crate) async fn resolve(
    mode: AddressMode,
    engine: &dyn ContainerEngine,
    timeout: Duration,
    target: &Target,
    state: &mut TargetState,
) -> Address {
    match mode {
        AddressMode::Hostname => Address::Url(format!(
            "{}/healthz",
            target.engine_endpoint.trim_end_matches('/')
        )),
        AddressMode::ContainerIp => container_url(engine, timeout, target, state).await,
    }
}

/// `http://{ip}:{port}/healthz` of the target's container on its network,
/// cached per container.
async fn container_url(
    engine: &dyn ContainerEngine,
    timeout: Duration,
    target: &Target,
    state: &mut TargetState,
) -> Address {
    if let Some((container, url)) = &state.cached_url {
        if *container == target.container_id {
            return Address::Url(url.clone());
        }
    }
    let short = short_id(&target.container_id);
    let missing = |error: String| Address::Missing(ProbeResult::Unhealthy { status: 0, error });
    let inspect = tokio::time::timeout(
        timeout.max(Duration::from_secs(2)),
        engine.inspect_container(&target.container_id),
    )
    .await;
    let info = match inspect {
        Err(_) => {
            return Address::EngineUnavailable(EngineError::Unavailable("inspect timed out".into()))
        }
        Ok(Err(EngineError::NotFound(_))) | Ok(Ok(None)) => {
            return missing(format!("container {short} not found"))
        }
        Ok(Err(e)) => return Address::EngineUnavailable(e),
        Ok(Ok(Some(info))) => info,
    };
    let Some(ip) = info.addresses.get(&target.docker_network) else {
        return missing(format!(
            "container {short} has no address on network {} (state {})",
            target.docker_network, info.state
        ));
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    let url = format!("http://{host}:{}/healthz", target.endpoint_port());
    state.cached_url = Some((target.container_id.clone(), url.clone()));
    Address::Url(url)
}

/// The first 12 characters of a container id, as Docker shows it. The id
/// came from a row, so it is not trusted to be hex: never slice inside a
/// character.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_short_id_never_splits_a_character() {
        assert_eq!(super::short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(super::short_id("abc"), "abc");
        let odd = "aéééééééé";
        assert_eq!(super::short_id(odd), odd, "byte 12 is inside a character");
    }
}
