//! inspect-cron's own metrics (served with `--every`), and its passes as
//! rows of `cron_passes` (every pass, one-shot too: the gateway's `/metrics`
//! shows the last one, so an overdue or failing pass can alert).

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::telemetry::{buckets, histogram, FloatGauge, MetricGroup};

use crate::inspector::{PassError, PassReport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    /// `unhealthy`, `adopted`, `disposed` or `exited`.
    pub kind: String,
}

#[derive(Clone)]
pub struct InspectMetrics {
    pub pass_duration: Histogram,
    pub inspected: Counter,
    pub findings: Family<FindingLabels, Counter>,
    pub last_success: FloatGauge,
}

impl MetricGroup for InspectMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            pass_duration: histogram(buckets::WORK),
            inspected: Counter::default(),
            findings: Family::default(),
            last_success: FloatGauge::default(),
        };
        registry.register(
            "inspect_pass_duration_seconds",
            "Inspect passes, finished or failed",
            m.pass_duration.clone(),
        );
        registry.register(
            "inspect_containers_inspected",
            "Containers inspected within RTMANAGER_INSPECT_TIMEOUT",
            m.inspected.clone(),
        );
        registry.register(
            "inspect_findings",
            "What passes found and settled, by kind (unhealthy, adopted, disposed, exited)",
            m.findings.clone(),
        );
        registry.register(
            "inspect_last_success_timestamp_seconds",
            "Unix time the last successful pass of this process finished",
            m.last_success.clone(),
        );
        m
    }
}

impl InspectMetrics {
    /// Moves the metrics by one pass that took `seconds`.
    pub fn pass(&self, seconds: f64, outcome: &Option<Result<PassReport, PassError>>) {
        self.pass_duration.observe(seconds);
        let Some(Ok(report)) = outcome else {
            return;
        };
        self.inspected.inc_by(report.inspected.len() as u64);
        for (kind, found) in [
            ("unhealthy", report.unhealthy.len()),
            ("adopted", report.adopted.len()),
            ("disposed", report.disposed.len()),
            ("exited", report.observed_exits.len()),
        ] {
            self.findings
                .get_or_create(&FindingLabels {
                    kind: kind.to_owned(),
                })
                .inc_by(found as u64);
        }
        self.last_success
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }
}

/// A pass's counts for `cron_passes`, or why it failed.
pub fn counts(
    outcome: &Option<Result<PassReport, PassError>>,
) -> Result<BTreeMap<String, i64>, String> {
    let report = match outcome {
        Some(Ok(report)) => report,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("interrupted by shutdown".to_owned()),
    };
    Ok([
        ("listed", report.listed),
        ("inspected", report.inspected.len()),
        ("timed_out", report.timed_out.len()),
        ("failed", report.failed.len()),
        ("busy", report.busy.len()),
        ("superseded", report.superseded.len()),
        ("unhealthy", report.unhealthy.len()),
        ("adopted", report.adopted.len()),
        ("disposed", report.disposed.len()),
        ("exited", report.observed_exits.len()),
        ("ignored", report.ignored.len()),
        ("reconciled", usize::from(report.reconciled)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v as i64))
    .collect())
}
