//! `health_event_history`: every health event of a game, for its timeline
//! (read in [`super::reads`], pruned in [`super::retention`]).

/// Adds the event to its game's history. One part of the statement that
/// stages a health event ([`super::UnitOfWork::stage`]), after the outbox
/// took the event (a dedupe-key repeat stages nothing), so the history is
/// deduplicated exactly as the stream is. Its parameters are the staging
/// statement's: `$1` game id, `$2` container id, `$4` event type, `$5`
/// details, `$6` occurred at, `$7` source, `$8` dedupe key.
pub(super) const APPEND_HISTORY: &str = "INSERT INTO health_event_history \
       (game_id, container_id, event_type, source, occurred_at, details, dedupe_key) \
     VALUES ($1, $2, $4, $7, $6, $5, $8)";
