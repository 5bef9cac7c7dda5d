//! Cross-cutting layers, outermost first: [`request_id`] (id, declared body
//! size, access log, request metrics), then auth ([`crate::auth`]), then
//! [`timeout`].

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use shared::domain::ErrorCode;
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::RequestId;
use crate::metrics::RequestLabels;
use crate::state::AppState;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// An incoming id is kept when it is short and safe: `[A-Za-z0-9_-]{1,64}`.
fn acceptable_request_id(raw: &[u8]) -> bool {
    (1..=64).contains(&raw.len())
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// 16 random hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Gives every request an id (the caller's `X-Request-Id` when acceptable),
/// answers it in `X-Request-Id` on every response, refuses a declared body
/// over `RTMANAGER_HTTP_BODY_LIMIT` (413) before anything reads it, logs the
/// request (never its headers) and counts it.
pub async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .map(|v| v.as_bytes())
        .filter(|raw| acceptable_request_id(raw))
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.config.gateway.body_limit;
    let started = Instant::now();
    let span = tracing::info_span!("http", request_id = %id);
    let mut response = match declared {
        Some(len) if len > limit as u64 => ApiError::too_large(limit).into_response(),
        _ => next.run(req).instrument(span.clone()).await,
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    span.in_scope(|| {
        // The id again as a field of its own: log shippers read fields, and
        // a span list is an array they skip.
        tracing::info!(
            request_id = %id,
            method = %method,
            route = %route,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        )
    });
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route,
            status,
        })
        .inc();
    response
}

/// Bounds every handler by `RTMANAGER_HTTP_REQUEST_TIMEOUT` (503
/// `service_unavailable`). Only the time to the response head is bounded: a
/// streamed body (followed logs) goes on. A lifecycle operation that is cut
/// off here goes on too, as a tracked task, and its outcome lands in the
/// operation log under the request id.
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.gateway.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!(
                "the request did not finish within {} (RTMANAGER_HTTP_REQUEST_TIMEOUT); \
                 a lifecycle operation it started goes on and is recorded in the operation log \
                 under this X-Request-Id",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_request_ids_must_be_short_and_safe() {
        assert!(acceptable_request_id(b"abc-DEF_123"));
        assert!(acceptable_request_id(&[b'a'; 64]));
        for bad in [&b""[..], &[b'a'; 65], b"a b", b"a/b", b"\xc3\xa4", b"a\r\n"] {
            assert!(!acceptable_request_id(bad));
        }
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(acceptable_request_id(id.as_bytes()));
    }
}
