//! The durable runtime record of one game and its status machine.

use chrono::{DateTime, Utc};

use super::GameId;

/// Runtime status, as stored in `runtime_records.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeStatus {
    Running,
    Stopped,
    Removed,
}

impl RuntimeStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Removed => "removed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Running, Self::Stopped, Self::Removed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }

    /// The only four transitions of the Go service. A start on a game with no
    /// record (or a removed one) is an upsert, not a transition.
    pub const fn can_become(self, next: RuntimeStatus) -> bool {
        matches!(
            (self, next),
            (Self::Running, Self::Stopped)
                | (Self::Running, Self::Removed)
                | (Self::Stopped, Self::Running)
                | (Self::Stopped, Self::Removed)
        )
    }
}

/// One row of `runtime_records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRecord {
    pub game_id: GameId,
    pub status: RuntimeStatus,
    pub current_container_id: Option<String>,
    pub current_image_ref: Option<String>,
    pub engine_endpoint: String,
    pub state_path: String,
    pub docker_network: String,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub last_op_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::RuntimeStatus::*;

    #[test]
    fn only_the_four_documented_transitions_are_allowed() {
        let all = [Running, Stopped, Removed];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Running, Stopped),
                (Running, Removed),
                (Stopped, Running),
                (Stopped, Removed)
            ]
        );
    }
}
