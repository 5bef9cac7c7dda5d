//! `health_event_history`: every health event of a game, for its timeline
//! (read in [`super::reads`], pruned in [`super::retention`]).

use chrono::{DateTime, Utc};

use super::{StoreError, UnitOfWork};
use crate::domain::SourcedEvent;

impl UnitOfWork {
    /// Adds the event to its game's history. Called by [`UnitOfWork::stage`]
    /// only, after the outbox took the event, so the history is deduplicated
    /// exactly as the stream is.
    pub(super) async fn append_health_history(
        &mut self,
        staged: &SourcedEvent,
        dedupe_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let event = &staged.event;
        let occurred_at: DateTime<Utc> = DateTime::from_timestamp_millis(event.occurred_at_ms)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("occurred_at_ms {}", event.occurred_at_ms))
            })?;
        sqlx::query(
            "INSERT INTO health_event_history \
               (game_id, container_id, event_type, source, occurred_at, details, dedupe_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event.game_id.as_str())
        .bind(&event.container_id)
        .bind(event.event_type().as_str())
        .bind(staged.source.as_str())
        .bind(occurred_at)
        .bind(sqlx::types::Json(event.details.to_json()))
        .bind(dedupe_key)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
