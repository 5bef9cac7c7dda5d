//! PostgreSQL adapter: runtime records, the operation log, health snapshots.
//!
//! Queries are checked at run time (no live database at build time). The
//! tables live in the schema the DSN's `search_path` names.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::domain::{
    ErrorCode, GameId, HealthEvent, OperationEntry, RuntimeRecord, RuntimeStatus, SnapshotStatus,
};

/// Migrations embedded at build time from the workspace's `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached in time: `service_unavailable`.
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error: `internal_error`.
    #[error("postgres error: {0}")]
    Query(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Query(_) | Self::Corrupt(_) => ErrorCode::Internal,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) => Self::Query(db.to_string()),
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::Query(err.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// A pool on the primary, with the helpers every process needs.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Connects lazily-checked: `acquire_timeout` bounds how long an operation
    /// waits when PostgreSQL is away, so it fails with `service_unavailable`
    /// instead of hanging.
    pub async fn connect(dsn: &str, max_connections: u32) -> Result<Self, StoreError> {
        let (dsn, search_path) = split_search_path(dsn);
        let mut options: PgConnectOptions = dsn
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Unavailable(format!("bad DSN: {e}")))?;
        if let Some(schema) = search_path {
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; an already-applied migration is a success.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Query(format!("migrations: {e}")))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// One pooled connection, for a single statement outside a transaction.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

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
        let cutoff =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
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

    /// Appends one operation-log row outside any other transaction.
    pub async fn append_operation(&self, entry: &OperationEntry) -> Result<(), StoreError> {
        append_operation(&mut *self.acquire().await?, entry).await
    }
}

const SELECT_RECORD: &str = "SELECT game_id, status, current_container_id, current_image_ref, \
    engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
    FROM runtime_records WHERE game_id = $1";

const LIST_RECORDS: &str = "SELECT game_id, status, current_container_id, current_image_ref, \
    engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
    FROM runtime_records WHERE $1::text IS NULL OR status = $1 ORDER BY game_id";

/// `running -> stopped`, only while `container_id` is still the current
/// container: a late observation never overwrites a newer start.
pub async fn mark_stopped(
    conn: &mut sqlx::PgConnection,
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
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `running|stopped -> removed`, only while `container_id` is current.
pub async fn mark_removed(
    conn: &mut sqlx::PgConnection,
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
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts a record for an adopted container; `false` when one exists.
pub async fn insert_record_if_absent(
    conn: &mut sqlx::PgConnection,
    record: &RuntimeRecord,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO runtime_records (game_id, status, current_container_id, current_image_ref, \
             engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, \
             last_op_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11) \
         ON CONFLICT (game_id) DO NOTHING",
    )
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
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The `requested_at_ms` of the game's stop tombstone, if any.
pub async fn stop_tombstone(pool: &PgPool, game_id: &GameId) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT requested_at_ms FROM stop_tombstones WHERE game_id = $1")
            .bind(game_id.as_str())
            .fetch_optional(pool)
            .await?,
    )
}

/// Leaves (or moves forward) the game's stop tombstone.
pub async fn put_stop_tombstone(
    conn: &mut sqlx::PgConnection,
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
    .execute(conn)
    .await?;
    Ok(())
}

/// The Go service's DSNs carry `?search_path=rtmanager` (a lib/pq parameter),
/// which sqlx ignores; it is turned into the session option sqlx understands,
/// so a DSN copied from the Go service keeps its tables in their schema.
fn split_search_path(dsn: &str) -> (String, Option<String>) {
    let Some((base, query)) = dsn.split_once('?') else {
        return (dsn.to_owned(), None);
    };
    let mut search_path = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("search_path", value)) => {
                search_path = Some(value.replace("%2C", ",").replace("%2c", ","));
                false
            }
            _ => true,
        })
        .collect();
    let dsn = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (dsn, search_path)
}

pub(crate) fn record_from_row(row: &sqlx::postgres::PgRow) -> Result<RuntimeRecord, StoreError> {
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

/// Installs a `running` record for a fresh start. Compare-and-set: it inserts,
/// or replaces a `stopped`/`removed` record (keeping its `created_at`), but
/// never overwrites a `running` one. Returns whether the row was written.
pub async fn upsert_running_record(
    conn: &mut sqlx::PgConnection,
    record: &RuntimeRecord,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO runtime_records (game_id, status, current_container_id, current_image_ref, \
             engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, \
             last_op_at, created_at) \
         VALUES ($1, 'running', $2, $3, $4, $5, $6, $7, NULL, NULL, $8, $9) \
         ON CONFLICT (game_id) DO UPDATE SET status = 'running', \
             current_container_id = EXCLUDED.current_container_id, \
             current_image_ref = EXCLUDED.current_image_ref, \
             engine_endpoint = EXCLUDED.engine_endpoint, state_path = EXCLUDED.state_path, \
             docker_network = EXCLUDED.docker_network, started_at = EXCLUDED.started_at, \
             stopped_at = NULL, removed_at = NULL, last_op_at = EXCLUDED.last_op_at \
         WHERE runtime_records.status <> 'running'",
    )
    .bind(record.game_id.as_str())
    .bind(&record.current_container_id)
    .bind(&record.current_image_ref)
    .bind(&record.engine_endpoint)
    .bind(&record.state_path)
    .bind(&record.docker_network)
    .bind(record.started_at)
    .bind(record.last_op_at)
    .bind(record.created_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn append_operation(
    conn: &mut sqlx::PgConnection,
    entry: &OperationEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO operation_log (game_id, op_kind, op_source, source_ref, image_ref, \
             container_id, outcome, error_code, error_message, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(entry.game_id.as_str())
    .bind(entry.op_kind.as_str())
    .bind(entry.op_source.as_str())
    .bind(&entry.source_ref)
    .bind(&entry.image_ref)
    .bind(&entry.container_id)
    .bind(entry.outcome.as_str())
    .bind(entry.error_code.map(ErrorCode::as_str).unwrap_or(""))
    .bind(&entry.error_message)
    .bind(entry.started_at)
    .bind(entry.finished_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the game's snapshot only with a later observation, so a late or
/// replayed event never overwrites a newer one.
pub async fn upsert_snapshot(
    conn: &mut sqlx::PgConnection,
    event: &HealthEvent,
) -> Result<(), StoreError> {
    let occurred_at: DateTime<Utc> = DateTime::from_timestamp_millis(event.occurred_at_ms)
        .ok_or_else(|| StoreError::Corrupt(format!("occurred_at_ms {}", event.occurred_at_ms)))?;
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
    .execute(conn)
    .await?;
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::split_search_path;

    #[test]
    fn a_go_style_search_path_parameter_becomes_a_session_option() {
        assert_eq!(
            split_search_path("postgres://u:p@h/db?search_path=rtmanager&sslmode=disable"),
            (
                "postgres://u:p@h/db?sslmode=disable".to_owned(),
                Some("rtmanager".to_owned())
            )
        );
        assert_eq!(
            split_search_path("postgres://h/db?search_path=a%2Cb"),
            ("postgres://h/db".to_owned(), Some("a,b".to_owned()))
        );
        assert_eq!(
            split_search_path("postgres://h/db"),
            ("postgres://h/db".to_owned(), None)
        );
    }
}
