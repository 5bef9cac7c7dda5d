//! What is probed and what a probe came to.
//!
//! A [`Target`] is a `running` record of this shard, re-read from PostgreSQL
//! every `RTMANAGER_PROBE_REFRESH_INTERVAL`; a [`Verdict`] is what one slot
//! of one target came to, including why nothing was observed ([`Skip`]):
//! skipped slots are not failures, so they never count towards a streak.

use chrono::{DateTime, Utc};
use shared::domain::{GameId, RuntimeRecord, RuntimeStatus};

/// What the prober needs of a running record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub game_id: GameId,
    pub container_id: String,
    pub engine_endpoint: String,
    pub docker_network: String,
    pub started_at: Option<DateTime<Utc>>,
}

impl Target {
    /// `None` for a record that is not running or has no container.
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

/// Per-target memory of a prober task (the `container_ip` address cache).
#[derive(Debug, Default)]
pub struct TargetState {
    /// `(container_id, url)` of the last inspect.
    pub(crate) cached_url: Option<(String, String)>,
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
        };
        assert_eq!(target("http://galaxy-game-g:8080").endpoint_port(), 8080);
        assert_eq!(target("http://galaxy-game-g:9000/").endpoint_port(), 9000);
        assert_eq!(target("http://galaxy-game-g").endpoint_port(), 8080);
    }
}
