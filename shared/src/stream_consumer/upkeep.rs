//! Keeping the group usable and bounded: (re)creating it, reclaiming what a
//! crashed consumer left, keeping in-flight entries fresh, trimming the
//! stream and removing idle consumers.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapters::{RedisError, StreamEntry};

use super::{JobHandler, StreamConsumer};

impl<H: JobHandler> StreamConsumer<H> {
    /// Creates the group if needed, creating the stream: just after the last
    /// entry it acked when it ever acked one (Redis lost it), else at
    /// `group_start_id` (its first creation). `lost`: Redis just answered
    /// `NOGROUP`, so a creation now is a recreation even without an offset.
    pub async fn ensure_group(&self, lost: bool) -> anyhow::Result<()> {
        let (stream, group) = (&self.settings.stream, &self.settings.group);
        let acked = self.db.stream_offset(stream, group).await?;
        let from = acked
            .clone()
            .unwrap_or_else(|| self.settings.group_start_id.clone());
        if lost {
            self.note_group_made();
        }
        // Concurrent callers race here; only the one that creates it counts.
        let created = self.group.ensure(&from).await?;
        if created {
            self.note_group_made();
        }
        if created && (lost || acked.is_some()) {
            tracing::warn!(stream = %stream, group = %group, from_id = %from, "consumer group recreated");
            self.metrics
                .consumer_group_recreations
                .get_or_create(&self.labels())
                .inc();
        }
        Ok(())
    }

    /// After any failed group command: a `NOGROUP` is not cured by waiting,
    /// so the group is recreated now; other errors are left to the caller.
    pub(super) async fn recover(&self, error: &RedisError) {
        if !error.is_no_group() {
            return;
        }
        if let Err(e) = self.ensure_group(true).await {
            tracing::warn!(error = %e, "recreating the lost consumer group failed; retrying");
        }
    }

    /// Keeps the stream and the group bounded (see the module doc). Run each
    /// reclaim round: that is when a consumer already looks at what is
    /// stalled, and its period (half of `reclaim_idle`) keeps the stream to a
    /// minute or so of answered entries for two cheap commands per round.
    pub(super) async fn tidy(&self) {
        if let Err(e) = self.group.trim_done().await {
            self.recover(&e).await;
            tracing::warn!(error = %e, "trimming the job stream failed");
        }
        match self
            .group
            .remove_idle_consumers(self.settings.idle_remove_after)
            .await
        {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => tracing::info!(consumers = ?removed, "removed idle consumers"),
            Err(e) => {
                self.recover(&e).await;
                tracing::warn!(error = %e, "removing idle consumers failed");
            }
        }
    }

    fn note_group_made(&self) {
        *self.group_made_at.lock().expect("group time poisoned") =
            Some(tokio::time::Instant::now());
    }

    /// Whether the group was lost or made within `reclaim_idle`: entries
    /// read as new may then be ones still being worked on.
    pub(super) fn group_is_new(&self) -> bool {
        self.group_made_at
            .lock()
            .expect("group time poisoned")
            .is_some_and(|at| at.elapsed() < self.settings.reclaim_idle)
    }

    pub(super) fn is_in_flight(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight set poisoned")
            .contains(id)
    }

    /// Entries stalled with a crashed consumer, minus those this one works on.
    pub(super) async fn reclaim(&self, count: usize) -> Result<Vec<StreamEntry>, RedisError> {
        let claimed = self
            .group
            .reclaim(self.settings.reclaim_idle, count)
            .await?;
        let in_flight = self
            .in_flight
            .lock()
            .expect("in-flight set poisoned")
            .clone();
        let claimed: Vec<_> = claimed
            .into_iter()
            .filter(|e| !in_flight.contains(&e.id))
            .collect();
        if !claimed.is_empty() {
            self.metrics
                .jobs_reclaimed
                .get_or_create(&self.labels())
                .inc_by(claimed.len() as u64);
            tracing::info!(count = claimed.len(), "reclaimed stalled job entries");
        }
        Ok(claimed)
    }

    /// Resets the idle time of in-flight entries so they are not reclaimed.
    pub(super) async fn keep_fresh(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.settings.reclaim_idle / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(period) => {}
            }
            let ids: Vec<String> = self
                .in_flight
                .lock()
                .expect("in-flight set poisoned")
                .iter()
                .cloned()
                .collect();
            if ids.is_empty() {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            if let Err(e) = self.group.keep_fresh(&ids).await {
                // Entries in flight in a lost group are not pending in the
                // new one: no one can reclaim them, they just finish.
                self.recover(&e).await;
                tracing::warn!(error = %e, "keeping in-flight entries fresh failed");
            }
        }
    }
}
