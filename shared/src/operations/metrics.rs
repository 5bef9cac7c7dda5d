//! The lifecycle operations' own metrics, registered in the processes that
//! run operations (start-job, stop-job, rest-gateway, cleanup-cron):
//! `rtmanager_operation_duration_seconds{op_kind,outcome}`,
//! `rtmanager_lease_acquire_duration_seconds` and
//! `rtmanager_lease_conflicts_total`. (`rtmanager_operations_total` is a
//! shared counter, older than these.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::telemetry::{buckets, histogram, HistogramFamily, MetricGroup};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub op_kind: String,
    pub outcome: String,
}

#[derive(Clone)]
pub struct OperationMetrics {
    /// From the request to the recorded outcome, the lease wait included.
    pub duration: HistogramFamily<DurationLabels>,
    /// Taking the game's lock: the lease and its fencing token.
    pub lease_acquire: Histogram,
    /// Leases found held by another operation (`conflict`).
    pub lease_conflicts: Counter,
}

impl MetricGroup for OperationMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            duration: Family::new_with_constructor(|| histogram(buckets::WORK)),
            lease_acquire: histogram(buckets::CALL),
            lease_conflicts: Counter::default(),
        };
        registry.register(
            "operation_duration_seconds",
            "Lifecycle operations, by kind and outcome",
            m.duration.clone(),
        );
        registry.register(
            "lease_acquire_duration_seconds",
            "Taking a game's lease and fencing token, granted or not",
            m.lease_acquire.clone(),
        );
        registry.register(
            "lease_conflicts",
            "Game leases found held by another operation",
            m.lease_conflicts.clone(),
        );
        m
    }
}
