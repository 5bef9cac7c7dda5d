//! Read-only queries of the gateway and monitoring discovery: the paged
//! record listing, a game's record with its health snapshot, the paged operation log, a
//! game's paged timeline, the readiness probe's migration check and the
//! discovery inventory. They answer
//! domain types or the plain read models below; the gateway shapes the JSON.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::records::record_from_row;
use super::{Database, StoreError, MIGRATOR};
use crate::domain::{GameId, RuntimeRecord, RuntimeStatus};

/// One page of a keyset-paginated read, in the read's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    /// The cursor that continues after the last item; `None` on the last page.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// `rows` were fetched with `limit + 1`: one row past the page tells that
    /// another page follows, without a count query.
    fn of(mut rows: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Self {
        let limit = limit as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(cursor)
        } else {
            None
        };
        Self { items: rows, next }
    }
}

/// A game's `health_snapshots` row, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshotRow {
    pub status: String,
    pub event_type: String,
    pub container_id: String,
    pub details: Value,
    pub occurred_at: DateTime<Utc>,
}

/// One `operation_log` row, as stored (vocabulary columns stay text: the log
/// is shown as written, whatever the current enums say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRow {
    pub id: i64,
    pub op_kind: String,
    pub op_source: String,
    pub source_ref: String,
    pub image_ref: String,
    pub container_id: String,
    pub outcome: String,
    /// `""` when none (as stored and as on `runtime:job_results`).
    pub error_code: String,
    pub error_message: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// One `health_event_history` row, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEventRow {
    pub id: i64,
    pub container_id: String,
    pub event_type: String,
    /// The health source that observed it (`HealthSource`).
    pub source: String,
    pub details: Value,
    pub occurred_at: DateTime<Utc>,
}

/// One `container_intents` row: a stop or removal rtmanager requested itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRow {
    pub container_id: String,
    /// `stop` or `removal`.
    pub kind: String,
    pub recorded_at: DateTime<Utc>,
}

/// One entry of a game's timeline, from the table it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum TimelineEntry {
    Operation(OperationRow),
    HealthEvent(HealthEventRow),
    Intent(IntentRow),
}

/// Where a timeline entry sorts, and so where a page ending on it continues.
/// Entries are ordered by `(at, rank, seq, tie)`: `at` is an operation's
/// `finished_at` (when its outcome was committed), an event's `occurred_at`,
/// an intent's `recorded_at`; `rank` the table ([`TimelineCursor::INTENT`] <
/// [`TimelineCursor::HEALTH_EVENT`] < [`TimelineCursor::OPERATION`], so at
/// one instant an operation sorts after the events it caused); `seq` the
/// row id (0 for intents, which have none) and `tie` an intent's key
/// (`container_id/kind`; empty for the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineCursor {
    pub at: DateTime<Utc>,
    pub rank: i16,
    pub seq: i64,
    pub tie: String,
}

impl TimelineCursor {
    pub const INTENT: i16 = 1;
    pub const HEALTH_EVENT: i16 = 2;
    pub const OPERATION: i16 = 3;
}

/// A timeline entry with its place in the order.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineItem {
    pub cursor: TimelineCursor,
    pub entry: TimelineEntry,
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

const LIST_RECORDS_PAGE: &str = "SELECT game_id, status, current_container_id, current_image_ref, \
    engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
    FROM runtime_records \
    WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR game_id > $2) \
    ORDER BY game_id LIMIT $3";

const OPERATION_LOG_PAGE: &str =
    "SELECT id, op_kind, op_source, source_ref, image_ref, container_id, outcome, \
         error_code, error_message, started_at, finished_at \
     FROM operation_log WHERE game_id = $1 AND ($2::bigint IS NULL OR id < $2) \
     ORDER BY id DESC LIMIT $3";

/// A game's timeline, newest first (`$1` game, `$2..$5` the cursor or NULL,
/// `$6` the page size plus one). Each branch takes at most a page from its
/// table, past the cursor, in the common order, so the merge sorts no more
/// than three pages. Each reads one game's rows by its game index
/// (`operation_log_game_idx`, whose order is by id, so a game's log is
/// sorted by `finished_at`; `health_event_history_game_idx`;
/// `container_intents_game_idx`). One statement, so the page is one
/// snapshot of the three tables. The columns a branch does not have are
/// NULL.
const TIMELINE_PAGE: &str = "SELECT * FROM ( \
     (SELECT o.finished_at AS at, 3::smallint AS rank, o.id AS seq, ''::text AS tie, \
         o.container_id, o.op_kind, o.op_source, o.source_ref, o.image_ref, o.outcome, \
         o.error_code, o.error_message, o.started_at, \
         NULL::text AS event_type, NULL::text AS source, NULL::jsonb AS details, \
         NULL::text AS intent_kind \
      FROM operation_log o WHERE o.game_id = $1 AND ($2::timestamptz IS NULL \
         OR (o.finished_at, 3::smallint, o.id, ''::text) < ($2, $3::smallint, $4::bigint, $5::text)) \
      ORDER BY o.finished_at DESC, o.id DESC LIMIT $6) \
     UNION ALL \
     (SELECT h.occurred_at, 2::smallint, h.id, ''::text, \
         h.container_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         h.event_type, h.source, h.details, NULL \
      FROM health_event_history h WHERE h.game_id = $1 AND ($2::timestamptz IS NULL \
         OR (h.occurred_at, 2::smallint, h.id, ''::text) < ($2, $3::smallint, $4::bigint, $5::text)) \
      ORDER BY h.occurred_at DESC, h.id DESC LIMIT $6) \
     UNION ALL \
     (SELECT i.recorded_at, 1::smallint, 0::bigint, i.container_id || '/' || i.kind, \
         i.container_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL, i.kind \
      FROM container_intents i WHERE i.game_id = $1 AND ($2::timestamptz IS NULL \
         OR (i.recorded_at, 1::smallint, 0::bigint, i.container_id || '/' || i.kind) \
            < ($2, $3::smallint, $4::bigint, $5::text)) \
      ORDER BY i.recorded_at DESC, i.container_id || '/' || i.kind DESC LIMIT $6) \
   ) entries ORDER BY at DESC, rank DESC, seq DESC, tie DESC LIMIT $6";

/// A game's record and its health snapshot (`health_*`, all NULL without
/// one): [`Database::record_with_health`]; `pub` for the gateway benchmark,
/// whose `pgbench` peer runs it.
pub const RECORD_WITH_HEALTH: &str = "SELECT r.game_id, r.status, r.current_container_id, \
    r.current_image_ref, r.engine_endpoint, r.state_path, r.docker_network, r.started_at, \
    r.stopped_at, r.removed_at, r.last_op_at, r.created_at, h.status AS health_status, \
    h.event_type AS health_event_type, h.container_id AS health_container_id, \
    h.details AS health_details, h.occurred_at AS health_occurred_at \
    FROM runtime_records r LEFT JOIN health_snapshots h ON h.game_id = r.game_id \
    WHERE r.game_id = $1";

/// Discovery's inventory (`$1`: statuses, `$2`: failures since). The two
/// LATERAL subqueries are one index probe each per game, so the cost does
/// not grow with a game's log: the latest operation by
/// `operation_log_game_idx` (game_id, id DESC); the latest recent failure
/// by the partial `operation_log_game_failure_idx` (game_id, finished_at
/// DESC, id DESC) WHERE failure, in whose order `finished_at >= $2` is a
/// range, not a filter over the game's failures. Public for the system
/// test that checks the plan.
pub const MONITORING_ROWS: &str = "SELECT r.game_id, r.status, r.current_container_id, \
         r.current_image_ref, r.engine_endpoint, r.state_path, r.docker_network, r.started_at, \
         r.stopped_at, r.removed_at, r.last_op_at, r.created_at, \
         s.status AS snapshot_status, s.event_type AS snapshot_event_type, \
         s.container_id AS snapshot_container_id, \
         lo.op_kind AS last_op_kind, lf.error_code AS recent_error_code \
     FROM runtime_records r \
     LEFT JOIN health_snapshots s ON s.game_id = r.game_id \
     LEFT JOIN LATERAL (SELECT o.op_kind FROM operation_log o \
         WHERE o.game_id = r.game_id ORDER BY o.id DESC LIMIT 1) lo ON true \
     LEFT JOIN LATERAL (SELECT o.error_code FROM operation_log o \
         WHERE o.game_id = r.game_id AND o.outcome = 'failure' AND o.finished_at >= $2 \
         ORDER BY o.finished_at DESC, o.id DESC LIMIT 1) lf ON true \
     WHERE r.status = ANY($1) ORDER BY r.game_id";

impl Database {
    /// Records with `status` (all when `None`) by game id, from the first
    /// game id after `after`, at most `limit`; the page's cursor is the last
    /// game id on it.
    pub async fn list_records_page(
        &self,
        status: Option<RuntimeStatus>,
        after: Option<&GameId>,
        limit: u32,
    ) -> Result<Page<RuntimeRecord, GameId>, StoreError> {
        let rows = sqlx::query(LIST_RECORDS_PAGE)
            .bind(status.map(RuntimeStatus::as_str))
            .bind(after.map(GameId::as_str))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let records = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::of(records, limit, |r| r.game_id.clone()))
    }

    /// The game's record with its health snapshot (if one was ever written),
    /// in one round trip: `GET runtimes/{id}`.
    pub async fn record_with_health(
        &self,
        game_id: &GameId,
    ) -> Result<Option<(RuntimeRecord, Option<HealthSnapshotRow>)>, StoreError> {
        let Some(row) = sqlx::query(RECORD_WITH_HEALTH)
            .bind(game_id.as_str())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let record = record_from_row(&row)?;
        let health = match row.try_get::<Option<String>, _>("health_status")? {
            None => None,
            Some(status) => Some(HealthSnapshotRow {
                status,
                event_type: row.try_get("health_event_type")?,
                container_id: row.try_get("health_container_id")?,
                details: row
                    .try_get::<sqlx::types::Json<Value>, _>("health_details")?
                    .0,
                occurred_at: row.try_get("health_occurred_at")?,
            }),
        };
        Ok(Some((record, health)))
    }

    /// The game's operation log, newest first, from the first id below
    /// `before`, at most `limit`; the page's cursor is the last id on it. The
    /// log outlives records, so an unknown game is an empty page.
    pub async fn operation_log_page(
        &self,
        game_id: &GameId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<OperationRow, i64>, StoreError> {
        let rows = sqlx::query(OPERATION_LOG_PAGE)
            .bind(game_id.as_str())
            .bind(before)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let operations = rows
            .iter()
            .map(operation_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::of(operations, limit, |o| o.id))
    }

    /// One page of the game's timeline: its operation log, health event
    /// history and stop and removal intents merged, newest first (see
    /// [`TimelineCursor`] for the order), from the first entry past
    /// `before`, at most `limit`; the page's cursor is its last entry's.
    pub async fn timeline_page(
        &self,
        game_id: &GameId,
        before: Option<&TimelineCursor>,
        limit: u32,
    ) -> Result<Page<TimelineItem, TimelineCursor>, StoreError> {
        let rows = sqlx::query(TIMELINE_PAGE)
            .bind(game_id.as_str())
            .bind(before.map(|c| c.at))
            .bind(before.map(|c| c.rank))
            .bind(before.map(|c| c.seq))
            .bind(before.map(|c| c.tie.as_str()))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(timeline_item_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::of(items, limit, |item| item.cursor.clone()))
    }

    /// Versions of the (up) migrations embedded in this binary that the
    /// database does not record as successfully applied; empty when the
    /// schema is current (the readiness probe's `migrations` check).
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        let applied: HashSet<i64> = applied.into_iter().collect();
        Ok(MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// Every record with one of `statuses`, joined with its health snapshot
    /// and its latest (and latest recently failed) operation, by game id.
    /// One statement, so the inventory is a consistent snapshot.
    pub async fn monitoring_rows(
        &self,
        statuses: &[RuntimeStatus],
        failed_since: DateTime<Utc>,
    ) -> Result<Vec<MonitoringRow>, StoreError> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = sqlx::query(MONITORING_ROWS)
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

fn operation_from_row(r: &PgRow) -> Result<OperationRow, StoreError> {
    Ok(OperationRow {
        id: r.try_get("id")?,
        op_kind: r.try_get("op_kind")?,
        op_source: r.try_get("op_source")?,
        source_ref: r.try_get("source_ref")?,
        image_ref: r.try_get("image_ref")?,
        container_id: r.try_get("container_id")?,
        outcome: r.try_get("outcome")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn timeline_item_from_row(r: &PgRow) -> Result<TimelineItem, StoreError> {
    let cursor = TimelineCursor {
        at: r.try_get("at")?,
        rank: r.try_get("rank")?,
        seq: r.try_get("seq")?,
        tie: r.try_get("tie")?,
    };
    let container_id: String = r.try_get("container_id")?;
    let entry = match cursor.rank {
        TimelineCursor::OPERATION => TimelineEntry::Operation(OperationRow {
            id: cursor.seq,
            op_kind: r.try_get("op_kind")?,
            op_source: r.try_get("op_source")?,
            source_ref: r.try_get("source_ref")?,
            image_ref: r.try_get("image_ref")?,
            container_id,
            outcome: r.try_get("outcome")?,
            error_code: r.try_get("error_code")?,
            error_message: r.try_get("error_message")?,
            started_at: r.try_get("started_at")?,
            finished_at: cursor.at,
        }),
        TimelineCursor::HEALTH_EVENT => TimelineEntry::HealthEvent(HealthEventRow {
            id: cursor.seq,
            container_id,
            event_type: r.try_get("event_type")?,
            source: r.try_get("source")?,
            details: r.try_get::<sqlx::types::Json<Value>, _>("details")?.0,
            occurred_at: cursor.at,
        }),
        TimelineCursor::INTENT => TimelineEntry::Intent(IntentRow {
            container_id,
            kind: r.try_get("intent_kind")?,
            recorded_at: cursor.at,
        }),
        other => return Err(StoreError::Corrupt(format!("timeline rank {other}"))),
    };
    Ok(TimelineItem { cursor, entry })
}

#[cfg(test)]
mod tests {
    use super::Page;

    #[test]
    fn a_page_has_a_cursor_only_when_a_row_past_it_was_fetched() {
        let full = Page::of(vec![1, 2, 3], 2, |n| *n * 10);
        assert_eq!(full.items, [1, 2]);
        assert_eq!(full.next, Some(20));
        let last = Page::of(vec![1, 2], 2, |n| *n * 10);
        assert_eq!(last.items, [1, 2]);
        assert_eq!(last.next, None);
        let empty = Page::<i32, i32>::of(vec![], 2, |n| *n);
        assert!(empty.items.is_empty() && empty.next.is_none());
    }
}
