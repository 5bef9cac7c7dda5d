//! The catch-up by inspection, after every (re)subscription.
//!
//! The daemon keeps only its last 256 events and forgets them on restart, so
//! the cursor alone can miss a gap. For each running record, a current
//! container that exited with a non-zero code is reported exactly as its
//! `die` would have been (`container_oom` first, at `FinishedAt - 1 ms`, when
//! it was OOM-killed; `container_exited` at `FinishedAt`; the record
//! stopped), and a current container that no longer exists is reported
//! `container_disappeared` (at the time of the catch-up). The intents
//! suppress here as they do on the stream ([`super::mapping`]).
//!
//! One visible artefact: a container removed from outside during a gap is
//! reported `container_disappeared` by the catch-up first, and its kill
//! (`container_exited`, with the earlier daemon time) by the replay right
//! after; each still exactly once. The catch-up assumes, like every job, that
//! the records of one schema live on the one Docker host of
//! `RTMANAGER_DOCKER_HOST`.

use chrono::Utc;
use futures_util::StreamExt;

use shared::adapters::IntentKind;
use shared::domain::{ContainerState, HealthEvent, RuntimeRecord, RuntimeStatus};

use super::{Listener, ListenerError};

impl Listener {
    /// Reports, by inspection, what the events of a gap would have reported
    /// for the current container of each running record. Returns how many
    /// events were new.
    pub async fn catch_up(&self) -> Result<usize, ListenerError> {
        let records = self.db.list_records(Some(RuntimeStatus::Running)).await?;
        self.metrics
            .catch_up_containers
            .inc_by(records.len() as u64);
        // Every record is tried even when one fails (each commits on its
        // own); the first failure then fails the catch-up.
        let results: Vec<Result<usize, ListenerError>> = futures_util::stream::iter(records)
            .map(|record| async move {
                let result = self.catch_up_one(&record).await;
                // A long catch-up is progress, not a stall.
                self.heartbeat.tick();
                result
            })
            .buffer_unordered(self.settings.catch_up_concurrency.max(1))
            .collect()
            .await;
        let mut published = 0;
        for result in results {
            published += result?;
        }
        Ok(published)
    }

    async fn catch_up_one(&self, record: &RuntimeRecord) -> Result<usize, ListenerError> {
        let Some(container) = record.current_container_id.as_deref() else {
            return Ok(0);
        };
        let game_id = &record.game_id;
        match self.engine.inspect_container(container).await? {
            None => {
                if self
                    .intents
                    .is_recorded(IntentKind::Removal, container)
                    .await?
                {
                    return Ok(0);
                }
                Ok(self
                    .publish(&[HealthEvent::container_disappeared(
                        game_id,
                        container,
                        Utc::now().timestamp_millis(),
                    )])
                    .await?)
            }
            Some(info) if info.state == ContainerState::Exited && info.exit_code != 0 => {
                if self.rtmanager_stops_or_removes(container).await? {
                    return Ok(0);
                }
                let at_ms = info.finished_at.unwrap_or_else(Utc::now).timestamp_millis();
                Ok(self
                    .publish_exit(
                        game_id,
                        container,
                        info.exit_code,
                        info.oom_killed,
                        true,
                        at_ms,
                    )
                    .await?)
            }
            // Running, or being removed (its `destroy` follows on the stream).
            Some(_) => Ok(0),
        }
    }
}
