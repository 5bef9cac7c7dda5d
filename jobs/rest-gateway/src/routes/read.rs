//! Read routes: runtime records, one record with its health snapshot, and
//! the operation log. Runtime queries over `state.infra.db.pool()`.
//!
//! - `GET /api/v1/internal/runtimes?status=&limit=&after=`: records by game
//!   id, keyset-paginated: `{"items": [record], "next_after": game_id|null}`;
//!   pass `next_after` as `after` for the next page. `limit` 1..=500, 100 by
//!   default.
//! - `GET /api/v1/internal/runtimes/{game_id}`: `{"record": record, "health":
//!   snapshot|null}`; 404 `not_found` without a record.
//! - `GET /api/v1/internal/runtimes/{game_id}/operations?limit=&before=`:
//!   the operation log, newest first: `{"items": [operation], "next_before":
//!   id|null}`. The log outlives records, so an unknown game is an empty list.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::domain::{GameId, RuntimeStatus};
use sqlx::Row;

use crate::error::ApiError;
use crate::extract::{GamePath, StrictQuery};
use crate::routes::lifecycle::RecordView;
use crate::state::AppState;

pub const MAX_PAGE: u32 = 500;
pub const DEFAULT_PAGE: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/internal/runtimes", get(list))
        .route("/api/v1/internal/runtimes/{game_id}", get(show))
        .route(
            "/api/v1/internal/runtimes/{game_id}/operations",
            get(operations),
        )
}

fn page_size(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(i64::from(n)),
        n => Err(ApiError::invalid(format!(
            "limit {n} is not between 1 and {MAX_PAGE}"
        ))),
    }
}

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn db_err(context: &'static str) -> impl Fn(sqlx::Error) -> ApiError {
    move |e| ApiError::store(context, e.into())
}

// --- list -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RecordPage {
    pub items: Vec<RecordView>,
    pub next_after: Option<String>,
}

const LIST: &str = "SELECT game_id, status, current_container_id, current_image_ref, \
    engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
    FROM runtime_records \
    WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR game_id > $2) \
    ORDER BY game_id LIMIT $3";

fn record_view(row: &sqlx::postgres::PgRow) -> Result<RecordView, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(RecordView {
        game_id: row.try_get("game_id")?,
        status: RuntimeStatus::parse(&status)
            .map(RuntimeStatus::as_str)
            .ok_or_else(|| sqlx::Error::Decode(format!("status {status:?}").into()))?,
        current_container_id: row.try_get("current_container_id")?,
        current_image_ref: row.try_get("current_image_ref")?,
        engine_endpoint: row.try_get("engine_endpoint")?,
        state_path: row.try_get("state_path")?,
        docker_network: row.try_get("docker_network")?,
        started_at_ms: ms(row.try_get("started_at")?),
        stopped_at_ms: ms(row.try_get("stopped_at")?),
        removed_at_ms: ms(row.try_get("removed_at")?),
        last_op_at_ms: row
            .try_get::<DateTime<Utc>, _>("last_op_at")?
            .timestamp_millis(),
        created_at_ms: row
            .try_get::<DateTime<Utc>, _>("created_at")?
            .timestamp_millis(),
    })
}

async fn list(
    State(state): State<AppState>,
    StrictQuery(params): StrictQuery<ListParams>,
) -> Result<Json<RecordPage>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|s| {
            RuntimeStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "status {s:?} is not one of running, stopped, removed"
                ))
            })
        })
        .transpose()?;
    let after = params
        .after
        .as_deref()
        .map(|a| GameId::parse(a).map_err(|e| ApiError::invalid(format!("after: {e}"))))
        .transpose()?;
    let limit = page_size(params.limit)?;
    let rows = sqlx::query(LIST)
        .bind(status.map(RuntimeStatus::as_str))
        .bind(after.as_ref().map(GameId::as_str))
        .bind(limit + 1)
        .fetch_all(state.infra.db.pool())
        .await
        .map_err(db_err("list runtime records"))?;
    let mut items = rows
        .iter()
        .map(record_view)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err("list runtime records"))?;
    let next_after = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| r.game_id.clone())
    } else {
        None
    };
    Ok(Json(RecordPage { items, next_after }))
}

// --- one record -------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct HealthView {
    pub status: String,
    pub event_type: String,
    pub container_id: String,
    pub details: Value,
    pub occurred_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct RecordWithHealth {
    pub record: RecordView,
    pub health: Option<HealthView>,
}

/// The game's latest health snapshot, if any.
pub async fn health_snapshot(
    state: &AppState,
    game: &GameId,
) -> Result<Option<HealthView>, ApiError> {
    let row = sqlx::query(
        "SELECT status, event_type, container_id, details, occurred_at \
         FROM health_snapshots WHERE game_id = $1",
    )
    .bind(game.as_str())
    .fetch_optional(state.infra.db.pool())
    .await
    .map_err(db_err("read health snapshot"))?;
    row.map(|r| -> Result<HealthView, sqlx::Error> {
        Ok(HealthView {
            status: r.try_get("status")?,
            event_type: r.try_get("event_type")?,
            container_id: r.try_get("container_id")?,
            details: r.try_get::<sqlx::types::Json<Value>, _>("details")?.0,
            occurred_at_ms: r
                .try_get::<DateTime<Utc>, _>("occurred_at")?
                .timestamp_millis(),
        })
    })
    .transpose()
    .map_err(db_err("read health snapshot"))
}

async fn show(
    State(state): State<AppState>,
    GamePath(game): GamePath,
) -> Result<Json<RecordWithHealth>, ApiError> {
    let record = state
        .infra
        .db
        .get_record(&game)
        .await
        .map_err(|e| ApiError::store("read runtime record", e))?
        .ok_or_else(|| ApiError::not_found(format!("no runtime record for game {game}")))?;
    let health = health_snapshot(&state, &game).await?;
    Ok(Json(RecordWithHealth {
        record: RecordView::from(&record),
        health,
    }))
}

// --- operation log ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationParams {
    pub limit: Option<u32>,
    pub before: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct OperationView {
    pub id: i64,
    pub op_kind: String,
    pub op_source: String,
    pub source_ref: String,
    pub image_ref: String,
    pub container_id: String,
    pub outcome: String,
    /// `""` when none (as stored and as on `runtime:job_results`).
    pub error_code: String,
    pub error_message: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct OperationPage {
    pub items: Vec<OperationView>,
    pub next_before: Option<i64>,
}

async fn operations(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    StrictQuery(params): StrictQuery<OperationParams>,
) -> Result<Json<OperationPage>, ApiError> {
    let limit = page_size(params.limit)?;
    let rows = sqlx::query(
        "SELECT id, op_kind, op_source, source_ref, image_ref, container_id, outcome, \
             error_code, error_message, started_at, finished_at \
         FROM operation_log WHERE game_id = $1 AND ($2::bigint IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(game.as_str())
    .bind(params.before)
    .bind(limit + 1)
    .fetch_all(state.infra.db.pool())
    .await
    .map_err(db_err("read operation log"))?;
    let mut items = rows
        .iter()
        .map(|r| -> Result<OperationView, sqlx::Error> {
            Ok(OperationView {
                id: r.try_get("id")?,
                op_kind: r.try_get("op_kind")?,
                op_source: r.try_get("op_source")?,
                source_ref: r.try_get("source_ref")?,
                image_ref: r.try_get("image_ref")?,
                container_id: r.try_get("container_id")?,
                outcome: r.try_get("outcome")?,
                error_code: r.try_get("error_code")?,
                error_message: r.try_get("error_message")?,
                started_at_ms: r
                    .try_get::<DateTime<Utc>, _>("started_at")?
                    .timestamp_millis(),
                finished_at_ms: r
                    .try_get::<DateTime<Utc>, _>("finished_at")?
                    .timestamp_millis(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err("read operation log"))?;
    let next_before = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|o| o.id)
    } else {
        None
    };
    Ok(Json(OperationPage { items, next_before }))
}
