//! What is probed and what a probe came to.
//!
//! A [`Target`] is a `running` record of this shard, re-read from PostgreSQL
//! every `RTMANAGER_PROBE_REFRESH_INTERVAL`; a [`Verdict`] is what one slot
//! of one target came to, including why nothing was observed ([`Skip`]):
//! skipped slots are not failures, so they never count towards a streak.
//!
//! A target also carries what PostgreSQL committed of its probe streak (the
//! health snapshot, read with the record): the fallback seed of a streak
//! Redis lost, when the fresh one-game read fails ([`TargetState::seed`]).

use chrono::{DateTime, Utc};
use shared::adapters::postgres::{CommittedStreak, OpenProbeFailure, ProbeTarget};
use shared::domain::{GameId, RuntimeRecord, RuntimeStatus};

/// What the prober needs of a running record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub game_id: GameId,
    pub container_id: String,
    pub engine_endpoint: String,
    pub docker_network: String,
    pub started_at: Option<DateTime<Utc>>,
    /// The game's health snapshot as of the last refresh.
    pub committed: CommittedStreak,
}

impl Target {
    /// `None` for a record that is not running or has no container. Nothing
    /// committed is known of its streak.
    pub fn from_record(record: &RuntimeRecord) -> Option<Self> {
        if record.status != RuntimeStatus::Running {
            return None;
        }
        Some(Self {
            game_id: record.game_id.clone(),
            container_id: record.current_container_id.clone()?,
            engine_endpoint: record.engine_endpoint.clone(),
            docker_network: record.docker_network.clone(),
            started_at: record.started_at,
            committed: CommittedStreak::default(),
        })
    }

    /// A running record with its committed streak.
    pub fn from_probe_target(target: &ProbeTarget) -> Option<Self> {
        Some(Self {
            committed: target.committed.clone(),
            ..Self::from_record(&target.record)?
        })
    }

    /// The port of the stored endpoint (`http://host:port`), else 8080.
    pub(crate) fn endpoint_port(&self) -> u16 {
        self.engine_endpoint
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8080)
    }
}

/// Why a slot passed without an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Younger than `RTMANAGER_PROBE_INITIAL_GRACE`.
    Grace,
    /// The game's lease is held: an operation is running.
    Leased,
    /// `container_ip` mode and Docker is away: not the engine's failure.
    EngineUnavailable,
    /// The streak could not be read or written.
    RedisUnavailable,
    /// The prober is stopping, or the target was dropped.
    Cancelled,
}

/// What one slot of one game came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    NotProbed(Skip),
    Healthy,
    /// A failure below the threshold, or during an already reported streak.
    Failing {
        consecutive_failures: i64,
    },
    /// `probe_failed` was published.
    Failed {
        consecutive_failures: i64,
    },
    /// `probe_recovered` was published.
    Recovered {
        prior_failure_count: i64,
    },
    /// This slot was already observed (an overlapping prober, a restart).
    Duplicate,
    /// A failure not counted: meanwhile the record stopped, got another
    /// container, or an operation took the lease.
    Discarded,
}

/// Per-target memory of a prober task: the `container_ip` address cache and
/// the last transition the task committed.
#[derive(Debug, Default)]
pub struct TargetState {
    /// `(container_id, url)` of the last inspect.
    pub(crate) cached_url: Option<(String, String)>,
    /// The streak as this task's last committed event left it.
    pub(crate) committed: Option<CommittedStreak>,
}

impl TargetState {
    /// The fallback seed of a missing Redis streak, used only when reading
    /// the game's committed streak from PostgreSQL fails
    /// (`Prober::committed_open_failure`): the newer of the target's snapshot
    /// and this task's own last commit.
    ///
    /// It is up to one refresh interval old: a transition another prober
    /// (a restart, an overlapping shard) committed since the last refresh is
    /// missing from it, so with PostgreSQL away at that moment one decision
    /// can repeat a `probe_failed` or miss a `probe_recovered`.
    pub fn seed<'a>(&'a self, target: &'a Target) -> Option<&'a OpenProbeFailure> {
        let newest = match &self.committed {
            Some(own) if own.occurred_at_ms > target.committed.occurred_at_ms => own,
            _ => &target.committed,
        };
        newest.open_failure.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(id: &str) -> GameId {
        GameId::parse(id).unwrap()
    }

    #[test]
    fn the_endpoint_port_is_kept_in_container_ip_mode() {
        let target = |endpoint: &str| Target {
            game_id: game("g"),
            container_id: "c".into(),
            engine_endpoint: endpoint.into(),
            docker_network: "n".into(),
            started_at: None,
            committed: CommittedStreak::default(),
        };
        assert_eq!(target("http://galaxy-game-g:8080").endpoint_port(), 8080);
        assert_eq!(target("http://galaxy-game-g:9000/").endpoint_port(), 9000);
        assert_eq!(target("http://galaxy-game-g").endpoint_port(), 8080);
    }
}
