//! rtmanager-rs shared library: everything the jobs have in common.
//!
//! # Layout
//! - [`domain`]: validated values and vocabularies (game ids, image refs,
//!   limits, error codes, runtime records, operations, health events, jobs,
//!   intents). No I/O.
//! - [`ports`]: the container-engine seam ([`ports::ContainerEngine`]).
//! - [`adapters`]: Docker (bollard), PostgreSQL (sqlx), Redis.
//! - [`outbox`]: durable, ordered publishing to Redis streams through a
//!   PostgreSQL outbox (health events, job results, intents, dead letters).
//! - [`health`]: the health sources: Docker events, inspect and reconcile, probes.
//! - [`lifecycle`]: stop, cleanup, restart and patch.
//! - [`start`]: the `start` lifecycle operation.
//! - [`stream_consumer`]: consumer-group job loop with reclaim and dead letters.
//! - [`bootstrap`]: connect, migrate and check before taking work.
//! - [`config`]: `RTMANAGER_*` settings.
//! - [`telemetry`]: JSON logs and Prometheus metrics.
//! - [`shutdown`]: SIGTERM/SIGINT handling.

pub mod adapters;
pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod health;
pub mod lifecycle;
pub mod outbox;
pub mod ports;
pub mod shutdown;
pub mod start;
pub mod stream_consumer;
pub mod telemetry;
