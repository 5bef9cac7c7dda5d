//! Docker adapter of [`ContainerEngine`], on bollard.
//!
//! bollard errors are mapped here, once: transport failures become
//! [`EngineError::Unavailable`] (the `docker_unavailable` code), daemon answers
//! become `NotFound`, `Conflict` or `Rejected`.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use crate::domain::labels::{LABEL_OWNER, LABEL_OWNER_VALUE};
use crate::domain::{ContainerState, EventAction};
use crate::ports::{
    ContainerEngine, ContainerInfo, ContainerSpec, ContainerStats, ContainerSummary, EngineError,
    EngineEvent, EngineEvents, HealthInfo, ImageInfo, LogChunks, LogOptions, PullPolicy,
};

/// Seconds bollard waits for one request; pulls stream, so this bounds a stall.
const REQUEST_TIMEOUT_SECS: u64 = 120;

#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// `unix:///var/run/docker.sock` or `tcp://host:port` (plain HTTP), as
    /// `RTMANAGER_DOCKER_HOST`.
    pub fn connect(host: &str) -> Result<Self, EngineError> {
        let docker = if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| EngineError::Unavailable(format!("{host}: {e}")))?;
        Ok(Self { docker })
    }
}

pub(crate) fn map_error(err: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => EngineError::NotFound(message),
            409 => EngineError::Conflict(message),
            _ => EngineError::Rejected(message),
        },
        E::JsonDataError { .. } | E::JsonSerdeError { .. } => {
            EngineError::Rejected(err.to_string())
        }
        other => EngineError::Unavailable(other.to_string()),
    }
}

fn not_found_is_none<T>(res: Result<T, bollard::errors::Error>) -> Result<Option<T>, EngineError> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) => match map_error(e) {
            EngineError::NotFound(_) => Ok(None),
            other => Err(other),
        },
    }
}

fn docker_time(raw: Option<String>) -> Option<chrono::DateTime<chrono::Utc>> {
    raw.and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .filter(|t| t.timestamp() > 0)
}

fn container_info(resp: bollard::models::ContainerInspectResponse) -> ContainerInfo {
    let state = resp.state.unwrap_or_default();
    let config = resp.config.unwrap_or_default();
    let addresses = resp
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| {
            endpoint
                .ip_address
                .filter(|ip| !ip.is_empty())
                .map(|ip| (name, ip))
        })
        .collect();
    ContainerInfo {
        id: resp.id.unwrap_or_default(),
        name: resp
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        state: state
            .status
            .map(|s| ContainerState::parse(s.as_ref()))
            .unwrap_or_default(),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| s != "none")
            .unwrap_or_default(),
        restart_count: resp.restart_count.unwrap_or(0),
        exit_code: state.exit_code.unwrap_or(0),
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: docker_time(state.started_at),
        finished_at: docker_time(state.finished_at),
        addresses,
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.docker.ping().await.map(drop).map_err(map_error)
    }

    async fn network_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(not_found_is_none(self.docker.inspect_network(name, None).await)?.is_some())
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), EngineError> {
        let present = not_found_is_none(self.docker.inspect_image(image).await)?.is_some();
        match policy {
            PullPolicy::Never if present => return Ok(()),
            PullPolicy::Never => {
                return Err(EngineError::NotFound(format!(
                    "image {image} is not present and the pull policy is never"
                )))
            }
            PullPolicy::IfMissing if present => return Ok(()),
            PullPolicy::IfMissing | PullPolicy::Always => {}
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| match map_error(e) {
                EngineError::Unavailable(m) => EngineError::Unavailable(m),
                other => EngineError::Rejected(format!("pull {image}: {other}")),
            })
    }

    async fn inspect_image(&self, image: &str) -> Result<ImageInfo, EngineError> {
        let resp = self.docker.inspect_image(image).await.map_err(map_error)?;
        Ok(ImageInfo {
            id: resp.id.unwrap_or_default(),
            labels: resp.config.and_then(|c| c.labels).unwrap_or_default(),
        })
    }

    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerInfo>, EngineError> {
        Ok(
            not_found_is_none(self.docker.inspect_container(id_or_name, None).await)?
                .map(container_info),
        )
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<ContainerInfo, EngineError> {
        let host_config = HostConfig {
            binds: Some(
                spec.mounts
                    .iter()
                    .map(|m| format!("{}:{}:rw", m.host_path, m.container_path))
                    .collect(),
            ),
            network_mode: Some(spec.network.clone()),
            nano_cpus: Some(spec.limits.cpu.nano_cpus()),
            memory: Some(spec.limits.memory.bytes()),
            pids_limit: Some(spec.limits.pids.get()),
            log_config: Some(HostConfigLogConfig {
                typ: Some(spec.log_driver.clone()),
                config: (!spec.log_opts.is_empty()).then(|| spec.log_opts.clone()),
            }),
            // No host port is ever published: the engine is reached over the network.
            publish_all_ports: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            hostname: Some(spec.hostname.clone()),
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(map_error)?;
        if let Err(start_err) = self.docker.start_container(&created.id, None).await {
            // Never leave a created-but-not-started container behind.
            let _ = self.remove(&created.id).await;
            return Err(match map_error(start_err) {
                EngineError::Unavailable(m) => EngineError::Unavailable(m),
                other => EngineError::Rejected(format!("start container: {other}")),
            });
        }
        match self.inspect_container(&created.id).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(EngineError::Rejected(format!(
                "container {} vanished right after start",
                created.id
            ))),
            Err(e) => {
                let _ = self.remove(&created.id).await;
                Err(e)
            }
        }
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(map_error)
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(id, Some(options))
            .await
            .map_err(map_error)
        {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            // A removal already under way is as good as done.
            Err(EngineError::Conflict(m)) if m.contains("already in progress") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, id: &str, timeout: std::time::Duration) -> Result<(), EngineError> {
        let options = StopContainerOptionsBuilder::default()
            .t(timeout.as_secs().min(i32::MAX as u64) as i32)
            .build();
        match self
            .docker
            .stop_container(id, Some(options))
            .await
            .map_err(map_error)
        {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_OWNER}={LABEL_OWNER_VALUE}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(map_error)?;
        Ok(listed
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                labels: c.labels.unwrap_or_default(),
                state: c
                    .state
                    .map(|s| ContainerState::parse(s.as_ref()))
                    .unwrap_or_default(),
                networks: {
                    let mut names: Vec<String> = c
                        .network_settings
                        .and_then(|n| n.networks)
                        .map(|n| n.into_keys().collect())
                        .unwrap_or_default();
                    names.sort();
                    names
                },
            })
            .collect())
    }

    fn events(&self, since_nano: Option<i64>) -> EngineEvents {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{LABEL_OWNER}={LABEL_OWNER_VALUE}")],
            ),
        ]);
        let mut builder = EventsOptionsBuilder::default().filters(&filters);
        if let Some(nano) = since_nano {
            // The daemon takes `seconds.nanoseconds`.
            builder = builder.since(&format!(
                "{}.{:09}",
                nano.div_euclid(1_000_000_000),
                nano.rem_euclid(1_000_000_000)
            ));
        }
        let stream = self.docker.events(Some(builder.build())).map(|item| {
            let message = item.map_err(map_error)?;
            let actor = message.actor.unwrap_or_default();
            let labels = actor.attributes.unwrap_or_default();
            Ok(EngineEvent {
                action: EventAction::parse(&message.action.unwrap_or_default()),
                container_id: actor.id.unwrap_or_default(),
                exit_code: labels.get("exitCode").and_then(|c| c.parse().ok()),
                labels,
                time_nano: message
                    .time_nano
                    .or(message.time.map(|t| t * 1_000_000_000))
                    .unwrap_or_default(),
            })
        });
        Box::pin(stream)
    }

    async fn daemon_id(&self) -> Result<String, EngineError> {
        let info = self.docker.info().await.map_err(map_error)?;
        info.id
            .filter(|id| !id.is_empty())
            .or(info.name)
            .ok_or_else(|| EngineError::Rejected("the daemon reports no id".into()))
    }

    async fn stats_snapshot(&self, id: &str) -> Result<ContainerStats, EngineError> {
        // `stream=false` is one answer. `one-shot` (API 1.41) would skip the
        // daemon's second sample and leave no CPU delta to compute a percent
        // from, so the daemon is let take its two samples (about a second).
        let options = bollard::query_parameters::StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(false)
            .build();
        let sample = self
            .docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| {
                EngineError::Unavailable(format!("stats of {id}: the daemon sent no sample"))
            })?
            .map_err(map_error)?;
        Ok(container_stats(&sample))
    }

    fn logs(&self, id: &str, options: &LogOptions) -> LogChunks {
        let query = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .timestamps(options.timestamps)
            .tail(&options.tail.to_string())
            .build();
        Box::pin(
            self.docker
                .logs(id, Some(query))
                .map(|item| item.map(|out| out.into_bytes().to_vec()).map_err(map_error)),
        )
    }

    async fn health_info(&self, id: &str) -> Result<Option<HealthInfo>, EngineError> {
        Ok(not_found_is_none(self.docker.inspect_container(id, None).await)?.map(health_info))
    }
}

/// Maps one Docker stats sample; `-1` for what this daemon (or cgroup
/// version) does not report.
fn container_stats(sample: &bollard::models::ContainerStatsResponse) -> ContainerStats {
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let memory = sample.memory_stats.as_ref();
    let usage = memory.and_then(|m| m.usage);
    // The reclaimable page cache, as `docker stats` subtracts it: cgroup v2
    // names it `inactive_file`, cgroup v1 `total_inactive_file`.
    let inactive = memory.and_then(|m| m.stats.as_ref()).and_then(|stats| {
        stats
            .get("inactive_file")
            .or_else(|| stats.get("total_inactive_file"))
            .copied()
    });
    let memory_used_bytes = match usage {
        Some(u) => signed(u.saturating_sub(inactive.filter(|i| *i < u).unwrap_or(0))),
        None => -1,
    };
    let memory_limit_bytes = memory
        .and_then(|m| m.limit)
        .filter(|l| *l > 0)
        .map_or(-1, signed);

    let (network_rx_bytes, network_tx_bytes) = match &sample.networks {
        Some(nets) if !nets.is_empty() => (
            signed(nets.values().filter_map(|n| n.rx_bytes).sum()),
            signed(nets.values().filter_map(|n| n.tx_bytes).sum()),
        ),
        _ => (-1, -1),
    };

    let blkio = sample
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref());
    let block = |op: &str| match blkio {
        Some(entries) => signed(
            entries
                .iter()
                .filter(|e| e.op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(op)))
                .filter_map(|e| e.value)
                .sum(),
        ),
        None => -1,
    };

    ContainerStats {
        cpu_percent: cpu_percent(sample),
        memory_used_bytes,
        memory_limit_bytes,
        network_rx_bytes,
        network_tx_bytes,
        block_read_bytes: block("read"),
        block_write_bytes: block("write"),
        read_at: docker_time(sample.read.clone()),
    }
}

/// The Docker CLI's formula: the container's share of the host's CPU time
/// between the two samples, times the online CPUs. `-1` without a previous
/// sample (a one-shot answer, or a container that is not running).
fn cpu_percent(sample: &bollard::models::ContainerStatsResponse) -> f64 {
    let (Some(cpu), Some(pre)) = (sample.cpu_stats.as_ref(), sample.precpu_stats.as_ref()) else {
        return -1.0;
    };
    let total = |s: &bollard::models::ContainerCpuStats| s.cpu_usage.as_ref()?.total_usage;
    let (Some(now), Some(before), Some(sys_now), Some(sys_before)) = (
        total(cpu),
        total(pre),
        cpu.system_cpu_usage,
        pre.system_cpu_usage,
    ) else {
        return -1.0;
    };
    let online = cpu
        .online_cpus
        .filter(|n| *n > 0)
        .map(f64::from)
        .or_else(|| {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|p| p.len() as f64)
        })
        .unwrap_or(1.0);
    let cpu_delta = now.saturating_sub(before) as f64;
    let system_delta = sys_now.saturating_sub(sys_before) as f64;
    if system_delta <= 0.0 {
        return 0.0;
    }
    cpu_delta / system_delta * online * 100.0
}

fn health_info(resp: bollard::models::ContainerInspectResponse) -> HealthInfo {
    let defined = resp
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.test.as_ref())
        .and_then(|t| t.first())
        .is_some_and(|first| first != "NONE");
    let health = resp.state.and_then(|s| s.health);
    let status = health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    let last_output = health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|r| r.output.clone())
        .unwrap_or_default();
    HealthInfo {
        has_healthcheck: defined || status.is_some(),
        status: status.unwrap_or_else(|| "none".to_owned()),
        failing_streak: health.as_ref().and_then(|h| h.failing_streak).unwrap_or(0),
        last_output,
    }
}

#[cfg(test)]
mod monitoring_tests {
    use super::{container_stats, cpu_percent};

    fn sample(json: serde_json::Value) -> bollard::models::ContainerStatsResponse {
        serde_json::from_value(json).expect("stats sample")
    }

    #[test]
    fn cgroup_v1_stats_subtract_total_inactive_file_and_sum_networks_and_blkio() {
        let s = container_stats(&sample(serde_json::json!({
            "read": "2026-11-22T10:00:01.5Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64, "online_cpus": 2},
            "memory_stats": {"usage": 10_000, "limit": 67_108_864, "stats": {"total_inactive_file": 4_000, "cache": 5_000}},
            "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 10}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 7},
                {"major": 8, "minor": 0, "op": "Write", "value": 9},
                {"major": 8, "minor": 16, "op": "Read", "value": 1},
                {"major": 8, "minor": 0, "op": "Total", "value": 16}
            ]}
        })));
        assert_eq!(s.cpu_percent, 20.0);
        assert_eq!(s.memory_used_bytes, 6_000);
        assert_eq!(s.memory_limit_bytes, 64 * 1024 * 1024);
        assert_eq!((s.network_rx_bytes, s.network_tx_bytes), (101, 12));
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (8, 9));
        assert!(s.read_at.is_some());
    }

    #[test]
    fn cgroup_v2_stats_subtract_inactive_file_and_lowercase_ops_count() {
        let s = container_stats(&sample(serde_json::json!({
            "memory_stats": {"usage": 10_000, "limit": 1_000_000, "stats": {"inactive_file": 1_000, "anon": 9_000}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 254, "minor": 0, "op": "read", "value": 3},
                {"major": 254, "minor": 0, "op": "write", "value": 4}
            ]}
        })));
        assert_eq!(s.memory_used_bytes, 9_000);
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (3, 4));
    }

    #[test]
    fn what_the_daemon_does_not_report_is_minus_one() {
        // A one-shot sample, or a container that is not running.
        let s = container_stats(&sample(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 5}},
            "precpu_stats": {},
            "memory_stats": {},
            "blkio_stats": {}
        })));
        assert_eq!(s.cpu_percent, -1.0);
        assert_eq!(s.memory_used_bytes, -1);
        assert_eq!(s.memory_limit_bytes, -1);
        assert_eq!((s.network_rx_bytes, s.network_tx_bytes), (-1, -1));
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (-1, -1));
        assert!(s.read_at.is_none());
    }

    #[test]
    fn an_idle_interval_is_zero_percent_not_unavailable() {
        let s = sample(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 5, "percpu_usage": [5, 0, 0, 0]}, "system_cpu_usage": 100},
            "precpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 100}
        }));
        assert_eq!(cpu_percent(&s), 0.0);
    }
}
