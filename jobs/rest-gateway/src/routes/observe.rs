//! Observe one game's engine container: resource stats, logs, Docker health.
//!
//! - `GET /api/v1/internal/runtimes/{game_id}/stats`: one snapshot (never a
//!   stats stream): `{cpu_percent, memory_used_bytes, memory_limit_bytes,
//!   network_rx_bytes, network_tx_bytes, block_read_bytes, block_write_bytes,
//!   read_at_ms}`; `-1` (`null` for `read_at_ms`) where Docker does not report
//!   a value (a stopped container, no network, cgroup fields missing).
//! - `GET /api/v1/internal/runtimes/{game_id}/logs?tail=&timestamps=&follow=`:
//!   stdout and stderr as `text/plain`. `tail` 0..=10000 (100 by default);
//!   `follow=true` streams a chunked body until the container stops, the
//!   client goes away or the gateway shuts down.
//! - `GET /api/v1/internal/runtimes/{game_id}/health`: Docker's own health
//!   check: `{has_healthcheck, status, failing_streak, last_output}`.
//!
//! The container is the record's `current_container_id`. An invalid game id is
//! 400 `invalid_request`; no record, no current container, or a container
//! Docker no longer has is 404 `not_found`; Docker unreachable is 503
//! `docker_unavailable`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use shared::domain::{ErrorCode, GameId};
use shared::ports::{EngineError, LogOptions};

use crate::error::ApiError;
use crate::extract::{GamePath, StrictQuery};
use crate::state::AppState;

/// Lines of log returned when `tail` is not given.
pub const DEFAULT_TAIL: u32 = 100;
/// The largest `tail` accepted.
pub const MAX_TAIL: u32 = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/internal/runtimes/{game_id}/stats", get(stats))
        .route("/api/v1/internal/runtimes/{game_id}/logs", get(logs))
        .route("/api/v1/internal/runtimes/{game_id}/health", get(health))
}

/// The engine's error as the API's: logged once here, with the game.
pub(crate) fn engine_error(game: &GameId, what: &str, err: EngineError) -> ApiError {
    match err {
        EngineError::NotFound(_) => {
            ApiError::not_found(format!("the container of game {game} no longer exists"))
        }
        EngineError::Unavailable(m) => {
            tracing::error!(game_id = %game, error = %m, "{what}: Docker is unreachable");
            ApiError::new(
                ErrorCode::DockerUnavailable,
                format!("{what}: Docker is unreachable"),
            )
        }
        EngineError::Conflict(m) | EngineError::Rejected(m) => {
            tracing::error!(game_id = %game, error = %m, "{what}: Docker refused");
            ApiError::new(ErrorCode::Internal, format!("{what}: Docker refused"))
        }
    }
}

/// The game's current container id, or 404.
async fn current_container(state: &AppState, game: &GameId) -> Result<String, ApiError> {
    let record = state
        .infra
        .db
        .get_record(game)
        .await
        .map_err(|e| ApiError::store("reading the runtime record", e))?
        .ok_or_else(|| ApiError::not_found(format!("game {game} has no runtime record")))?;
    record
        .current_container_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::not_found(format!("game {game} has no current container")))
}

async fn stats(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    StrictQuery(NoParams {}): StrictQuery<NoParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = current_container(&state, &game).await?;
    let s = state
        .infra
        .engine
        .stats_snapshot(&id)
        .await
        .map_err(|e| engine_error(&game, "stats", e))?;
    // A NaN cannot be written as JSON; it only comes from nonsense counters.
    let cpu_percent = if s.cpu_percent.is_finite() {
        s.cpu_percent
    } else {
        -1.0
    };
    Ok(Json(json!({
        "game_id": game,
        "container_id": id,
        "cpu_percent": cpu_percent,
        "memory_used_bytes": s.memory_used_bytes,
        "memory_limit_bytes": s.memory_limit_bytes,
        "network_rx_bytes": s.network_rx_bytes,
        "network_tx_bytes": s.network_tx_bytes,
        "block_read_bytes": s.block_read_bytes,
        "block_write_bytes": s.block_write_bytes,
        "read_at_ms": s.read_at.map(|t| t.timestamp_millis()),
    })))
}

/// No query parameters: an unknown one is 400, not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `?tail=&timestamps=&follow=`, kept as text so every mistake is our 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    pub tail: Option<String>,
    pub timestamps: Option<String>,
    pub follow: Option<String>,
}

fn flag(name: &str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

impl LogParams {
    pub fn options(&self) -> Result<LogOptions, ApiError> {
        let tail = match self.tail.as_deref() {
            None => DEFAULT_TAIL,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_TAIL)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "tail must be a whole number from 0 to {MAX_TAIL}, not {raw:?}"
                    ))
                })?,
        };
        Ok(LogOptions {
            tail,
            timestamps: flag("timestamps", self.timestamps.as_deref())?,
            follow: flag("follow", self.follow.as_deref())?,
        })
    }
}

async fn logs(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    StrictQuery(params): StrictQuery<LogParams>,
) -> Result<Response, ApiError> {
    let options = params.options()?;
    let id = current_container(&state, &game).await?;
    let engine = &state.infra.engine;
    // Checked first, so a missing container or an unreachable daemon is an
    // error status rather than a 200 whose body breaks off.
    engine
        .inspect_container(&id)
        .await
        .map_err(|e| engine_error(&game, "logs", e))?
        .ok_or_else(|| engine_error(&game, "logs", EngineError::NotFound(id.clone())))?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let chunks = engine.logs(&id, &options);
    if !options.follow {
        let all: Vec<Vec<u8>> = chunks
            .try_collect()
            .await
            .map_err(|e| engine_error(&game, "logs", e))?;
        return Ok((text_plain, all.concat()).into_response());
    }
    // Streamed as it comes. A failure mid-stream aborts the body (the client
    // sees a truncated chunked response, not a clean end); shutdown ends it.
    let game_for_log = game.clone();
    let body = chunks
        .map(move |chunk| {
            chunk.map(Bytes::from).map_err(|e| {
                tracing::warn!(game_id = %game_for_log, error = %e, "followed logs broke off");
                std::io::Error::other(e.to_string())
            })
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok((
        text_plain,
        [(header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn health(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    StrictQuery(NoParams {}): StrictQuery<NoParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = current_container(&state, &game).await?;
    let info = state
        .infra
        .engine
        .health_info(&id)
        .await
        .map_err(|e| engine_error(&game, "health", e))?
        .ok_or_else(|| engine_error(&game, "health", EngineError::NotFound(id.clone())))?;
    Ok(Json(json!({
        "game_id": game,
        "container_id": id,
        "has_healthcheck": info.has_healthcheck,
        "status": info.status,
        "failing_streak": info.failing_streak,
        "last_output": info.last_output,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(tail: Option<&str>, timestamps: Option<&str>, follow: Option<&str>) -> LogParams {
        LogParams {
            tail: tail.map(str::to_owned),
            timestamps: timestamps.map(str::to_owned),
            follow: follow.map(str::to_owned),
        }
    }

    #[test]
    fn log_options_default_to_the_last_hundred_lines() {
        assert_eq!(
            params(None, None, None).options().unwrap(),
            LogOptions {
                tail: 100,
                timestamps: false,
                follow: false
            }
        );
        let o = params(Some("0"), Some("true"), Some("true"))
            .options()
            .unwrap();
        assert_eq!((o.tail, o.timestamps, o.follow), (0, true, true));
        assert_eq!(
            params(Some("10000"), None, None).options().unwrap().tail,
            10_000
        );
    }

    #[test]
    fn bad_log_options_are_invalid_requests() {
        for p in [
            params(Some("10001"), None, None),
            params(Some("-1"), None, None),
            params(Some("all"), None, None),
            params(Some(""), None, None),
            params(None, Some("yes"), None),
            params(None, None, Some("1")),
        ] {
            let err = p.options().unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{p:?}");
        }
    }
}
