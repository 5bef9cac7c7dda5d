//! Staging observations: exactly once, with the record in the same
//! transaction.
//!
//! # Exactly once by construction
//! Every event is staged with an outbox dedupe key,
//! `health:{event_type}:{container_id}`
//! ([`HealthEvent::observation_key`],
//! [`Outbox::health_once`](shared::outbox::Outbox::health_once)): the
//! outbox's unique key is checked and set in the same PostgreSQL transaction
//! that queues the event (and flips the record). So handling an observation
//! twice — cursor overlap, catch-up racing a replayed event, two instances
//! during a lease hand-over, a crash between commit and cursor write — queues
//! it once (and inspect-cron's reconcile pass stages its
//! `container_disappeared` under the same key, so a removal is reported
//! once by the two jobs together), and a failed transaction queues nothing and is retried. A
//! container exits, OOMs and disappears at most once with its record current
//! (a replaced container gets a new id), so one event of each type per
//! container is the whole truth. Dedupe keys are kept for
//! `RTMANAGER_DEDUPE_KEY_RETENTION` (30 days), far longer than the daemon
//! keeps an event to replay. A Redis `SET NX` marker (for `destroy`, say) is not
//! used: set outside the transaction, it could be left behind by a crash
//! before the commit and lose the event.
//!
//! # The record follows an observed exit
//! A reported `die` moves the record `running -> stopped` by compare-and-set
//! on the container id (`mark_stopped`), in the transaction that stages the
//! event, so a late event never overwrites a newer start. No operation-log row
//! is written: an observation is not an operation. Two exceptions keep the
//! record as it is: a `die` of a container that is being removed (`docker rm
//! -f` kills, then removes: the container is `removing` or already gone when
//! the die is handled) still publishes `container_exited`, but the record
//! stays `running` so that the `destroy` that follows is reported as
//! `container_disappeared`; and `container_disappeared` never changes the
//! record (the reconciler of `inspect-cron` marks it removed).

use chrono::{DateTime, Utc};

use shared::adapters::postgres::{StoreError, UnitOfWork};
use shared::domain::{GameId, HealthEvent, HealthSource};

use super::Listener;

/// The daemon's time as the record's; an out-of-range time falls back to now
/// rather than failing the observation.
fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

impl Listener {
    /// `container_oom` (when OOM-killed, just before) and `container_exited`,
    /// with the record stopped by compare-and-set when `stop_record`, in one
    /// transaction. Returns how many events were new.
    pub(super) async fn publish_exit(
        &self,
        game_id: &GameId,
        container: &str,
        exit_code: i64,
        oom: bool,
        stop_record: bool,
        at_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut events = Vec::with_capacity(2);
        if oom {
            // The daemon's `oom` precedes its `die`; normally it was already
            // published from its own event and this one is a no-op.
            events.push(HealthEvent::container_oom(
                game_id,
                container,
                at_ms - 1,
                exit_code,
            ));
        }
        events.push(HealthEvent::container_exited(
            game_id, container, at_ms, exit_code, oom,
        ));
        let mut tx = self.outbox.begin().await?;
        if stop_record {
            // Compare-and-set on the container: a late event never
            // overwrites a newer start. Losing it to another observer (or an
            // earlier pass) is fine: the dedupe key decides publication.
            tx.mark_stopped(game_id, container, millis_to_time(at_ms))
                .await?;
        }
        let fresh = self.stage_once(&mut tx, &events).await?;
        tx.commit().await?;
        log_if_already_published(&events, fresh);
        Ok(fresh)
    }

    /// Stages each event once (by its dedupe key) in one transaction.
    /// Returns how many events were new.
    pub(super) async fn publish(&self, events: &[HealthEvent]) -> Result<usize, StoreError> {
        let mut tx = self.outbox.begin().await?;
        let fresh = self.stage_once(&mut tx, events).await?;
        tx.commit().await?;
        log_if_already_published(events, fresh);
        Ok(fresh)
    }

    /// Stages each event under its dedupe key; returns how many were new.
    async fn stage_once(
        &self,
        tx: &mut UnitOfWork,
        events: &[HealthEvent],
    ) -> Result<usize, StoreError> {
        let mut fresh = 0;
        for event in events {
            let key = event.observation_key();
            if tx
                .stage(
                    &self
                        .outbox
                        .health_once(HealthSource::DockerEvents, event, &key),
                )
                .await?
            {
                fresh += 1;
                tracing::info!(
                    game_id = %event.game_id,
                    container_id = %event.container_id,
                    event_type = event.event_type().as_str(),
                    occurred_at_ms = event.occurred_at_ms,
                    "health event staged"
                );
            }
        }
        Ok(fresh)
    }
}

/// A replay (cursor overlap, catch-up, hand-over) that found every event
/// already staged: worth a debug line, not more.
fn log_if_already_published(events: &[HealthEvent], fresh: usize) {
    if fresh == 0 {
        if let Some(event) = events.last() {
            tracing::debug!(game_id = %event.game_id, container_id = %event.container_id, "observation already published");
        }
    }
}
