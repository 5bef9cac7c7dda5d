//! Open routes for the platform: `/healthz`, `/readyz`, `/metrics`. No token,
//! and no game data in any answer.
//!
//! - `GET /healthz`: 200 `{"status":"ok"}` while the process serves.
//! - `GET /readyz`: Redis, PostgreSQL and Docker answer (each within
//!   [`CHECK_TIMEOUT`]) and every embedded migration is applied: 200
//!   `{"status":"ready","checks":{...}}`; otherwise, or once shutdown has
//!   begun, 503 `{"status":"not_ready","failed":[...],"checks":{...}}`. Check
//!   values are `ok` or `failed` (`pending` for migrations); the reasons go to
//!   the log, not to the answer.
//! - `GET /metrics`: OpenMetrics text, the shared metrics then the gateway's
//!   (see [`crate::metrics`]).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

/// Bound on each readiness check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn bounded<F, E>(name: &str, check: F) -> bool
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(check = name, error = %e, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(check = name, "readiness check timed out");
            false
        }
    }
}

/// Every (up) migration embedded in the binary is recorded as applied.
async fn migrations_applied(state: &AppState) -> Result<(), String> {
    let missing = state
        .infra
        .db
        .pending_migrations()
        .await
        .map_err(|e| e.to_string())?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("migrations not applied: {missing:?}"))
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (redis, postgres, migrations, docker) = tokio::join!(
        bounded("redis", state.infra.redis.ping()),
        bounded("postgres", state.infra.db.ping()),
        bounded("migrations", migrations_applied(&state)),
        bounded("docker", state.infra.engine.ping()),
    );
    let mut checks = BTreeMap::new();
    let mut failed = Vec::new();
    for (name, ok, bad) in [
        ("redis", redis, "failed"),
        ("postgres", postgres, "failed"),
        ("migrations", migrations, "pending"),
        ("docker", docker, "failed"),
    ] {
        checks.insert(name, if ok { "ok" } else { bad });
        if !ok {
            failed.push(name);
        }
    }
    if state.shutdown.is_cancelled() {
        failed.push("shutting_down");
    }
    if failed.is_empty() {
        Json(json!({"status": "ready", "checks": checks})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failed": failed, "checks": checks})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(&state.infra.metrics),
    )
        .into_response()
}
