//! Adapters: the only modules that speak bollard, sqlx, redis and reqwest
//! (for Lobby and the probes). Each maps its library's errors to ours at the boundary and
//! hands back domain types.
//!
//! - [`docker`]: the [`crate::ports::ContainerEngine`] on Docker (bollard).
//! - [`postgres`]: records, operation log, snapshots, outbox, observations,
//!   reads; the [`postgres::UnitOfWork`] transaction type.
//! - [`redis`]: leases, consumer groups, delivery, streaks, cursor.
//! - [`lobby`]: the diagnostic fetch of a game at Lobby.
//! - [`http_probe`]: the prober's `GET /healthz` client (reqwest).
//!
//! The adapter types the services hold are re-exported here, so a service
//! names `shared::adapters::LeaseStore`, never a library path.

pub mod docker;
pub mod http_probe;
pub mod lobby;
pub mod postgres;
pub mod redis;

pub use self::redis::delivery::{DeliveryError, StreamTrim};
pub use self::redis::streaks::{PendingTransition, StreakObservation, StreakSeed, StreakVerdict};
pub use self::redis::{ConsumerGroup, Lease, LeaseStore, RedisClient, RedisError, StreamEntry};
pub use crate::domain::IntentKind;
pub use http_probe::{ProbeClient, ProbeResult};
pub use postgres::IntentStore;
