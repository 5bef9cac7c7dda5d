//! Monitoring discovery: which engine containers exist, in Prometheus HTTP
//! service discovery format.
//!
//! `GET /api/v1/internal/monitoring/targets[?include=historical]` answers
//! `application/json`: `[{"targets": ["galaxy-game-{id}:8080"], "labels":
//! {...}}]`, one group per game, by game id. Only `running` games unless
//! `include=historical` asks for `stopped` and `removed` ones too. The same
//! inventory is written for `file_sd` by [`crate::file_sd`].
//!
//! # Labels
//! Target labels, stable for a game's life (a change of any of them makes a
//! new target, and new series, in Prometheus):
//! - `vmid`: the game id (seed 003's required label; the game is the unit).
//! - `instance`: the target address, `galaxy-game-{id}:8080`, which is what
//!   Prometheus itself would name the instance, so series scraped from the
//!   target and labels from discovery agree.
//! - `container_type`: always `game-engine`.
//! - `game_id`, `image_ref` (empty when the record has none).
//!
//! Lifecycle and debug state changes often, so it is given as
//! `__meta_rtmanager_*` labels: visible in Prometheus's discovered labels and
//! usable in relabeling, dropped from the stored series unless a relabel rule
//! keeps them:
//! - `status`: `running`, `stopped` or `removed`.
//! - `ready`: `true` when the game is running and its latest health snapshot
//!   is `healthy` for its current container.
//! - `connectable`: `true` when the game is running with a container.
//! - `operation_in_progress`: `true` while the game's lease is held.
//! - `operation_type`: `unknown` while an operation is in progress (the lease
//!   does not name its operation, and the operation log records operations
//!   when they end), else empty.
//! - `last_operation`: `op_kind` of the latest finished operation.
//! - `last_health_event`: `event_type` of the latest health snapshot.
//! - `last_error_code`: `error_code` of the latest operation that failed in
//!   the last hour, else empty.
//!
//! Labels come from runtime records, health snapshots, the operation log and
//! the lease only, never from environment, configuration or DSNs, so no
//! secret can reach a label or a target URL. Values are the stored
//! vocabularies (validated game ids, status words, error codes) and the image
//! reference.
//!
//! # Failure
//! Discovery fails closed: without a valid bearer token the auth layer
//! answers 401; when PostgreSQL or Redis cannot be read the answer is 503 in
//! the error envelope and an error is logged, never a partial or stale list.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::adapters::postgres::{Database, MonitoringRow, StoreError};
use shared::adapters::{LeaseStore, RedisError};
use shared::domain::{ErrorCode, RuntimeStatus};

use crate::error::ApiError;
use crate::extract::StrictQuery;
use crate::state::AppState;

/// `container_type` of every target rtmanager discovers.
pub const CONTAINER_TYPE: &str = "game-engine";
/// How far back a failed operation is still reported as `last_error_code`.
pub const RECENT_FAILURE: Duration = Duration::from_secs(3600);
/// Prefix of the lifecycle/debug labels (Prometheus drops `__meta_*` labels
/// after relabeling).
pub const META: &str = "__meta_rtmanager_";

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/internal/monitoring/targets", get(targets))
}

/// One Prometheus target group (HTTP SD and `file_sd` share the format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Why the inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("reading runtime records: {0}")]
    Store(#[from] StoreError),
    #[error("reading game leases: {0}")]
    Redis(#[from] RedisError),
}

impl DiscoveryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Store(e) => e.code(),
            Self::Redis(e) => e.code(),
        }
    }
}

/// Which games to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `running` games only.
    Active,
    /// Every game with a record: `running`, `stopped` and `removed`.
    Historical,
}

impl Scope {
    fn statuses(self) -> &'static [RuntimeStatus] {
        match self {
            Self::Active => &[RuntimeStatus::Running],
            Self::Historical => &[
                RuntimeStatus::Running,
                RuntimeStatus::Stopped,
                RuntimeStatus::Removed,
            ],
        }
    }
}

/// The target inventory: one PostgreSQL statement, then one lease check per
/// game (concurrent, pipelined on one Redis connection).
pub async fn inventory(
    db: &Database,
    leases: &LeaseStore,
    scope: Scope,
) -> Result<Vec<TargetGroup>, DiscoveryError> {
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(RECENT_FAILURE).unwrap_or(chrono::Duration::zero());
    let rows = db.monitoring_rows(scope.statuses(), since).await?;
    let held = futures_util::future::try_join_all(
        rows.iter().map(|row| leases.is_held(&row.record.game_id)),
    )
    .await?;
    Ok(rows
        .iter()
        .zip(held)
        .map(|(row, held)| target_group(row, held))
        .collect())
}

/// `host:port` of the engine endpoint (`http://galaxy-game-{id}:8080`); the
/// conventional address when the stored endpoint has no explicit port.
fn address(row: &MonitoringRow) -> String {
    let endpoint = &row.record.engine_endpoint;
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Never carry userinfo (`user:pass@`) into a target.
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if has_port {
        authority.to_owned()
    } else {
        format!("{}:8080", row.record.game_id.container_name())
    }
}

fn bool_label(v: bool) -> String {
    if v { "true" } else { "false" }.to_owned()
}

/// The group of one game. Pure: everything it shows is in `row` and `held`.
pub fn target_group(row: &MonitoringRow, lease_held: bool) -> TargetGroup {
    let record = &row.record;
    let address = address(row);
    let running = record.status == RuntimeStatus::Running;
    let container = record
        .current_container_id
        .as_deref()
        .filter(|c| !c.is_empty());
    let healthy_now = row.snapshot_status.as_deref() == Some("healthy")
        && row.snapshot_container_id.as_deref() == container
        && container.is_some();
    let mut labels = BTreeMap::from([
        ("vmid".to_owned(), record.game_id.to_string()),
        ("instance".to_owned(), address.clone()),
        ("container_type".to_owned(), CONTAINER_TYPE.to_owned()),
        ("game_id".to_owned(), record.game_id.to_string()),
        (
            "image_ref".to_owned(),
            record.current_image_ref.clone().unwrap_or_default(),
        ),
    ]);
    let meta = [
        ("status", record.status.as_str().to_owned()),
        ("ready", bool_label(running && healthy_now)),
        ("connectable", bool_label(running && container.is_some())),
        ("operation_in_progress", bool_label(lease_held)),
        (
            "operation_type",
            if lease_held { "unknown" } else { "" }.to_owned(),
        ),
        (
            "last_operation",
            row.last_op_kind.clone().unwrap_or_default(),
        ),
        (
            "last_health_event",
            row.snapshot_event_type.clone().unwrap_or_default(),
        ),
        (
            "last_error_code",
            row.recent_error_code.clone().unwrap_or_default(),
        ),
    ];
    labels.extend(meta.into_iter().map(|(k, v)| (format!("{META}{k}"), v)));
    TargetGroup {
        targets: vec![address],
        labels,
    }
}

/// `?include=historical`; nothing else is accepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetParams {
    pub include: Option<String>,
}

impl TargetParams {
    pub fn scope(&self) -> Result<Scope, ApiError> {
        match self.include.as_deref() {
            None => Ok(Scope::Active),
            Some("historical") => Ok(Scope::Historical),
            Some(other) => Err(ApiError::invalid(format!(
                "include must be historical, not {other:?}"
            ))),
        }
    }
}

async fn targets(
    State(state): State<AppState>,
    StrictQuery(params): StrictQuery<TargetParams>,
) -> Result<Json<Vec<TargetGroup>>, ApiError> {
    let scope = params.scope()?;
    let leases = LeaseStore::new(
        state.infra.redis.clone(),
        state.config.common.redis.lease_ttl,
    );
    match inventory(&state.infra.db, &leases, scope).await {
        Ok(groups) => {
            if scope == Scope::Active {
                state.metrics.discovery_targets.set(groups.len() as i64);
            }
            Ok(Json(groups))
        }
        Err(err) => {
            tracing::error!(error = %err, "monitoring discovery failed");
            Err(ApiError::new(
                err.code(),
                match err {
                    DiscoveryError::Store(_) => "monitoring discovery: PostgreSQL is unavailable",
                    DiscoveryError::Redis(_) => "monitoring discovery: Redis is unavailable",
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use shared::domain::{GameId, RuntimeRecord};

    fn row(status: RuntimeStatus) -> MonitoringRow {
        let game_id = GameId::parse("g-1").unwrap();
        MonitoringRow {
            record: RuntimeRecord {
                engine_endpoint: game_id.engine_endpoint(),
                game_id,
                status,
                current_container_id: Some("c1".into()),
                current_image_ref: Some("galaxy/engine:1.2.3".into()),
                state_path: "/secret/state/path".into(),
                docker_network: "net".into(),
                started_at: None,
                stopped_at: None,
                removed_at: None,
                last_op_at: Utc::now(),
                created_at: Utc::now(),
            },
            snapshot_status: Some("healthy".into()),
            snapshot_event_type: Some("container_started".into()),
            snapshot_container_id: Some("c1".into()),
            last_op_kind: Some("start".into()),
            recent_error_code: None,
        }
    }

    fn is_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    #[test]
    fn a_running_game_carries_the_required_and_debug_labels() {
        let group = target_group(&row(RuntimeStatus::Running), false);
        assert_eq!(group.targets, ["galaxy-game-g-1:8080"]);
        let l = &group.labels;
        assert_eq!(l["vmid"], "g-1");
        assert_eq!(l["instance"], "galaxy-game-g-1:8080");
        assert_eq!(l["container_type"], "game-engine");
        assert_eq!(l["game_id"], "g-1");
        assert_eq!(l["image_ref"], "galaxy/engine:1.2.3");
        assert_eq!(l["__meta_rtmanager_status"], "running");
        assert_eq!(l["__meta_rtmanager_ready"], "true");
        assert_eq!(l["__meta_rtmanager_connectable"], "true");
        assert_eq!(l["__meta_rtmanager_operation_in_progress"], "false");
        assert_eq!(l["__meta_rtmanager_operation_type"], "");
        assert_eq!(l["__meta_rtmanager_last_operation"], "start");
        assert_eq!(l["__meta_rtmanager_last_health_event"], "container_started");
        assert_eq!(l["__meta_rtmanager_last_error_code"], "");
        assert!(l.keys().all(|k| is_label_name(k)), "{l:?}");
        // Nothing of the record that is not meant for monitoring.
        assert!(!l.values().any(|v| v.contains("/secret")), "{l:?}");
    }

    #[test]
    fn a_snapshot_of_an_older_container_or_a_stopped_game_is_not_ready() {
        let mut old = row(RuntimeStatus::Running);
        old.snapshot_container_id = Some("c0".into());
        assert_eq!(
            target_group(&old, false).labels["__meta_rtmanager_ready"],
            "false"
        );
        let stopped = target_group(&row(RuntimeStatus::Stopped), true);
        assert_eq!(stopped.labels["__meta_rtmanager_ready"], "false");
        assert_eq!(stopped.labels["__meta_rtmanager_connectable"], "false");
        assert_eq!(stopped.labels["__meta_rtmanager_status"], "stopped");
        assert_eq!(
            stopped.labels["__meta_rtmanager_operation_in_progress"],
            "true"
        );
        assert_eq!(stopped.labels["__meta_rtmanager_operation_type"], "unknown");
    }

    #[test]
    fn target_addresses_never_carry_userinfo_or_paths() {
        let mut r = row(RuntimeStatus::Running);
        r.record.engine_endpoint = "http://user:pw@galaxy-game-g-1:9000/x?y".into();
        assert_eq!(target_group(&r, false).targets, ["galaxy-game-g-1:9000"]);
        r.record.engine_endpoint = "garbage".into();
        assert_eq!(target_group(&r, false).targets, ["galaxy-game-g-1:8080"]);
    }

    #[test]
    fn include_accepts_only_historical() {
        let p = |v: Option<&str>| TargetParams {
            include: v.map(str::to_owned),
        };
        assert_eq!(p(None).scope().unwrap(), Scope::Active);
        assert_eq!(p(Some("historical")).scope().unwrap(), Scope::Historical);
        assert_eq!(
            p(Some("all")).scope().unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }
}
