//! Adapters: the only modules that speak bollard, sqlx, redis and reqwest
//! (for Lobby). Each maps its library's errors to ours at the boundary and
//! hands back domain types.
//!
//! - [`docker`]: the [`crate::ports::ContainerEngine`] on Docker (bollard).
//! - [`postgres`]: records, operation log, snapshots, outbox, observations,
//!   reads; the [`postgres::UnitOfWork`] transaction type.
//! - [`redis`]: leases, intents, consumer groups, delivery, streaks, cursor.
//! - [`lobby`]: the diagnostic fetch of a game at Lobby.

pub mod docker;
pub mod lobby;
pub mod postgres;
pub mod redis;
