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
