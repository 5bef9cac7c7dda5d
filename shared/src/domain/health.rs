//! Health events of `runtime:health_events` (contracts/runtime-health.asyncapi.yaml).

use serde::Serialize;
use serde_json::json;

use super::operation::wire_enum;
use super::GameId;

wire_enum! {
    /// The frozen `event_type` enum; adding a value is a contract bump.
    EventType {
        ContainerStarted => "container_started",
        ContainerExited => "container_exited",
        ContainerOom => "container_oom",
        ContainerDisappeared => "container_disappeared",
        InspectUnhealthy => "inspect_unhealthy",
        ProbeFailed => "probe_failed",
        ProbeRecovered => "probe_recovered",
    }
}

wire_enum! {
    /// Who observed a health event: the `source` of its row in
    /// `health_event_history` (a game's timeline). Not a stream field: the
    /// contract's entries stay as they are. `start` is a start (start-job's,
    /// or rest-gateway's start, restart or patch): `container_started`.
    HealthSource {
        Start => "start",
        DockerEvents => "docker_events",
        InspectCron => "inspect_cron",
        HealthzProber => "healthz_prober",
    }
}

/// The closed `details` object of each event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthDetails {
    ContainerStarted {
        image_ref: String,
    },
    ContainerExited {
        exit_code: i64,
        oom: bool,
    },
    ContainerOom {
        exit_code: i64,
    },
    ContainerDisappeared,
    InspectUnhealthy {
        restart_count: i64,
        state: String,
        health: String,
    },
    ProbeFailed {
        consecutive_failures: i64,
        last_status: i64,
        last_error: String,
    },
    ProbeRecovered {
        prior_failure_count: i64,
    },
}

impl HealthDetails {
    pub fn event_type(&self) -> EventType {
        match self {
            Self::ContainerStarted { .. } => EventType::ContainerStarted,
            Self::ContainerExited { .. } => EventType::ContainerExited,
            Self::ContainerOom { .. } => EventType::ContainerOom,
            Self::ContainerDisappeared => EventType::ContainerDisappeared,
            Self::InspectUnhealthy { .. } => EventType::InspectUnhealthy,
            Self::ProbeFailed { .. } => EventType::ProbeFailed,
            Self::ProbeRecovered { .. } => EventType::ProbeRecovered,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::ContainerStarted { image_ref } => json!({ "image_ref": image_ref }),
            Self::ContainerExited { exit_code, oom } => {
                json!({ "exit_code": exit_code, "oom": oom })
            }
            Self::ContainerOom { exit_code } => json!({ "exit_code": exit_code }),
            Self::ContainerDisappeared => json!({}),
            Self::InspectUnhealthy {
                restart_count,
                state,
                health,
            } => json!({ "restart_count": restart_count, "state": state, "health": health }),
            Self::ProbeFailed {
                consecutive_failures,
                last_status,
                last_error,
            } => json!({
                "consecutive_failures": consecutive_failures,
                "last_status": last_status,
                "last_error": last_error,
            }),
            Self::ProbeRecovered {
                prior_failure_count,
            } => json!({ "prior_failure_count": prior_failure_count }),
        }
    }
}

/// One observation about a game's engine container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub game_id: GameId,
    pub container_id: String,
    /// Unix milliseconds when rtmanager (or the daemon, for Docker events) observed it.
    pub occurred_at_ms: i64,
    pub details: HealthDetails,
}

/// `health_snapshots.status`: `healthy` after `container_started` or
/// `probe_recovered`, otherwise the event type itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus(&'static str);

impl SnapshotStatus {
    pub fn of(event_type: EventType) -> Self {
        match event_type {
            EventType::ContainerStarted | EventType::ProbeRecovered => Self("healthy"),
            other => Self(other.as_str()),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// One constructor per event type: the contract's seven shapes live here and
/// nowhere else. `at_ms` is when the observation was made (Unix ms).
impl HealthEvent {
    fn new(game_id: &GameId, container_id: &str, at_ms: i64, details: HealthDetails) -> Self {
        Self {
            game_id: game_id.clone(),
            container_id: container_id.to_owned(),
            occurred_at_ms: at_ms,
            details,
        }
    }

    pub fn container_started(
        game_id: &GameId,
        container_id: &str,
        at_ms: i64,
        image_ref: &str,
    ) -> Self {
        let image_ref = image_ref.to_owned();
        Self::new(
            game_id,
            container_id,
            at_ms,
            HealthDetails::ContainerStarted { image_ref },
        )
    }

    pub fn container_exited(
        game_id: &GameId,
        container_id: &str,
        at_ms: i64,
        exit_code: i64,
        oom: bool,
    ) -> Self {
        let details = HealthDetails::ContainerExited { exit_code, oom };
        Self::new(game_id, container_id, at_ms, details)
    }

    pub fn container_oom(game_id: &GameId, container_id: &str, at_ms: i64, exit_code: i64) -> Self {
        Self::new(
            game_id,
            container_id,
            at_ms,
            HealthDetails::ContainerOom { exit_code },
        )
    }

    pub fn container_disappeared(game_id: &GameId, container_id: &str, at_ms: i64) -> Self {
        Self::new(
            game_id,
            container_id,
            at_ms,
            HealthDetails::ContainerDisappeared,
        )
    }

    /// `state` is the engine's own string, carried verbatim.
    pub fn inspect_unhealthy(
        game_id: &GameId,
        container_id: &str,
        at_ms: i64,
        restart_count: i64,
        state: &str,
        health: &str,
    ) -> Self {
        let details = HealthDetails::InspectUnhealthy {
            restart_count,
            state: state.to_owned(),
            health: health.to_owned(),
        };
        Self::new(game_id, container_id, at_ms, details)
    }

    pub fn probe_failed(
        game_id: &GameId,
        container_id: &str,
        at_ms: i64,
        consecutive_failures: i64,
        last_status: i64,
        last_error: &str,
    ) -> Self {
        let details = HealthDetails::ProbeFailed {
            consecutive_failures,
            last_status,
            last_error: last_error.to_owned(),
        };
        Self::new(game_id, container_id, at_ms, details)
    }

    pub fn probe_recovered(
        game_id: &GameId,
        container_id: &str,
        at_ms: i64,
        prior_failure_count: i64,
    ) -> Self {
        let details = HealthDetails::ProbeRecovered {
            prior_failure_count,
        };
        Self::new(game_id, container_id, at_ms, details)
    }

    pub fn event_type(&self) -> EventType {
        self.details.event_type()
    }

    /// The outbox dedupe key of a container observation (`container_exited`,
    /// `container_oom`, `container_disappeared`):
    /// `health:{event_type}:{container_id}`. A container exits, OOMs and
    /// disappears at most once while it is current (a replaced container
    /// gets a new id), so one event of each type per container is the whole
    /// truth. Every source of these stages them under this key (docker-events
    /// from its stream and its catch-up, inspect-cron's reconcile pass), so
    /// each is published once, whichever source sees it first.
    pub fn observation_key(&self) -> String {
        format!(
            "health:{}:{}",
            self.event_type().as_str(),
            self.container_id
        )
    }

    /// The outbox dedupe key of a probe transition (`probe_failed`,
    /// `probe_recovered`) decided for the probe slot `slot`:
    /// `health:{event_type}:{container_id}:{slot}`. A game's streak decides
    /// at most one transition per slot, so committing it again (after a
    /// crash, or by an overlapping prober) publishes it once.
    pub fn probe_transition_key(&self, slot: u64) -> String {
        format!("{}:{slot}", self.observation_key())
    }

    /// Flat stream fields: one per top-level property, `details` as JSON text,
    /// integers as decimal strings.
    pub fn stream_fields(&self) -> Vec<(String, String)> {
        vec![
            ("game_id".into(), self.game_id.to_string()),
            ("container_id".into(), self.container_id.clone()),
            (
                "event_type".into(),
                self.details.event_type().as_str().into(),
            ),
            ("occurred_at_ms".into(), self.occurred_at_ms.to_string()),
            ("details".into(), self.details.to_json().to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_status_is_healthy_only_after_start_or_recovery() {
        assert_eq!(
            SnapshotStatus::of(EventType::ContainerStarted).as_str(),
            "healthy"
        );
        assert_eq!(
            SnapshotStatus::of(EventType::ProbeRecovered).as_str(),
            "healthy"
        );
        assert_eq!(
            SnapshotStatus::of(EventType::ProbeFailed).as_str(),
            "probe_failed"
        );
    }

    #[test]
    fn dedupe_keys_name_the_event_type_and_container() {
        let game = GameId::parse("g1").unwrap();
        assert_eq!(
            HealthEvent::container_disappeared(&game, "c1", 5).observation_key(),
            "health:container_disappeared:c1"
        );
        assert_eq!(
            HealthEvent::probe_recovered(&game, "c1", 5, 3).probe_transition_key(42),
            "health:probe_recovered:c1:42"
        );
    }

    #[test]
    fn health_sources_are_the_history_tables_check_set() {
        let migration = include_str!("../../../migrations/20261202000002_health_event_history.sql");
        let set: Vec<String> = HealthSource::ALL
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let check = format!("source IN ({}", set.join(", "));
        let flat = migration.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&check), "{check} not in the migration");
        assert_eq!(
            set,
            [
                "'start'",
                "'docker_events'",
                "'inspect_cron'",
                "'healthz_prober'"
            ]
        );
    }

    #[test]
    fn stream_fields_are_flat_with_json_details() {
        let event =
            HealthEvent::container_exited(&GameId::parse("g1").unwrap(), "c", 17, 137, false);
        let fields = event.stream_fields();
        assert_eq!(fields[2], ("event_type".into(), "container_exited".into()));
        assert_eq!(fields[3], ("occurred_at_ms".into(), "17".into()));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&fields[4].1).unwrap(),
            json!({"exit_code": 137, "oom": false})
        );
    }
}
