//! Decoding the daemon's answers into the port's types: inspect, stats and
//! health. Pure functions, so the arithmetic is unit-tested on recorded
//! answers of both cgroup versions.

use crate::domain::ContainerState;
use crate::ports::{ContainerInfo, ContainerStats, HealthInfo};

pub(super) fn docker_time(raw: Option<String>) -> Option<chrono::DateTime<chrono::Utc>> {
    raw.and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .filter(|t| t.timestamp() > 0)
}

pub(super) fn container_info(resp: bollard::models::ContainerInspectResponse) -> ContainerInfo {
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

/// Maps one Docker stats sample; `-1` for what this daemon (or cgroup
/// version) does not report.
pub(super) fn container_stats(sample: &bollard::models::ContainerStatsResponse) -> ContainerStats {
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
pub(super) fn cpu_percent(sample: &bollard::models::ContainerStatsResponse) -> f64 {
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

pub(super) fn health_info(resp: bollard::models::ContainerInspectResponse) -> HealthInfo {
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
