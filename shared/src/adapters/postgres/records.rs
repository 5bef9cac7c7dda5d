//! `runtime_records` and `stop_tombstones`: the durable state of each game.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Database, StoreError, UnitOfWork};
use crate::domain::{GameId, RuntimeRecord, RuntimeStatus};

impl Database {
    pub async fn get_record(&self, game_id: &GameId) -> Result<Option<RuntimeRecord>, StoreError> {
        let row = sqlx::query(SELECT_RECORD)
            .bind(game_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record_from_row(&r)).transpose()
    }

    /// Records with the given status (all when `None`), by game id.
    pub async fn list_records(
        &self,
        status: Option<RuntimeStatus>,
    ) -> Result<Vec<RuntimeRecord>, StoreError> {
        let rows = sqlx::query(LIST_RECORDS)
            .bind(status.map(RuntimeStatus::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Stopped runtimes whose last operation is older than `retention`
    /// (served by `runtime_records_status_last_op_idx`).
    pub async fn expired_stopped(
        &self,
        retention: std::time::Duration,
    ) -> Result<Vec<GameId>, StoreError> {
        let cutoff = super::retention::cutoff(Utc::now(), retention);
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT game_id FROM runtime_records WHERE status = 'stopped' AND last_op_at < $1 ORDER BY last_op_at",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| {
                GameId::parse(id).map_err(|e| StoreError::Corrupt(format!("game_id {id:?}: {e}")))
            })
            .collect()
    }

    /// The `requested_at_ms` of the game's stop tombstone, if any.
    /// When the start behind the game's running record was requested, if a
    /// start job said so.
    pub async fn start_request(&self, game_id: &GameId) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT requested_at_ms FROM start_requests WHERE game_id = $1")
                .bind(game_id.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn stop_tombstone(&self, game_id: &GameId) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT requested_at_ms FROM stop_tombstones WHERE game_id = $1")
                .bind(game_id.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

const SELECT_RECORD: &str = "SELECT game_id, status, current_container_id, current_image_ref, \
    engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
    FROM runtime_records WHERE game_id = $1";

const LIST_RECORDS: &str = "SELECT game_id, status, current_container_id, current_image_ref, \
    engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
    FROM runtime_records WHERE $1::text IS NULL OR status = $1 ORDER BY game_id";

/// The insert of a whole record (`$1`..`$11` in the order of
/// `UnitOfWork::write_record`); each caller adds its own `ON CONFLICT`.
macro_rules! insert_record_sql {
    () => {
        "INSERT INTO runtime_records (game_id, status, current_container_id, current_image_ref, \
             engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, \
             last_op_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11)"
    };
}

impl UnitOfWork {
    /// Locks the record while the unit of work commits: `true` when it is
    /// still `running` on this container.
    pub async fn lock_current_record(
        &mut self,
        game_id: &GameId,
        container_id: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM runtime_records \
             WHERE game_id = $1 AND status = 'running' AND current_container_id = $2 FOR SHARE",
        )
        .bind(game_id.as_str())
        .bind(container_id)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.is_some())
    }

    /// `running -> stopped`, only while `container_id` is still the current
    /// container: a late observation never overwrites a newer start.
    pub async fn mark_stopped(
        &mut self,
        game_id: &GameId,
        container_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runtime_records SET status = 'stopped', stopped_at = $3, last_op_at = $3 \
         WHERE game_id = $1 AND status = 'running' AND current_container_id = $2",
        )
        .bind(game_id.as_str())
        .bind(container_id)
        .bind(at)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `running|stopped -> removed`, only while `container_id` is current.
    pub async fn mark_removed(
        &mut self,
        game_id: &GameId,
        container_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runtime_records SET status = 'removed', removed_at = $3, last_op_at = $3 \
         WHERE game_id = $1 AND status IN ('running', 'stopped') AND current_container_id = $2",
        )
        .bind(game_id.as_str())
        .bind(container_id)
        .bind(at)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Points a `stopped` or `removed` record at the game's container that
    /// replaced the one it names (a restart, patch or start that died after
    /// removing the old container and creating the new one): `stopped` on
    /// `new_container_id` with its image. Compare-and-set on the old
    /// container id and the status: `false` when the record moved on.
    pub async fn repoint_stopped_record(
        &mut self,
        game_id: &GameId,
        old_container_id: Option<&str>,
        new_container_id: &str,
        image_ref: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runtime_records SET current_container_id = $3, current_image_ref = $4, \
             status = 'stopped', \
             stopped_at = CASE WHEN status = 'stopped' THEN COALESCE(stopped_at, $5) ELSE $5 END, \
             removed_at = NULL, last_op_at = $5 \
         WHERE game_id = $1 AND status IN ('stopped', 'removed') \
           AND current_container_id IS NOT DISTINCT FROM $2",
        )
        .bind(game_id.as_str())
        .bind(old_container_id)
        .bind(new_container_id)
        .bind(image_ref)
        .bind(at)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts a record for an adopted container; `false` when one exists.
    pub async fn insert_record_if_absent(
        &mut self,
        record: &RuntimeRecord,
    ) -> Result<bool, StoreError> {
        self.write_record(
            concat!(insert_record_sql!(), " ON CONFLICT (game_id) DO NOTHING"),
            record,
        )
        .await
    }

    /// Keeps (or moves forward) when the game's running start was requested.
    pub async fn put_start_request(
        &mut self,
        game_id: &GameId,
        requested_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO start_requests (game_id, requested_at_ms) VALUES ($1, $2) \
             ON CONFLICT (game_id) DO UPDATE SET requested_at_ms = EXCLUDED.requested_at_ms \
             WHERE start_requests.requested_at_ms < EXCLUDED.requested_at_ms",
        )
        .bind(game_id.as_str())
        .bind(requested_at_ms)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Leaves (or moves forward) the game's stop tombstone.
    pub async fn put_stop_tombstone(
        &mut self,
        game_id: &GameId,
        requested_at_ms: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stop_tombstones (game_id, requested_at_ms, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (game_id) DO UPDATE SET requested_at_ms = EXCLUDED.requested_at_ms, \
             reason = EXCLUDED.reason, created_at = now() \
         WHERE stop_tombstones.requested_at_ms < EXCLUDED.requested_at_ms",
        )
        .bind(game_id.as_str())
        .bind(requested_at_ms)
        .bind(reason)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Installs a `running` record for a fresh start. Compare-and-set: it
    /// inserts, or replaces a `stopped`/`removed` record (keeping its
    /// `created_at`), but never overwrites a `running` one. Returns whether
    /// the row was written.
    pub async fn upsert_running_record(
        &mut self,
        record: &RuntimeRecord,
    ) -> Result<bool, StoreError> {
        debug_assert_eq!(record.status, RuntimeStatus::Running);
        self.write_record(
            concat!(
                insert_record_sql!(),
                " ON CONFLICT (game_id) DO UPDATE SET status = 'running', \
                 current_container_id = EXCLUDED.current_container_id, \
                 current_image_ref = EXCLUDED.current_image_ref, \
                 engine_endpoint = EXCLUDED.engine_endpoint, state_path = EXCLUDED.state_path, \
                 docker_network = EXCLUDED.docker_network, started_at = EXCLUDED.started_at, \
                 stopped_at = NULL, removed_at = NULL, last_op_at = EXCLUDED.last_op_at \
                 WHERE runtime_records.status <> 'running'"
            ),
            record,
        )
        .await
    }

    /// Runs one `insert_record_sql!()` statement with the record's columns.
    async fn write_record(
        &mut self,
        sql: &'static str,
        record: &RuntimeRecord,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql)
            .bind(record.game_id.as_str())
            .bind(record.status.as_str())
            .bind(&record.current_container_id)
            .bind(&record.current_image_ref)
            .bind(&record.engine_endpoint)
            .bind(&record.state_path)
            .bind(&record.docker_network)
            .bind(record.started_at)
            .bind(record.stopped_at)
            .bind(record.last_op_at)
            .bind(record.created_at)
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

pub(super) fn record_from_row(row: &sqlx::postgres::PgRow) -> Result<RuntimeRecord, StoreError> {
    let game_id: String = row.try_get("game_id")?;
    let status: String = row.try_get("status")?;
    Ok(RuntimeRecord {
        game_id: GameId::parse(&game_id)
            .map_err(|e| StoreError::Corrupt(format!("game_id {game_id:?}: {e}")))?,
        status: RuntimeStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
        current_container_id: row.try_get("current_container_id")?,
        current_image_ref: row.try_get("current_image_ref")?,
        engine_endpoint: row.try_get("engine_endpoint")?,
        state_path: row.try_get("state_path")?,
        docker_network: row.try_get("docker_network")?,
        started_at: row.try_get("started_at")?,
        stopped_at: row.try_get("stopped_at")?,
        removed_at: row.try_get("removed_at")?,
        last_op_at: row.try_get("last_op_at")?,
        created_at: row.try_get("created_at")?,
    })
}
