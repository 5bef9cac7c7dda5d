//! healthz-prober's own metrics: probes by result and reason, their
//! latency, the targets of this shard, the refresh rounds, how late probes
//! start behind their slots, and streak transitions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::telemetry::{buckets, histogram, FloatGauge, MetricGroup};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `ok` or `failed`.
    pub result: String,
    /// Empty on `ok`; else `timeout`, `connect`, `dns`, `status`,
    /// `request`, `missing` (no container, or no address on its network).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `failed` (a `probe_failed` committed) or `recovered`.
    pub transition: String,
}

#[derive(Clone)]
pub struct ProberMetrics {
    pub probes: Family<ProbeLabels, Counter>,
    /// The HTTP exchange of one probe.
    pub probe_duration: Histogram,
    /// Targets of this shard after the last refresh.
    pub targets: Gauge,
    /// One refresh round: the targets read and the probe tasks reconciled.
    pub round_duration: Histogram,
    /// The latest start of a probe behind its slot, per refresh round.
    pub round_lag: FloatGauge,
    pub transitions: Family<TransitionLabels, Counter>,
    /// The largest lag (ms + 1; 0: no probe) since the last round.
    max_lag_ms: Arc<AtomicU64>,
}

impl ProberMetrics {
    /// One probe's outcome; `reason` empty for a healthy one.
    pub fn probed(&self, reason: &str) {
        let result = if reason.is_empty() { "ok" } else { "failed" };
        self.probes
            .get_or_create(&ProbeLabels {
                result: result.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A probe started `lag_ms` after its slot.
    pub fn started_late(&self, lag_ms: u64) {
        self.max_lag_ms
            .fetch_max(lag_ms.saturating_add(1), Ordering::Relaxed);
    }

    /// At each refresh round: the round's lag gauge from the probes since
    /// the last one (kept as it was when none ran).
    pub fn end_lag_window(&self) {
        let max = self.max_lag_ms.swap(0, Ordering::Relaxed);
        if max > 0 {
            self.round_lag.set((max - 1) as f64 / 1000.0);
        }
    }

    pub fn transition(&self, transition: &str) {
        self.transitions
            .get_or_create(&TransitionLabels {
                transition: transition.to_owned(),
            })
            .inc();
    }
}

impl MetricGroup for ProberMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            probes: Family::default(),
            probe_duration: histogram(buckets::CALL),
            targets: Gauge::default(),
            round_duration: histogram(buckets::CALL),
            round_lag: FloatGauge::default(),
            transitions: Family::default(),
            max_lag_ms: Arc::default(),
        };
        registry.register(
            "probes",
            "Engine /healthz probes, by result and failure reason",
            m.probes.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "The HTTP exchange of one probe",
            m.probe_duration.clone(),
        );
        registry.register(
            "prober_targets",
            "Running games of this shard being probed",
            m.targets.clone(),
        );
        registry.register(
            "prober_round_duration_seconds",
            "One refresh round: the targets read from PostgreSQL and the probe tasks reconciled",
            m.round_duration.clone(),
        );
        registry.register(
            "prober_round_lag_seconds",
            "How far behind its slot the latest probe started, over the last refresh round",
            m.round_lag.clone(),
        );
        registry.register(
            "prober_streak_transitions",
            "probe_failed (failed) and probe_recovered (recovered) committed",
            m.transitions.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_lag_is_the_largest_of_its_window_and_survives_an_empty_one() {
        let m = ProberMetrics::register(&mut Registry::default());
        m.started_late(20);
        m.started_late(1500);
        m.started_late(3);
        m.end_lag_window();
        assert_eq!(m.round_lag.get(), 1.5);
        m.end_lag_window();
        assert_eq!(m.round_lag.get(), 1.5);
        m.started_late(0);
        m.end_lag_window();
        assert_eq!(m.round_lag.get(), 0.0);
    }
}
