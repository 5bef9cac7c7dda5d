//! Strict extractors: every rejection is an [`ApiError`] in the envelope.
//!
//! - [`GamePath`]: the `{game_id}` path segment, percent-decoded and validated
//!   with [`GameId::parse`] (`bad..id`, `a%20b` -> 400 `invalid_request`).
//! - [`StrictJson`]: a JSON object body; `Content-Type: application/json`
//!   required, unknown fields rejected (the body types use `deny_unknown_fields`),
//!   syntax and type errors are 400, a body over `RTMANAGER_HTTP_BODY_LIMIT`
//!   is 413 (the limit is the router's `DefaultBodyLimit`).
//! - [`OptionalJson`]: the same, but an empty body is `None` (restart).
//! - [`StrictQuery`]: query parameters; unknown ones are rejected too.
//! - [`Caller`]: `X-Galaxy-Caller` as the operation source.
//! - [`RequestId`]: the request id set by the request-id middleware.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use shared::domain::{GameId, OpSource};

use crate::error::ApiError;

/// A validated game id from the `{game_id}` path segment.
#[derive(Debug, Clone)]
pub struct GamePath(pub GameId);

impl<S: Send + Sync> FromRequestParts<S> for GamePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("game_id: {}", e.body_text())))?;
        let raw = params
            .iter()
            .find(|(name, _)| *name == "game_id")
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| ApiError::invalid("game_id is missing from the path"))?;
        GameId::parse(&raw)
            .map(GamePath)
            .map_err(|e| ApiError::invalid(e.to_string()))
    }
}

/// A JSON body, strictly parsed.
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

/// A JSON body that may be absent (empty); present, it is strictly parsed.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The limit itself is in the message of the request-limit middleware,
        // which catches declared lengths; this is a streamed body.
        return ApiError::invalid("request body is too large (RTMANAGER_HTTP_BODY_LIMIT)")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE);
    }
    ApiError::invalid(format!("request body: {}", rejection.body_text()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false)
}

fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::invalid(
            "request body must be JSON with Content-Type: application/json",
        ));
    }
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("request body: {e}"));
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    // serde would also read a struct from an array (`["img"]`): objects only.
    if !value.is_object() {
        return Err(ApiError::invalid("request body must be a JSON object"));
    }
    T::deserialize(value).map_err(invalid)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("a JSON request body is required"));
        }
        parse_json(&headers, &bytes).map(StrictJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        parse_json(&headers, &bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// Query parameters; the target type should use `deny_unknown_fields`.
#[derive(Debug)]
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| StrictQuery(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// `X-Galaxy-Caller: gm|admin` as the operation source; missing or unknown is
/// `admin_rest` (the Go service's rule).
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub OpSource);

pub const CALLER_HEADER: &str = "x-galaxy-caller";

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        match headers.get(CALLER_HEADER).map(|v| v.as_bytes()) {
            Some(b"gm") => Caller(OpSource::GmRest),
            _ => Caller(OpSource::AdminRest),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

/// The request's id (`X-Request-Id`), also the `source_ref` of the operations
/// it runs. Set by [`crate::middleware::request_id`].
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .ok_or_else(|| ApiError::new(shared::domain::ErrorCode::Internal, "no request id"))
    }
}

/// Whatever a body holds, it is a body type or a 400 `invalid_request`, never
/// a panic and never another code.
#[cfg(test)]
mod properties {
    use axum::http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;
    use shared::domain::ErrorCode;

    use super::parse_json;
    use crate::routes::lifecycle::{EmptyBody, ImageBody, StopBody};

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers
    }

    /// JSON-shaped text with the body types' own field names, and raw bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1e999".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
        ];
        let key = prop_oneof![
            Just("image_ref".to_owned()),
            Just("reason".to_owned()),
            any::<String>(),
        ];
        let object = proptest::collection::vec((key, value), 0..4).prop_map(|pairs| {
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
                .collect();
            format!("{{{}}}", inner.join(",")).into_bytes()
        });
        prop_oneof![object, proptest::collection::vec(any::<u8>(), 0..200)]
    }

    fn assert_invalid_request(
        result: Result<impl Sized, crate::error::ApiError>,
    ) -> Result<(), TestCaseError> {
        if let Err(e) = result {
            prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
            prop_assert_eq!(e.status.as_u16(), 400);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn bodies_parse_or_are_invalid_requests(bytes in body()) {
            let headers = json_headers();
            assert_invalid_request(parse_json::<ImageBody>(&headers, &bytes))?;
            assert_invalid_request(parse_json::<StopBody>(&headers, &bytes))?;
            assert_invalid_request(parse_json::<EmptyBody>(&headers, &bytes))?;
        }

        #[test]
        fn content_types_other_than_json_are_invalid_requests(
            content_type in "[ -~]{0,60}", bytes in body()
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                headers.insert("content-type", value);
            }
            assert_invalid_request(parse_json::<ImageBody>(&headers, &bytes))?;
        }
    }
}
