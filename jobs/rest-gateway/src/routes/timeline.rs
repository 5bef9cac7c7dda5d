//! A game's timeline: what happened to it, in one list, newest first.
//!
//! `GET /api/v1/internal/runtimes/{game_id}/timeline?limit=&before=&logs=`
//! merges three tables (one query, `Database::timeline_page`): the
//! operation log (`kind: operation`), the health event history
//! (`kind: health_event`, with the source that observed each event) and the
//! stop and removal intents rtmanager recorded before acting
//! (`kind: intent`). Each entry has its `kind`, `at_ms`, `source` and
//! `container_id`, then the fields of its kind:
//!
//! ```json
//! {"game_id": "g", "record": {...} | null,
//!  "items": [{"kind": "health_event", "at_ms": 1, "source": "docker_events",
//!             "container_id": "c", "id": 7, "event_type": "container_exited",
//!             "details": {"exit_code": 137, "oom": false}}],
//!  "next_before": "opaque" | null,
//!  "logs": {"container_id": "c", "lines": ["..."]} | null,
//!  "logs_error": {"code": "docker_unavailable", "message": "..."} | null}
//! ```
//!
//! Paged like the operation log (`limit` 1..=500, 100 by default; pass
//! `next_before` as `before`), but the cursor is opaque: the sort key of the
//! page's last entry, which spans three tables. `logs=N` (0..=500, 0 by
//! default) adds the last N lines of the record's current container, as
//! Docker keeps them (an exited container's too: the lines before a death
//! are what an operator wants). Reading them never fails the timeline: a
//! Docker error (or no answer within [`LOGS_TIMEOUT`]) is `logs_error`.
//! 404 `not_found` only when the game has no record and no history at all.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use chrono::DateTime;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::adapters::postgres::reads::{TimelineCursor, TimelineEntry, TimelineItem};
use shared::domain::GameId;
use shared::ports::{EngineError, LogOptions};

use crate::error::ApiError;
use crate::extract::{GamePath, StrictQuery};
use crate::routes::lifecycle::RecordView;
use crate::routes::observe::engine_error;
use crate::routes::read::page_size;
use crate::state::AppState;

/// The largest `logs` accepted: a glance at the end, not the log route.
pub const MAX_LOG_LINES: u32 = 500;
/// How long the log read may take before the timeline is answered without
/// it: the timeline is read when Docker may be the thing that broke.
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/internal/runtimes/{game_id}/timeline",
        get(timeline),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineParams {
    pub limit: Option<u32>,
    pub before: Option<String>,
    pub logs: Option<u32>,
}

/// One entry on the wire: the common fields, then those of its kind.
#[derive(Debug, Serialize)]
pub struct EntryView {
    pub kind: &'static str,
    pub at_ms: i64,
    /// An operation's `op_source`, an event's health source, `rtmanager`
    /// for an intent (rtmanager's own request).
    pub source: String,
    pub container_id: String,
    #[serde(flatten)]
    pub fields: KindFields,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum KindFields {
    Operation {
        id: i64,
        op_kind: String,
        source_ref: String,
        image_ref: String,
        outcome: String,
        /// `""` when none, as in the operation log.
        error_code: String,
        error_message: String,
        started_at_ms: i64,
        finished_at_ms: i64,
    },
    HealthEvent {
        id: i64,
        event_type: String,
        details: Value,
    },
    Intent {
        intent_kind: String,
    },
}

impl From<TimelineItem> for EntryView {
    fn from(item: TimelineItem) -> Self {
        let at_ms = item.cursor.at.timestamp_millis();
        match item.entry {
            TimelineEntry::Operation(o) => Self {
                kind: "operation",
                at_ms,
                source: o.op_source,
                container_id: o.container_id,
                fields: KindFields::Operation {
                    id: o.id,
                    op_kind: o.op_kind,
                    source_ref: o.source_ref,
                    image_ref: o.image_ref,
                    outcome: o.outcome,
                    error_code: o.error_code,
                    error_message: o.error_message,
                    started_at_ms: o.started_at.timestamp_millis(),
                    finished_at_ms: o.finished_at.timestamp_millis(),
                },
            },
            TimelineEntry::HealthEvent(h) => Self {
                kind: "health_event",
                at_ms,
                source: h.source,
                container_id: h.container_id,
                fields: KindFields::HealthEvent {
                    id: h.id,
                    event_type: h.event_type,
                    details: h.details,
                },
            },
            TimelineEntry::Intent(i) => Self {
                kind: "intent",
                at_ms,
                source: "rtmanager".to_owned(),
                container_id: i.container_id,
                fields: KindFields::Intent {
                    intent_kind: i.kind,
                },
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LogsView {
    pub container_id: String,
    pub lines: Vec<String>,
}

/// The inner object of the error envelope: why `logs` is missing.
#[derive(Debug, Serialize)]
pub struct LogsError {
    pub code: &'static str,
    pub message: String,
}

impl From<ApiError> for LogsError {
    fn from(e: ApiError) -> Self {
        Self {
            code: e.code.as_str(),
            message: e.message,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TimelineView {
    pub game_id: String,
    pub record: Option<RecordView>,
    pub items: Vec<EntryView>,
    pub next_before: Option<String>,
    pub logs: Option<LogsView>,
    pub logs_error: Option<LogsError>,
}

// --- the cursor ---------------------------------------------------------------

/// Longest `before` accepted; a real cursor is well under it.
const MAX_CURSOR_LEN: usize = 512;

/// The cursor on the wire: base64url (no padding) of
/// `{at_us}.{rank}.{seq}.{tie}`. Opaque to callers, so its shape may change;
/// the only promise is that the `next_before` of one page continues it.
pub fn encode_cursor(c: &TimelineCursor) -> String {
    let raw = format!("{}.{}.{}.{}", c.at.timestamp_micros(), c.rank, c.seq, c.tie);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The cursor [`encode_cursor`] made, or 400: a cursor is never guessed at.
pub fn decode_cursor(raw: &str) -> Result<TimelineCursor, ApiError> {
    let invalid = || ApiError::invalid("before is not a cursor this route returned");
    if raw.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(4, '.');
    let (Some(at), Some(rank), Some(seq), Some(tie)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let at = at
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let rank = rank
        .parse::<i16>()
        .ok()
        .filter(|r| {
            [
                TimelineCursor::INTENT,
                TimelineCursor::HEALTH_EVENT,
                TimelineCursor::OPERATION,
            ]
            .contains(r)
        })
        .ok_or_else(invalid)?;
    let seq = seq.parse::<i64>().map_err(|_| invalid())?;
    Ok(TimelineCursor {
        at,
        rank,
        seq,
        tie: tie.to_owned(),
    })
}

// --- the route ----------------------------------------------------------------

fn log_lines(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(0) {
        n @ 0..=MAX_LOG_LINES => Ok(n),
        n => Err(ApiError::invalid(format!(
            "logs {n} is not between 0 and {MAX_LOG_LINES}"
        ))),
    }
}

async fn timeline(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    StrictQuery(params): StrictQuery<TimelineParams>,
) -> Result<Json<TimelineView>, ApiError> {
    let limit = page_size(params.limit)?;
    let lines = log_lines(params.logs)?;
    let before = params.before.as_deref().map(decode_cursor).transpose()?;
    let db = &state.infra.db;
    let record = db
        .get_record(&game)
        .await
        .map_err(|e| ApiError::store("read runtime record", e))?;
    let page = db
        .timeline_page(&game, before.as_ref(), limit)
        .await
        .map_err(|e| ApiError::store("read timeline", e))?;
    if record.is_none() && page.items.is_empty() {
        // Past the first page, an empty page may be the end of a history.
        let known = match before {
            None => false,
            Some(_) => !db
                .timeline_page(&game, None, 1)
                .await
                .map_err(|e| ApiError::store("read timeline", e))?
                .items
                .is_empty(),
        };
        if !known {
            return Err(ApiError::not_found(format!(
                "game {game} has no runtime record and no history"
            )));
        }
    }
    let container = record
        .as_ref()
        .and_then(|r| r.current_container_id.clone())
        .filter(|id| !id.is_empty());
    let (logs, logs_error) = if lines == 0 {
        (None, None)
    } else {
        match read_logs(&state, &game, container, lines).await {
            Ok(logs) => (Some(logs), None),
            Err(e) => (None, Some(LogsError::from(e))),
        }
    };
    Ok(Json(TimelineView {
        game_id: game.to_string(),
        record: record.as_ref().map(RecordView::from),
        items: page.items.into_iter().map(EntryView::from).collect(),
        next_before: page.next.as_ref().map(encode_cursor),
        logs,
        logs_error,
    }))
}

/// The last `lines` lines of `container`, each with Docker's timestamp (to
/// set beside the entries' times).
async fn read_logs(
    state: &AppState,
    game: &GameId,
    container: Option<String>,
    lines: u32,
) -> Result<LogsView, ApiError> {
    let id = container
        .ok_or_else(|| ApiError::not_found(format!("game {game} has no current container")))?;
    let options = LogOptions {
        tail: lines,
        timestamps: true,
        follow: false,
    };
    let read = state
        .infra
        .engine
        .logs(&id, &options)
        .try_collect::<Vec<_>>();
    let chunks = match tokio::time::timeout(LOGS_TIMEOUT, read).await {
        Ok(chunks) => chunks.map_err(|e| engine_error(game, "timeline logs", e))?,
        Err(_) => {
            let waited = humantime::format_duration(LOGS_TIMEOUT);
            let e = EngineError::Unavailable(format!("no answer within {waited}"));
            return Err(engine_error(game, "timeline logs", e));
        }
    };
    Ok(LogsView {
        container_id: id,
        lines: split_lines(&chunks.concat()),
    })
}

/// Docker's output as lines, without their line ends (invalid UTF-8 replaced,
/// a last line without a newline kept).
fn split_lines(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    text.lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;
    use shared::domain::ErrorCode;

    fn cursor(rank: i16, seq: i64, tie: &str) -> TimelineCursor {
        TimelineCursor {
            at: DateTime::from_timestamp_micros(1_764_672_000_123_456).unwrap(),
            rank,
            seq,
            tie: tie.to_owned(),
        }
    }

    #[test]
    fn a_cursor_comes_back_as_it_was_made() {
        for c in [
            cursor(TimelineCursor::OPERATION, 42, ""),
            cursor(TimelineCursor::HEALTH_EVENT, i64::MAX, ""),
            cursor(TimelineCursor::INTENT, 0, "3f2a.b:c/stop"),
        ] {
            assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        }
        // PostgreSQL keeps microseconds, and so does the cursor.
        let now = TimelineCursor {
            at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
            ..cursor(TimelineCursor::OPERATION, 1, "")
        };
        assert_eq!(decode_cursor(&encode_cursor(&now)).unwrap(), now);
    }

    #[test]
    fn anything_else_is_an_invalid_request() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for raw in [
            String::new(),
            "not base64!".to_owned(),
            b64("1.2.3"),
            b64("x.2.3."),
            b64("1.4.3."),
            b64("1.0.3."),
            b64("1.2.x."),
            b64(&format!("{}.2.3.", i64::MAX)),
            "A".repeat(MAX_CURSOR_LEN + 1),
        ] {
            let err = decode_cursor(&raw).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{raw:?}");
        }
    }

    #[test]
    fn log_lines_are_bounded_and_off_by_default() {
        assert_eq!(log_lines(None).unwrap(), 0);
        assert_eq!(log_lines(Some(500)).unwrap(), 500);
        assert_eq!(
            log_lines(Some(501)).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn docker_output_splits_into_lines_without_their_ends() {
        assert_eq!(
            split_lines(b"a\nb\r\nc"),
            ["a".to_owned(), "b".to_owned(), "c".to_owned()]
        );
        assert!(split_lines(b"").is_empty());
        assert_eq!(split_lines(b"\xff\n"), ["\u{fffd}".to_owned()]);
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Whatever a caller sends as `before`, it is a cursor or a 400,
        /// never a panic.
        #[test]
        fn any_before_is_a_cursor_or_an_invalid_request(raw in any::<String>()) {
            if let Err(e) = decode_cursor(&raw) {
                prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
            }
        }

        #[test]
        fn every_cursor_round_trips(
            at in -62_135_596_800_000_000i64..253_402_300_799_000_000,
            rank in 1i16..=3,
            seq in any::<i64>(),
            tie in any::<String>(),
        ) {
            let c = TimelineCursor {
                at: DateTime::from_timestamp_micros(at).unwrap(),
                rank,
                seq,
                tie,
            };
            let encoded = encode_cursor(&c);
            if encoded.len() <= MAX_CURSOR_LEN {
                prop_assert_eq!(decode_cursor(&encoded).unwrap(), c);
            }
        }
    }
}
