//! One pass of a one-shot or periodic job (inspect-cron, cleanup-cron,
//! `rest-gateway sync-file-sd`), as recorded in `cron_passes`: a one-shot
//! run serves no `/metrics`, so its passes are made visible through the
//! gateway's (`rtmanager_cron_last_*{job}`), which reads them back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::operation::wire_enum;
use super::Outcome;

wire_enum! {
    /// `cron_passes.job`, matching the SQL CHECK set: the binary (or
    /// subcommand) that ran the pass.
    CronJob {
        InspectCron => "inspect-cron",
        CleanupCron => "cleanup-cron",
        SyncFileSd => "sync-file-sd",
    }
}

/// One finished pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronPass {
    pub job: CronJob,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// What the pass counted (`inspected`, `removed`, `targets`, ...).
    pub counts: BTreeMap<String, i64>,
    /// Why it failed; empty on success.
    pub error: String,
}

impl CronPass {
    /// A pass of `job` that began at `started_at` and ends now, with
    /// `counts`, or failed with `error`.
    pub fn finished(
        job: CronJob,
        started_at: DateTime<Utc>,
        result: Result<BTreeMap<String, i64>, String>,
    ) -> Self {
        let (outcome, counts, error) = match result {
            Ok(counts) => (Outcome::Success, counts, String::new()),
            Err(error) => (Outcome::Failure, BTreeMap::new(), error),
        };
        Self {
            job,
            started_at,
            finished_at: Utc::now(),
            outcome,
            counts,
            error,
        }
    }
}

/// The newest pass of a job, and its newest successful one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCronPass {
    pub job: CronJob,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// `finished_at` of the newest successful pass, if any is kept.
    pub last_success_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_names_are_the_binaries() {
        let names: Vec<_> = CronJob::ALL.iter().map(|j| j.as_str()).collect();
        assert_eq!(names, ["inspect-cron", "cleanup-cron", "sync-file-sd"]);
        let failed = CronPass::finished(CronJob::SyncFileSd, Utc::now(), Err("redis".into()));
        assert_eq!(
            (failed.outcome, failed.error.as_str()),
            (Outcome::Failure, "redis")
        );
        assert!(failed.finished_at >= failed.started_at);
    }
}
