//! `health_snapshots`: the latest observation of each game.

use chrono::{DateTime, Utc};

use super::{StoreError, UnitOfWork};
use crate::domain::{HealthEvent, SnapshotStatus};

impl UnitOfWork {
    /// Replaces the game's snapshot only with a later observation, so a late or
    /// replayed event never overwrites a newer one.
    pub async fn upsert_snapshot(&mut self, event: &HealthEvent) -> Result<(), StoreError> {
        let occurred_at: DateTime<Utc> = DateTime::from_timestamp_millis(event.occurred_at_ms)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("occurred_at_ms {}", event.occurred_at_ms))
            })?;
        let event_type = event.details.event_type();
        sqlx::query(
        "INSERT INTO health_snapshots (game_id, container_id, status, event_type, details, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (game_id) DO UPDATE SET container_id = EXCLUDED.container_id, \
             status = EXCLUDED.status, event_type = EXCLUDED.event_type, \
             details = EXCLUDED.details, occurred_at = EXCLUDED.occurred_at, updated_at = now() \
         WHERE health_snapshots.occurred_at < EXCLUDED.occurred_at",
    )
    .bind(event.game_id.as_str())
    .bind(&event.container_id)
    .bind(SnapshotStatus::of(event_type).as_str())
    .bind(event_type.as_str())
    .bind(sqlx::types::Json(event.details.to_json()))
    .bind(occurred_at)
    .execute(self.conn())
    .await?;
        Ok(())
    }
}
