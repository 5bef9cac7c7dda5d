//! Route groups. Each module exposes `router() -> Router<AppState>`; `lib.rs`
//! merges them under the request-id, auth, body-limit and timeout layers.
//!
//! - [`lifecycle`]: start, stop, restart, patch, cleanup.
//! - [`read`]: runtime records, one record with health, the operation log.
//! - [`discovery`]: Prometheus HTTP service discovery of engine containers.
//! - [`observe`]: per-game stats, logs and health.
//! - [`timeline`]: one game's operations, health events and intents, merged.
//! - [`probes`]: `/healthz`, `/readyz`, `/metrics` (open).

pub mod discovery;
pub mod lifecycle;
pub mod observe;
pub mod probes;
pub mod read;
pub mod timeline;
