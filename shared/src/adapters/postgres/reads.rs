//! Read-only queries of the gateway and monitoring discovery.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::records::record_from_row;
use super::{Database, StoreError};
use crate::domain::{RuntimeRecord, RuntimeStatus};

/// What monitoring discovery knows of one game, from PostgreSQL alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringRow {
    pub record: RuntimeRecord,
    /// `health_snapshots.status` and `.event_type`, when a snapshot exists.
    pub snapshot_status: Option<String>,
    pub snapshot_event_type: Option<String>,
    /// The container the snapshot is about (maybe an earlier one).
    pub snapshot_container_id: Option<String>,
    /// `op_kind` of the game's latest operation-log row.
    pub last_op_kind: Option<String>,
    /// `error_code` of the game's latest failed operation that finished
    /// after `failed_since`.
    pub recent_error_code: Option<String>,
}

impl Database {
    /// Every record with one of `statuses`, joined with its health snapshot
    /// and its latest (and latest recently failed) operation, by game id.
    /// One statement, so the inventory is a consistent snapshot.
    pub async fn monitoring_rows(
        &self,
        statuses: &[RuntimeStatus],
        failed_since: DateTime<Utc>,
    ) -> Result<Vec<MonitoringRow>, StoreError> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = sqlx::query(
            "SELECT r.game_id, r.status, r.current_container_id, r.current_image_ref, \
                 r.engine_endpoint, r.state_path, r.docker_network, r.started_at, r.stopped_at, \
                 r.removed_at, r.last_op_at, r.created_at, \
                 s.status AS snapshot_status, s.event_type AS snapshot_event_type, \
                 s.container_id AS snapshot_container_id, \
                 lo.op_kind AS last_op_kind, lf.error_code AS recent_error_code \
             FROM runtime_records r \
             LEFT JOIN health_snapshots s ON s.game_id = r.game_id \
             LEFT JOIN LATERAL (SELECT o.op_kind FROM operation_log o \
                 WHERE o.game_id = r.game_id ORDER BY o.id DESC LIMIT 1) lo ON true \
             LEFT JOIN LATERAL (SELECT o.error_code FROM operation_log o \
                 WHERE o.game_id = r.game_id AND o.outcome = 'failure' AND o.finished_at >= $2 \
                 ORDER BY o.id DESC LIMIT 1) lf ON true \
             WHERE r.status = ANY($1) ORDER BY r.game_id",
        )
        .bind(&statuses)
        .bind(failed_since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MonitoringRow {
                    record: record_from_row(row)?,
                    snapshot_status: row.try_get("snapshot_status")?,
                    snapshot_event_type: row.try_get("snapshot_event_type")?,
                    snapshot_container_id: row.try_get("snapshot_container_id")?,
                    last_op_kind: row.try_get("last_op_kind")?,
                    recent_error_code: row
                        .try_get::<Option<String>, _>("recent_error_code")?
                        .filter(|c| !c.is_empty()),
                })
            })
            .collect()
    }
}
