//! The retention section: how long the history tables keep their rows before
//! cleanup-cron prunes them. Defined here once; the pruning (cleanup-cron)
//! and anything that reads the history (the gateway's operation log, a
//! per-game timeline) take the numbers from this section, so a reader knows
//! how far back the history can reach.

use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, Section};

/// Longest accepted retention ([`ranges`] holds every bound). Cut-offs are
/// computed as `now - retention` in chrono and in PostgreSQL; a century
/// keeps that far inside both ranges, and nothing longer is a real
/// retention (it is a typo).
pub use super::ranges::MAX_RETENTION;

/// How long each pruned table keeps a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `operation_log` rows that finished longer ago than this are deleted,
    /// except each game's latest row while the game has a record (discovery
    /// and the gateway show it); `health_event_history` rows that occurred
    /// longer ago too, so a game's timeline reaches back as far in both.
    pub operation_log: Duration,
    /// `removed` records whose `removed_at` is older than this are deleted,
    /// with their health snapshot, inspect observations and health history. A later start
    /// of the game makes a fresh record, as for a new game.
    pub removed_records: Duration,
    /// Stop tombstones created longer ago than this are deleted. A tombstone
    /// refuses a start job requested before the stop but processed after it
    /// (start-job and stop-job are separate consumers, so a start can wait
    /// in its stream or pending list while the stop goes through: a
    /// start-job outage, a backlog, a dead letter replayed by hand). Once
    /// the tombstone is gone such a start would bring the game up again, so
    /// this must exceed any plausible delay of a start job: days, not
    /// minutes. Hence the floor of one day and the default of 30 days.
    pub stop_tombstones: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            operation_log: d::operation_log_retention(),
            removed_records: d::removed_record_retention(),
            stop_tombstones: d::stop_tombstone_retention(),
        }
    }
}

#[derive(Deserialize)]
pub struct RetentionEnv {
    #[serde(default = "d::operation_log_retention", with = "humantime_serde")]
    operation_log_retention: Duration,
    #[serde(default = "d::removed_record_retention", with = "humantime_serde")]
    removed_record_retention: Duration,
    #[serde(default = "d::stop_tombstone_retention", with = "humantime_serde")]
    stop_tombstone_retention: Duration,
}

impl Section for RetentionConfig {
    type Raw = RetentionEnv;
    fn from_raw(raw: RetentionEnv) -> Result<Self, ConfigError> {
        // STOP_TOMBSTONE_RETENTION's floor is a day: a start job requested
        // before a stop may still be waiting in its stream.
        ranges::check(&[
            (
                "OPERATION_LOG_RETENTION",
                raw.operation_log_retention.into(),
            ),
            (
                "REMOVED_RECORD_RETENTION",
                raw.removed_record_retention.into(),
            ),
            (
                "STOP_TOMBSTONE_RETENTION",
                raw.stop_tombstone_retention.into(),
            ),
        ])?;
        Ok(Self {
            operation_log: raw.operation_log_retention,
            removed_records: raw.removed_record_retention,
            stop_tombstones: raw.stop_tombstone_retention,
        })
    }
}

mod d {
    use std::time::Duration;

    const DAY: u64 = 24 * 3600;

    pub fn operation_log_retention() -> Duration {
        Duration::from_secs(90 * DAY)
    }
    pub fn removed_record_retention() -> Duration {
        Duration::from_secs(30 * DAY)
    }
    pub fn stop_tombstone_retention() -> Duration {
        Duration::from_secs(30 * DAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn section(vars: &[(&str, &str)]) -> Result<RetentionConfig, ConfigError> {
        Env::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).section()
    }

    #[test]
    fn defaults_are_safe() {
        let c = section(&[]).unwrap();
        assert_eq!(c, RetentionConfig::default());
        assert_eq!(c.operation_log, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(c.removed_records, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.stop_tombstones, Duration::from_secs(30 * 24 * 3600));
        let c = section(&[("RTMANAGER_OPERATION_LOG_RETENTION", "1year")]).unwrap();
        assert!(c.operation_log > Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("RTMANAGER_OPERATION_LOG_RETENTION", "0s"),
            ("RTMANAGER_OPERATION_LOG_RETENTION", "a while"),
            ("RTMANAGER_OPERATION_LOG_RETENTION", "200years"),
            ("RTMANAGER_REMOVED_RECORD_RETENTION", "0s"),
            (
                "RTMANAGER_REMOVED_RECORD_RETENTION",
                "99999999999999999999d",
            ),
            ("RTMANAGER_STOP_TOMBSTONE_RETENTION", "5m"),
            ("RTMANAGER_STOP_TOMBSTONE_RETENTION", "1000000000000years"),
        ] {
            let err = section(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
    }
}
