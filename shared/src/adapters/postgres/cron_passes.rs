//! The `cron_passes` table: each pass of inspect-cron, cleanup-cron and
//! `sync-file-sd`, and the newest of each job for the gateway's `/metrics`.
//!
//! Kept bounded without a setting: each insert deletes, in its own
//! statement, the job's rows beyond its newest [`KEPT_PER_JOB`], never its
//! newest success (so `rtmanager_cron_last_success_timestamp_seconds` stays
//! known through a long run of failures). A pass a minute keeps about
//! 16 hours.

use sqlx::Row;

use super::{Database, StoreError};
use crate::domain::{CronJob, CronPass, LastCronPass, Outcome};

/// Rows kept per job.
pub const KEPT_PER_JOB: i64 = 1000;

impl Database {
    /// Records `pass`, then prunes the job's old rows.
    pub async fn record_cron_pass(&self, pass: &CronPass) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO cron_passes (job, started_at, finished_at, outcome, counts, error) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(pass.job.as_str())
        .bind(pass.started_at)
        .bind(pass.finished_at)
        .bind(pass.outcome.as_str())
        .bind(sqlx::types::Json(&pass.counts))
        .bind(&pass.error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM cron_passes WHERE job = $1 \
               AND id < (SELECT id FROM cron_passes WHERE job = $1 ORDER BY id DESC OFFSET $2 - 1 LIMIT 1) \
               AND id IS DISTINCT FROM (SELECT max(id) FROM cron_passes WHERE job = $1 AND outcome = 'success')",
        )
        .bind(pass.job.as_str())
        .bind(KEPT_PER_JOB)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest pass of each job that has one, with its newest success.
    pub async fn last_cron_passes(&self) -> Result<Vec<LastCronPass>, StoreError> {
        let jobs: Vec<&str> = CronJob::ALL.iter().map(|j| j.as_str()).collect();
        let rows = sqlx::query(
            "SELECT j.job, l.started_at, l.finished_at, l.outcome, s.finished_at AS last_success_at \
             FROM unnest($1::text[]) AS j(job) \
             JOIN LATERAL (SELECT started_at, finished_at, outcome FROM cron_passes \
                 WHERE job = j.job ORDER BY id DESC LIMIT 1) l ON true \
             LEFT JOIN LATERAL (SELECT finished_at FROM cron_passes \
                 WHERE job = j.job AND outcome = 'success' ORDER BY id DESC LIMIT 1) s ON true",
        )
        .bind(&jobs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| -> Result<LastCronPass, StoreError> {
                let job: String = row.try_get("job")?;
                let outcome: String = row.try_get("outcome")?;
                Ok(LastCronPass {
                    job: CronJob::parse(&job)
                        .ok_or_else(|| StoreError::Corrupt(format!("cron_passes.job {job:?}")))?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    outcome: Outcome::parse(&outcome).ok_or_else(|| {
                        StoreError::Corrupt(format!("cron_passes.outcome {outcome:?}"))
                    })?,
                    last_success_at: row.try_get("last_success_at")?,
                })
            })
            .collect()
    }
}
