//! Lifecycle routes: start, stop, restart, patch and cleanup of one game.
//!
//! | route | body | service call |
//! |---|---|---|
//! | `POST /api/v1/internal/runtimes/{game_id}/start` | `{"image_ref"}` | start |
//! | `POST .../{game_id}/stop` | `{"reason"}` (stop-reason enum) | stop |
//! | `POST .../{game_id}/restart` | none or `{}` | restart |
//! | `POST .../{game_id}/patch` | `{"image_ref"}` (the new image) | patch |
//! | `DELETE .../{game_id}/container` | none | cleanup_container |
//!
//! `X-Galaxy-Caller` sets the operation source (`gm` -> `gm_rest`, anything
//! else -> `admin_rest`); the request id is the `source_ref`. The answer is the
//! service's result, directly: 200 with the runtime record
//! ([`RecordView`]), `X-Rtmanager-Error-Code: replay_no_op` on an idempotent
//! replay, or the error envelope with the code's status. Nothing is published
//! on `runtime:job_results` (the start still stages its health event and
//! intents in the outbox, as on the stream path).
//!
//! A stop of a game without a record leaves a stop tombstone and answers 200
//! `{"game_id": "...", "status": "absent"}` with the replay header.

use std::future::Future;

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{extract::State, Json, Router};
use serde::{Deserialize, Serialize};
use shared::domain::{ErrorCode, GameId, Outcome, RuntimeRecord, StopReason};
use shared::operations::{OperationOutcome, OperationRequest, StartRequest};

use crate::error::ApiError;
use crate::extract::{Caller, GamePath, OptionalJson, RequestId, StrictJson};
use crate::state::AppState;

/// Carries `replay_no_op` on a successful idempotent replay.
pub const ERROR_CODE_HEADER: HeaderName = HeaderName::from_static("x-rtmanager-error-code");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/internal/runtimes/{game_id}/start", post(start))
        .route("/api/v1/internal/runtimes/{game_id}/stop", post(stop))
        .route("/api/v1/internal/runtimes/{game_id}/restart", post(restart))
        .route("/api/v1/internal/runtimes/{game_id}/patch", post(patch))
        .route(
            "/api/v1/internal/runtimes/{game_id}/container",
            delete(cleanup),
        )
}

/// One `runtime_records` row on the wire; timestamps as Unix milliseconds,
/// `null` when absent.
#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    pub game_id: String,
    pub status: &'static str,
    pub current_container_id: Option<String>,
    pub current_image_ref: Option<String>,
    pub engine_endpoint: String,
    pub state_path: String,
    pub docker_network: String,
    pub started_at_ms: Option<i64>,
    pub stopped_at_ms: Option<i64>,
    pub removed_at_ms: Option<i64>,
    pub last_op_at_ms: i64,
    pub created_at_ms: i64,
}

impl From<&RuntimeRecord> for RecordView {
    fn from(r: &RuntimeRecord) -> Self {
        Self {
            game_id: r.game_id.to_string(),
            status: r.status.as_str(),
            current_container_id: r.current_container_id.clone(),
            current_image_ref: r.current_image_ref.clone(),
            engine_endpoint: r.engine_endpoint.clone(),
            state_path: r.state_path.clone(),
            docker_network: r.docker_network.clone(),
            started_at_ms: r.started_at.map(|t| t.timestamp_millis()),
            stopped_at_ms: r.stopped_at.map(|t| t.timestamp_millis()),
            removed_at_ms: r.removed_at.map(|t| t.timestamp_millis()),
            last_op_at_ms: r.last_op_at.timestamp_millis(),
            created_at_ms: r.created_at.timestamp_millis(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageBody {
    pub image_ref: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

fn operation(game: GameId, caller: Caller, request_id: RequestId) -> OperationRequest {
    OperationRequest {
        game_id: game,
        op_source: caller.0,
        source_ref: request_id.0,
    }
}

/// Runs the operation as a tracked task (it finishes even if the client goes
/// away or the request times out) and answers its outcome.
async fn run<F>(state: &AppState, game: GameId, op: F) -> Response
where
    F: Future<Output = OperationOutcome> + Send + 'static,
{
    match state.tasks.spawn(op).await {
        Ok(outcome) => answer(game, outcome),
        Err(e) => {
            tracing::error!(game_id = %game, error = %e, "lifecycle task failed");
            ApiError::new(ErrorCode::Internal, "the operation failed unexpectedly").into_response()
        }
    }
}

/// The service's result as an HTTP answer.
pub fn answer(game: GameId, outcome: OperationOutcome) -> Response {
    if outcome.outcome == Outcome::Failure {
        let code = match outcome.error_code {
            None | Some(ErrorCode::ReplayNoOp) => ErrorCode::Internal,
            Some(code) => code,
        };
        return ApiError::new(code, outcome.error_message).into_response();
    }
    let mut response = match &outcome.record {
        Some(record) => Json(RecordView::from(record)).into_response(),
        None => {
            Json(serde_json::json!({"game_id": game.as_str(), "status": "absent"})).into_response()
        }
    };
    if let Some(code) = outcome.error_code {
        response
            .headers_mut()
            .insert(ERROR_CODE_HEADER, HeaderValue::from_static(code.as_str()));
    }
    response
}

async fn start(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    caller: Caller,
    request_id: RequestId,
    StrictJson(body): StrictJson<ImageBody>,
) -> Response {
    let request = StartRequest {
        game_id: game.clone(),
        image_ref: body.image_ref,
        op_source: caller.0,
        source_ref: request_id.0,
    };
    let service = state.operations.clone();
    run(&state, game, async move { service.start(&request).await }).await
}

async fn stop(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    caller: Caller,
    request_id: RequestId,
    StrictJson(body): StrictJson<StopBody>,
) -> Response {
    let Some(reason) = StopReason::parse(&body.reason) else {
        let allowed: Vec<_> = StopReason::ALL.iter().map(|r| r.as_str()).collect();
        return ApiError::invalid(format!(
            "reason {:?} is not one of {}",
            body.reason,
            allowed.join(", ")
        ))
        .into_response();
    };
    let req = operation(game.clone(), caller, request_id);
    let service = state.operations.clone();
    run(&state, game, async move {
        service.stop(&req, reason, None).await
    })
    .await
}

async fn restart(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    caller: Caller,
    request_id: RequestId,
    OptionalJson(_): OptionalJson<EmptyBody>,
) -> Response {
    let req = operation(game.clone(), caller, request_id);
    let service = state.operations.clone();
    run(&state, game, async move { service.restart(&req).await }).await
}

async fn patch(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    caller: Caller,
    request_id: RequestId,
    StrictJson(body): StrictJson<ImageBody>,
) -> Response {
    let req = operation(game.clone(), caller, request_id);
    let service = state.operations.clone();
    run(&state, game, async move {
        service.patch(&req, &body.image_ref).await
    })
    .await
}

async fn cleanup(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    caller: Caller,
    request_id: RequestId,
) -> Response {
    let req = operation(game.clone(), caller, request_id);
    let service = state.operations.clone();
    run(&state, game, async move { service.cleanup(&req).await }).await
}
