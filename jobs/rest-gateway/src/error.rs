//! The one error envelope of the gateway: `{"error":{"code","message"}}`.
//!
//! Every non-2xx answer of every route (rejected bodies, unknown routes,
//! missing tokens, timeouts) goes through [`ApiError`], so a caller never sees
//! axum's plain-text rejections. The status comes from
//! [`ErrorCode::http_status`] (the one status table); only the transport-level
//! answers that have no code of their own (401, 405, 413) set it by hand, all
//! with `invalid_request`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::adapters::postgres::StoreError;
use shared::domain::ErrorCode;

/// An error answer: status, stable code and a human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// `WWW-Authenticate: Bearer` on 401.
    challenge: bool,
}

impl ApiError {
    /// The code's documented status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            challenge: false,
        }
    }

    /// The same error with another status (transport-level answers only).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 413 `invalid_request`: the body exceeds `RTMANAGER_HTTP_BODY_LIMIT`.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::invalid(format!(
                "request body exceeds {limit} bytes (RTMANAGER_HTTP_BODY_LIMIT)"
            ))
        }
    }

    /// 405 `invalid_request`.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            ..Self::invalid("method not allowed on this route")
        }
    }

    /// 401 `invalid_request` with `WWW-Authenticate: Bearer`. The message is
    /// the same whatever was wrong, so it tells nothing about the tokens.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            challenge: true,
            ..Self::invalid("missing or invalid bearer token")
        }
    }

    /// A database failure: logged here (once, at the edge) with its text; the
    /// caller gets the code and a message without database internals.
    pub fn store(context: &str, err: StoreError) -> Self {
        tracing::error!(error = %err, "{context}");
        let code = err.code();
        let message = match code {
            ErrorCode::ServiceUnavailable => format!("{context}: PostgreSQL is unavailable"),
            _ => format!("{context}: internal error"),
        };
        Self::new(code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rtmanager\""),
            );
        }
        response
    }
}

/// Fallback of unknown routes: 404 `not_found` in the envelope.
pub async fn route_not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Fallback of known routes called with another method: 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
