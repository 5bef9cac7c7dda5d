//! What a consumer tells `/readyz` and `/metrics`: its group exists
//! (`consumer_group`), and how far behind it is
//! (`rtmanager_consumer_group_lag`, `_pending`,
//! `rtmanager_consumer_oldest_pending_age_seconds`, by stream). Both come
//! from one `XINFO GROUPS` (and an `XPENDING` summary when entries are
//! pending) at each evaluation, not from the consumer loop: a wedged loop
//! still shows its growing lag.

use crate::adapters::ConsumerGroup;
use crate::readiness::Readiness;
use crate::telemetry::{Metrics, StreamLabels};

use super::{JobHandler, StreamConsumer};

impl<H: JobHandler> StreamConsumer<H> {
    /// Adds the `consumer_group` check to `readiness`.
    pub fn register_readiness(&self, readiness: &Readiness) {
        let group = self.group.clone();
        let metrics = self.metrics.clone();
        let labels = self.labels();
        readiness.add("consumer_group", move || {
            let (group, metrics, labels) = (group.clone(), metrics.clone(), labels.clone());
            async move { report(&group, &metrics, &labels).await }
        });
    }
}

/// Reads the group's status into the gauges; an error when it is missing.
async fn report(
    group: &ConsumerGroup,
    metrics: &Metrics,
    labels: &StreamLabels,
) -> Result<(), String> {
    let status = group
        .status()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("stream {} has no consumer group", labels.stream))?;
    let lag = status.lag.map_or(-1, |l| l as i64);
    metrics.consumer_group_lag.get_or_create(labels).set(lag);
    metrics
        .consumer_group_pending
        .get_or_create(labels)
        .set(status.pending as i64);
    let age = status.oldest_pending_ms.map_or(0.0, |ms| {
        let now = chrono::Utc::now().timestamp_millis();
        (now.saturating_sub(ms as i64)).max(0) as f64 / 1000.0
    });
    metrics
        .consumer_oldest_pending_age
        .get_or_create(labels)
        .set(age);
    Ok(())
}
