//! `health_snapshots`: the latest observation of each game.

/// Replaces the game's snapshot only with a later observation, so a late or
/// replayed event never overwrites a newer one. One part of the statement
/// that stages a health event ([`super::UnitOfWork::stage`]), with its
/// parameters: `$1` game id, `$2` container id, `$3` snapshot status, `$4`
/// event type, `$5` details, `$6` occurred at.
pub(super) const UPSERT_SNAPSHOT: &str = "INSERT INTO health_snapshots \
       (game_id, container_id, status, event_type, details, occurred_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (game_id) DO UPDATE SET container_id = EXCLUDED.container_id, \
         status = EXCLUDED.status, event_type = EXCLUDED.event_type, \
         details = EXCLUDED.details, occurred_at = EXCLUDED.occurred_at, updated_at = now() \
     WHERE health_snapshots.occurred_at < EXCLUDED.occurred_at";
