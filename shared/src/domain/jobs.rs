//! Job entries of `runtime:start_jobs` / `runtime:stop_jobs` and their results
//! on `runtime:job_results` (contracts/runtime-jobs.asyncapi.yaml).

use std::collections::HashMap;

use super::operation::wire_enum;
use super::{ErrorCode, GameId, Outcome};

wire_enum! {
    /// Why Lobby stops a runtime; frozen, in this order, on both sides.
    StopReason {
        OrphanCleanup => "orphan_cleanup",
        Cancelled => "cancelled",
        Finished => "finished",
        AdminRequest => "admin_request",
        Timeout => "timeout",
    }
}

/// A decoded `runtime:stop_jobs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopJob {
    pub game_id: GameId,
    pub reason: StopReason,
    pub requested_at_ms: Option<i64>,
}

impl StopJob {
    pub fn decode(fields: &HashMap<String, String>) -> Result<Self, MalformedJob> {
        let malformed = malformed_for(fields);
        let game_id = decode_game_id(fields)?;
        let reason = match fields.get("reason") {
            None => return Err(malformed("missing field reason".into())),
            Some(raw) => StopReason::parse(raw).ok_or_else(|| {
                malformed(format!(
                    "reason {raw:?} is not one of orphan_cleanup, cancelled, finished, admin_request, timeout"
                ))
            })?,
        };
        let requested_at_ms = parse_requested_at(fields).map_err(malformed)?;
        Ok(Self {
            game_id,
            reason,
            requested_at_ms,
        })
    }
}

/// Builds a [`MalformedJob`] keyed to whatever `game_id` the entry carries.
fn malformed_for(fields: &HashMap<String, String>) -> impl Fn(String) -> MalformedJob + '_ {
    move |reason| MalformedJob {
        game_id: fields.get("game_id").filter(|g| !g.is_empty()).cloned(),
        reason,
    }
}

fn decode_game_id(fields: &HashMap<String, String>) -> Result<GameId, MalformedJob> {
    let malformed = malformed_for(fields);
    match fields.get("game_id") {
        None => Err(malformed("missing field game_id".into())),
        Some(raw) => GameId::parse(raw).map_err(|e| malformed(e.to_string())),
    }
}

fn parse_requested_at(fields: &HashMap<String, String>) -> Result<Option<i64>, String> {
    fields
        .get("requested_at_ms")
        .map(|raw| {
            raw.parse::<i64>()
                .map_err(|_| format!("requested_at_ms {raw:?} is not a decimal integer"))
        })
        .transpose()
}

/// A decoded `runtime:start_jobs` entry. The image ref stays a raw string:
/// an invalid one is a business outcome (`start_config_invalid`, with its admin
/// intent), not a malformed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartJob {
    pub game_id: GameId,
    pub image_ref: String,
    pub requested_at_ms: Option<i64>,
}

/// An entry that cannot be processed. `game_id` is set when one could be read,
/// so a failure result can still be keyed to the game.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MalformedJob {
    pub game_id: Option<String>,
    pub reason: String,
}

impl StartJob {
    pub fn decode(fields: &HashMap<String, String>) -> Result<Self, MalformedJob> {
        let malformed = malformed_for(fields);
        let game_id = decode_game_id(fields)?;
        let image_ref = match fields.get("image_ref") {
            Some(raw) => raw.clone(),
            None => return Err(malformed("missing field image_ref".into())),
        };
        let requested_at_ms = parse_requested_at(fields).map_err(malformed)?;
        Ok(Self {
            game_id,
            image_ref,
            requested_at_ms,
        })
    }
}

/// One `runtime:job_results` entry; every field is always written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub game_id: String,
    pub outcome: Outcome,
    pub container_id: String,
    pub engine_endpoint: String,
    pub error_code: Option<ErrorCode>,
    pub error_message: String,
}

impl JobResult {
    pub fn stream_fields(&self) -> Vec<(String, String)> {
        vec![
            ("game_id".into(), self.game_id.clone()),
            ("outcome".into(), self.outcome.as_str().into()),
            ("container_id".into(), self.container_id.clone()),
            ("engine_endpoint".into(), self.engine_endpoint.clone()),
            (
                "error_code".into(),
                self.error_code.map(ErrorCode::as_str).unwrap_or("").into(),
            ),
            ("error_message".into(), self.error_message.clone()),
        ]
    }

    /// The result for an entry that could not be decoded.
    pub fn malformed(game_id: &str, reason: &str) -> Self {
        Self {
            game_id: game_id.to_owned(),
            outcome: Outcome::Failure,
            container_id: String::new(),
            engine_endpoint: String::new(),
            error_code: Some(ErrorCode::InvalidRequest),
            error_message: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_a_well_formed_start_job() {
        let job = StartJob::decode(&fields(&[
            ("game_id", "game-1"),
            ("image_ref", "galaxy/game:1.0.0"),
            ("requested_at_ms", "1775121700000"),
        ]))
        .unwrap();
        assert_eq!(job.game_id.as_str(), "game-1");
        assert_eq!(job.requested_at_ms, Some(1775121700000));
    }

    #[test]
    fn malformed_entries_keep_a_readable_game_id() {
        let err =
            StartJob::decode(&fields(&[("game_id", "g"), ("requested_at_ms", "x")])).unwrap_err();
        assert_eq!(err.game_id.as_deref(), Some("g"));
        let err =
            StartJob::decode(&fields(&[("game_id", "../x"), ("image_ref", "a")])).unwrap_err();
        assert_eq!(err.game_id.as_deref(), Some("../x"));
        let err = StartJob::decode(&fields(&[("image_ref", "a")])).unwrap_err();
        assert_eq!(err.game_id, None);
    }
}
