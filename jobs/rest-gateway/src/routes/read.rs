//! Read routes: runtime records, one record with its health snapshot, and
//! the operation log. The queries are the PostgreSQL adapter's
//! (`shared::adapters::postgres::reads`); this module checks parameters and
//! shapes the JSON.
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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::adapters::postgres::reads::{HealthSnapshotRow, OperationRow};
use shared::adapters::postgres::StoreError;
use shared::domain::{GameId, RuntimeStatus};

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

pub(crate) fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::invalid(format!(
            "limit {n} is not between 1 and {MAX_PAGE}"
        ))),
    }
}

/// A failed read: logged with its context, answered with the error's code.
fn db_err(context: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| ApiError::store(context, e)
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
    let page = state
        .infra
        .db
        .list_records_page(status, after.as_ref(), limit)
        .await
        .map_err(db_err("list runtime records"))?;
    Ok(Json(RecordPage {
        items: page.items.iter().map(RecordView::from).collect(),
        next_after: page.next.map(|g| g.to_string()),
    }))
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

impl From<HealthSnapshotRow> for HealthView {
    fn from(s: HealthSnapshotRow) -> Self {
        Self {
            status: s.status,
            event_type: s.event_type,
            container_id: s.container_id,
            details: s.details,
            occurred_at_ms: s.occurred_at.timestamp_millis(),
        }
    }
}

async fn show(
    State(state): State<AppState>,
    GamePath(game): GamePath,
) -> Result<Json<RecordWithHealth>, ApiError> {
    let (record, health) = state
        .infra
        .db
        .record_with_health(&game)
        .await
        .map_err(db_err("read runtime record"))?
        .ok_or_else(|| ApiError::not_found(format!("no runtime record for game {game}")))?;
    Ok(Json(RecordWithHealth {
        record: RecordView::from(&record),
        health: health.map(HealthView::from),
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

impl From<OperationRow> for OperationView {
    fn from(o: OperationRow) -> Self {
        Self {
            id: o.id,
            op_kind: o.op_kind,
            op_source: o.op_source,
            source_ref: o.source_ref,
            image_ref: o.image_ref,
            container_id: o.container_id,
            outcome: o.outcome,
            error_code: o.error_code,
            error_message: o.error_message,
            started_at_ms: o.started_at.timestamp_millis(),
            finished_at_ms: o.finished_at.timestamp_millis(),
        }
    }
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
    let page = state
        .infra
        .db
        .operation_log_page(&game, params.before, limit)
        .await
        .map_err(db_err("read operation log"))?;
    Ok(Json(OperationPage {
        items: page.items.into_iter().map(OperationView::from).collect(),
        next_before: page.next,
    }))
}
