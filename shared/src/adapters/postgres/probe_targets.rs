//! The prober's target read: the running records joined with their health
//! snapshots, so one statement per target refresh tells the prober both what
//! to probe and what PostgreSQL committed of each game's probe streak (the
//! state it falls back on when Redis lost the streak).

use serde_json::Value;
use sqlx::Row;

use super::records::record_from_row;
use super::{Database, StoreError};
use crate::domain::{EventType, RuntimeRecord, SnapshotStatus};

/// A running record and what its health snapshot says of its probe streak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub record: RuntimeRecord,
    pub committed: CommittedStreak,
}

/// What PostgreSQL committed of a game's probe streak: whether its latest
/// health is a `probe_failed` still waiting for its `probe_recovered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedStreak {
    pub open_failure: Option<OpenProbeFailure>,
    /// When the snapshot's observation was made (Unix ms); 0 without one. It
    /// orders this against transitions a prober committed itself.
    pub occurred_at_ms: i64,
}

/// A published `probe_failed`: the container it is about and its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenProbeFailure {
    pub container_id: String,
    pub consecutive_failures: i64,
}

impl Database {
    /// Every `running` record with its committed probe streak, by game id,
    /// but those whose container rtmanager is stopping or removing (an
    /// intent recorded before it acted): a stopping engine's failed probes
    /// are not a failure.
    pub async fn probe_targets(&self) -> Result<Vec<ProbeTarget>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.game_id, r.status, r.current_container_id, r.current_image_ref, \
                 r.engine_endpoint, r.state_path, r.docker_network, r.started_at, r.stopped_at, \
                 r.removed_at, r.last_op_at, r.created_at, \
                 s.status AS snapshot_status, s.container_id AS snapshot_container_id, \
                 s.details AS snapshot_details, s.occurred_at AS snapshot_occurred_at \
             FROM runtime_records r \
             LEFT JOIN health_snapshots s ON s.game_id = r.game_id \
             WHERE r.status = 'running' AND NOT EXISTS ( \
                 SELECT 1 FROM container_intents i WHERE i.container_id = r.current_container_id) \
             ORDER BY r.game_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProbeTarget {
                    record: record_from_row(row)?,
                    committed: committed_streak(row)?,
                })
            })
            .collect()
    }

    /// The game's committed probe streak as it is now (whichever prober
    /// committed it): read when Redis has lost the game's streak, or has
    /// none yet.
    pub async fn committed_streak(
        &self,
        game_id: &crate::domain::GameId,
    ) -> Result<CommittedStreak, StoreError> {
        let row = sqlx::query(
            "SELECT s.status AS snapshot_status, s.container_id AS snapshot_container_id, \
                 s.details AS snapshot_details, s.occurred_at AS snapshot_occurred_at \
             FROM health_snapshots s WHERE s.game_id = $1",
        )
        .bind(game_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => committed_streak(&row)?,
            None => CommittedStreak::default(),
        })
    }
}

/// The `snapshot_*` columns of `row` as a committed streak.
fn committed_streak(row: &sqlx::postgres::PgRow) -> Result<CommittedStreak, sqlx::Error> {
    let status: Option<String> = row.try_get("snapshot_status")?;
    let occurred_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("snapshot_occurred_at")?;
    let failed = SnapshotStatus::of(EventType::ProbeFailed).as_str();
    let open_failure = if status.as_deref() == Some(failed) {
        let details: Option<sqlx::types::Json<Value>> = row.try_get("snapshot_details")?;
        Some(OpenProbeFailure {
            container_id: row
                .try_get::<Option<String>, _>("snapshot_container_id")?
                .unwrap_or_default(),
            consecutive_failures: details
                .and_then(|d| d.0["consecutive_failures"].as_i64())
                .unwrap_or(0),
        })
    } else {
        None
    };
    Ok(CommittedStreak {
        open_failure,
        occurred_at_ms: occurred_at.map_or(0, |t| t.timestamp_millis()),
    })
}
