//! The three independent health sources. Each publishes only through the one
//! health publisher ([`crate::outbox::Publisher::emit_health`]), so every event
//! is durable, ordered and valid against `contracts/runtime-health.asyncapi.yaml`.
//!
//! - [`docker_events`]: the Docker events listener (`docker-events`).
//! - [`inspect`]: the periodic inspect pass and the reconciler (`inspect-cron`).
//! - [`prober`]: active `/healthz` probes, sharded by game id (`healthz-prober`).

pub mod docker_events;
pub mod inspect;
pub mod prober;
