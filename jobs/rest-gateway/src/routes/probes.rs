//! Open routes for the platform: `/healthz`, `/readyz`, `/metrics`. No token,
//! and no game data in any answer. The answers are every process's
//! (`shared::telemetry::http`), on the gateway's checks and main loop:
//!
//! - `GET /healthz`: 200 `{"status":"ok"}` while the gateway's main loop,
//!   its outbox relay, goes round; 503 `{"status":"stalled",...}` once it has
//!   not for its limit (`RTMANAGER_LIVENESS_STALL_FACTOR`).
//! - `GET /readyz`: Redis, PostgreSQL and Docker answer (each within
//!   `shared::readiness::CHECK_TIMEOUT`) and every embedded migration is
//!   applied ([`migrations_applied`]): 200 `{"status":"ready","checks":{...}}`;
//!   otherwise, or once shutdown has begun, 503
//!   `{"status":"not_ready","failed":[...],"checks":{...}}`. Check values are
//!   `ok` or `failed` (`pending` for migrations); the reasons go to the log,
//!   not to the answer.
//! - `GET /metrics`: OpenMetrics text, the shared metrics then the gateway's
//!   (see [`crate::metrics`]).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use shared::adapters::postgres::Database;

use crate::state::AppState;

pub use shared::telemetry::http::OPENMETRICS;

/// Every (up) migration embedded in the binary is recorded as applied: the
/// gateway's own readiness check, besides every process's.
pub async fn migrations_applied(db: Database) -> Result<(), String> {
    let missing = db.pending_migrations().await.map_err(|e| e.to_string())?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("migrations not applied: {missing:?}"))
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz(State(state): State<AppState>) -> Response {
    json(state.infra.endpoints().healthz())
}

async fn readyz(State(state): State<AppState>) -> Response {
    json(state.infra.endpoints().readyz().await)
}

fn json((status, body): (u16, serde_json::Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.scrape(&state.infra).await,
    )
        .into_response()
}
