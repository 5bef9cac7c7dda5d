//! Retention: cleanup-cron's pruning of the history tables
//! (`operation_log` and `health_event_history`, `removed` records with their
//! snapshots, observations and health history, `stop_tombstones`), by the
//! ages of the retention section.
//!
//! Every statement deletes at most `batch` rows and is its own transaction,
//! looped until a batch comes back short: a backlog of millions is worked
//! off without one long transaction holding row locks or bloating WAL in
//! one go. Each statement repeats its age test in the outer `WHERE`, so a
//! row changed meanwhile by an operation (a record started again, a
//! tombstone moved forward) is re-checked by PostgreSQL and kept. Nothing
//! here takes a game lease: the row conditions are the whole safety.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Database, StoreError};
use crate::config::RetentionConfig;

/// Rows deleted by one prune, by table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneCounts {
    pub operation_log: u64,
    /// `removed` records past retention.
    pub removed_records: u64,
    /// Snapshots of those records, and snapshots left without a record.
    pub health_snapshots: u64,
    /// Observations of those records, and of containers no record holds.
    pub inspect_observations: u64,
    /// Health history of those records, and events older than the
    /// operation log's retention.
    pub health_event_history: u64,
    pub stop_tombstones: u64,
    /// Stop and removal intents, pruned with the tombstones.
    pub container_intents: u64,
}

/// What one prune of removed records deleted, by table.
#[derive(Debug, Default)]
struct RemovedCounts {
    records: u64,
    snapshots: u64,
    observations: u64,
    history: u64,
}

/// One batch of the operation log, walked in `(finished_at, id)` order from
/// a cursor (the old rows kept as their game's latest are not scanned
/// again). A row goes when a newer row of its game exists — so a game's
/// latest row stays, whatever runs concurrently, as the log is append-only —
/// or when its game has no record (nothing shows it as the latest; without
/// this each game ever seen would keep one row forever).
const PRUNE_OPERATION_LOG: &str = "WITH batch AS ( \
         SELECT id, game_id, finished_at FROM operation_log \
         WHERE finished_at < $1 \
           AND (finished_at, id) > (COALESCE($2, '-infinity'::timestamptz), COALESCE($3, 0)) \
         ORDER BY finished_at, id LIMIT $4), \
     gone AS ( \
         DELETE FROM operation_log o USING batch b WHERE o.id = b.id \
           AND (EXISTS (SELECT 1 FROM operation_log n WHERE n.game_id = b.game_id AND n.id > b.id) \
                OR NOT EXISTS (SELECT 1 FROM runtime_records r WHERE r.game_id = b.game_id)) \
         RETURNING 1), \
     last AS (SELECT finished_at, id FROM batch ORDER BY finished_at DESC, id DESC LIMIT 1) \
     SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT count(*) FROM batch) AS scanned, \
         (SELECT finished_at FROM last) AS last_finished_at, (SELECT id FROM last) AS last_id";

/// One batch of `removed` records, with their snapshots, observations,
/// health history and start requests in the same statement (one snapshot,
/// one commit: a start that re-creates the game waits on the deleted row and
/// then inserts afresh, and its new history is not touched). A game's
/// history is bounded by the operation log's retention, so a batch of
/// records deletes a bounded number of history rows. The game's fencing
/// token and outbox sequence go too, or both tables would keep a row per
/// game ever seen: no lease holder lives the record retention (a day at
/// least) past the removal, and the sequence goes only with nothing of the
/// game left to deliver (a game started afresh counts again from 1).
const PRUNE_REMOVED_RECORDS: &str = "WITH gone AS ( \
         DELETE FROM runtime_records WHERE game_id IN ( \
             SELECT game_id FROM runtime_records WHERE status = 'removed' AND removed_at < $1 \
             ORDER BY removed_at LIMIT $2) \
         AND status = 'removed' AND removed_at < $1 \
         RETURNING game_id), \
     snapshots AS ( \
         DELETE FROM health_snapshots WHERE game_id IN (SELECT game_id FROM gone) RETURNING 1), \
     observations AS ( \
         DELETE FROM inspect_observations WHERE game_id IN (SELECT game_id FROM gone) RETURNING 1), \
     history AS ( \
         DELETE FROM health_event_history WHERE game_id IN (SELECT game_id FROM gone) RETURNING 1), \
     start_requests AS ( \
         DELETE FROM start_requests WHERE game_id IN (SELECT game_id FROM gone)), \
     fences AS ( \
         DELETE FROM game_fences WHERE game_id IN (SELECT game_id FROM gone)), \
     sequences AS ( \
         DELETE FROM outbox_game_seq s WHERE s.game_id IN (SELECT game_id FROM gone) \
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.game_id = s.game_id AND o.delivered_at IS NULL)) \
     SELECT (SELECT count(*) FROM gone) AS records, (SELECT count(*) FROM snapshots) AS snapshots, \
         (SELECT count(*) FROM observations) AS observations, \
         (SELECT count(*) FROM history) AS history";

/// Snapshots of games without a record (an event that arrived after the
/// record was pruned), untouched since the cut-off.
const PRUNE_ORPHAN_SNAPSHOTS: &str = "DELETE FROM health_snapshots WHERE game_id IN ( \
         SELECT s.game_id FROM health_snapshots s WHERE s.updated_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM runtime_records r WHERE r.game_id = s.game_id) \
         LIMIT $2) \
     AND updated_at < $1";

/// inspect-cron's memory of containers that no live record holds, untouched
/// since the cut-off: its passes prune containers that are gone, but only
/// while inspect-cron runs and only those it lists; these are the leftovers.
/// The memory of a record's current container is kept however old.
const PRUNE_ORPHAN_OBSERVATIONS: &str = "DELETE FROM inspect_observations WHERE container_id IN ( \
         SELECT o.container_id FROM inspect_observations o WHERE o.observed_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM runtime_records r WHERE r.game_id = o.game_id \
               AND r.status <> 'removed' AND r.current_container_id = o.container_id) \
         LIMIT $2) \
     AND observed_at < $1";

/// Health events that occurred before the cut-off (the operation log's
/// retention: a timeline reaches back as far in both), oldest first, through
/// `health_event_history_occurred_idx`. Unlike the log, no latest row is
/// kept: the game's snapshot holds its latest event.
const PRUNE_HEALTH_HISTORY: &str = "DELETE FROM health_event_history WHERE id IN ( \
         SELECT id FROM health_event_history WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2) \
     AND occurred_at < $1";

/// Tombstones by `created_at`, which moves forward with the tombstone: the
/// window a late start must be refused in starts when the stop went through.
const PRUNE_STOP_TOMBSTONES: &str = "DELETE FROM stop_tombstones WHERE game_id IN ( \
         SELECT game_id FROM stop_tombstones WHERE created_at < $1 ORDER BY created_at LIMIT $2) \
     AND created_at < $1";

const PRUNE_CONTAINER_INTENTS: &str = "DELETE FROM container_intents WHERE (container_id, kind) IN ( \
         SELECT container_id, kind FROM container_intents WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2)";

/// `now - retention`; retentions are validated to at most a century, so this
/// never saturates in practice.
pub(super) fn cutoff(now: DateTime<Utc>, retention: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Database {
    /// Prunes every history table by `retention`, `batch` rows per
    /// statement. Records go first, so the log rows of a game pruned now
    /// are no longer kept as its latest.
    pub async fn prune_history(
        &self,
        retention: &RetentionConfig,
        batch: u32,
    ) -> Result<PruneCounts, StoreError> {
        let now = Utc::now();
        let records_cutoff = cutoff(now, retention.removed_records);
        let removed = self.prune_removed_records(records_cutoff, batch).await?;
        let orphan_snapshots = self
            .delete_batched(PRUNE_ORPHAN_SNAPSHOTS, records_cutoff, batch)
            .await?;
        let orphan_observations = self
            .delete_batched(PRUNE_ORPHAN_OBSERVATIONS, records_cutoff, batch)
            .await?;
        let old_history = self
            .delete_batched(
                PRUNE_HEALTH_HISTORY,
                cutoff(now, retention.operation_log),
                batch,
            )
            .await?;
        Ok(PruneCounts {
            removed_records: removed.records,
            health_snapshots: removed.snapshots + orphan_snapshots,
            inspect_observations: removed.observations + orphan_observations,
            health_event_history: removed.history + old_history,
            stop_tombstones: self
                .delete_batched(
                    PRUNE_STOP_TOMBSTONES,
                    cutoff(now, retention.stop_tombstones),
                    batch,
                )
                .await?,
            container_intents: self
                .delete_batched(
                    PRUNE_CONTAINER_INTENTS,
                    cutoff(now, retention.stop_tombstones),
                    batch,
                )
                .await?,
            operation_log: self
                .prune_operation_log(cutoff(now, retention.operation_log), batch)
                .await?,
        })
    }

    /// Operation-log rows that finished before `cutoff`, but each game's
    /// latest row while the game has a record.
    pub async fn prune_operation_log(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut after: (Option<DateTime<Utc>>, Option<i64>) = (None, None);
        loop {
            let row = sqlx::query(PRUNE_OPERATION_LOG)
                .bind(cutoff)
                .bind(after.0)
                .bind(after.1)
                .bind(i64::from(batch))
                .fetch_one(&self.pool)
                .await?;
            deleted += count(row.try_get("deleted")?);
            if count(row.try_get("scanned")?) < u64::from(batch) {
                return Ok(deleted);
            }
            after = (row.try_get("last_finished_at")?, row.try_get("last_id")?);
        }
    }

    /// `removed` records whose `removed_at` is before `cutoff`, with their
    /// snapshots, observations and health history.
    async fn prune_removed_records(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<RemovedCounts, StoreError> {
        let mut total = RemovedCounts::default();
        loop {
            let row = sqlx::query(PRUNE_REMOVED_RECORDS)
                .bind(cutoff)
                .bind(i64::from(batch))
                .fetch_one(&self.pool)
                .await?;
            let records = count(row.try_get("records")?);
            total.records += records;
            total.snapshots += count(row.try_get("snapshots")?);
            total.observations += count(row.try_get("observations")?);
            total.history += count(row.try_get("history")?);
            // Short: nothing left (or a record was started meanwhile; the
            // next pass sees the rest).
            if records < u64::from(batch) {
                return Ok(total);
            }
        }
    }

    /// Runs a `DELETE ... LIMIT $2` statement until it deletes less than a batch.
    async fn delete_batched(
        &self,
        statement: &'static str,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(statement)
                .bind(cutoff)
                .bind(i64::from(batch))
                .execute(&self.pool)
                .await?
                .rows_affected();
            deleted += done;
            if done < u64::from(batch) {
                return Ok(deleted);
            }
        }
    }
}

/// `count(*)` is a non-negative bigint.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}
