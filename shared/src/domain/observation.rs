//! What inspect-cron saw of a container, and what earlier passes remember of
//! it (`inspect_observations`), so each unhealthy observation is published once.

use super::{ContainerState, GameId, HealthEvent};

/// What one inspect saw: the `inspect_unhealthy` details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub state: ContainerState,
    pub health: String,
    pub restart_count: i64,
}

impl Observation {
    /// The `inspect_unhealthy` event reporting this observation.
    pub fn event(&self, game_id: &GameId, container_id: &str, at_ms: i64) -> HealthEvent {
        HealthEvent::inspect_unhealthy(
            game_id,
            container_id,
            at_ms,
            self.restart_count,
            self.state.as_str(),
            &self.health,
        )
    }
}

/// What earlier passes remember about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservationMemory {
    /// The RestartCount last accounted for.
    pub restart_count: i64,
    /// The last published unhealthy observation; `None` after a healthy one.
    pub published: Option<Observation>,
}
