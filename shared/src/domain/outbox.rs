//! An entry on its way to a Redis stream through the outbox.

use super::{GameId, HealthEvent, HealthSource};

/// One stream entry, committed to the outbox with the state it reports and
/// relayed to Redis later, in its game's commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub stream: String,
    pub fields: Vec<(String, String)>,
    /// At most one row per key (one result per job entry, one event per
    /// observation): staging a repeat is a no-op.
    pub dedupe_key: Option<String>,
    /// A health event moves its game's snapshot forward and adds a row to
    /// its history, in the same transaction (only when the entry itself is
    /// new, so a repeated observation is one history row too).
    pub health: Option<SourcedEvent>,
    /// The ordering key: a game's entries reach Redis in the order their
    /// units of work committed, and one the relay cannot deliver holds back
    /// the later ones of its game only. `None` (dead letters, results of
    /// entries with no valid game id): ordered by nothing but staging.
    pub game_id: Option<GameId>,
}

/// A health event as staged, with the source that observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedEvent {
    pub source: HealthSource,
    pub event: HealthEvent,
}
