//! rtmanager-rs shared library: the contracts, the domain, the ports and
//! adapters, the outbox, the lifecycle operations and the job loop that more
//! than one job uses. Logic used by one job lives in that job's crate.
//!
//! # Layout
//! - [`domain`]: validated values and vocabularies (game ids, image refs,
//!   limits, error codes, runtime records, operations, health events and
//!   their constructors, jobs, intents, container labels and states). No I/O.
//! - [`ports`]: the container-engine seam ([`ports::ContainerEngine`]).
//! - [`adapters`]: Docker (bollard), PostgreSQL (sqlx), Redis, Lobby
//!   (reqwest): the only modules that speak those libraries.
//! - [`outbox`]: message builders and the relay that delivers the outbox to
//!   Redis streams, in order and once.
//! - [`operations`]: start, stop, cleanup, restart and patch.
//! - [`stream_consumer`]: the consumer-group job loop with reclaim and dead
//!   letters (start-job and stop-job).
//! - [`retry`]: the one backoff policy.
//! - [`bootstrap`]: connect, migrate and check before taking work; wiring.
//! - [`config`]: `RTMANAGER_*` settings.
//! - [`telemetry`]: JSON logs, Prometheus metrics, the `/metrics`,
//!   `/healthz` and `/readyz` listener.
//! - [`healthcheck`]: `<job> healthcheck`, the container health check that
//!   calls the process's own `/healthz`.
//! - [`liveness`]: the main loops' heartbeats behind `/healthz`.
//! - [`readiness`]: the dependency checks behind `/readyz`.
//! - [`failpoints`]: crash points for tests (the `failpoints` feature only).
//! - [`shutdown`]: SIGTERM/SIGINT handling.

pub mod adapters;
pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod failpoints;
pub mod game_lock;
pub mod healthcheck;
pub mod liveness;
pub mod operations;
pub mod outbox;
pub mod ports;
pub mod readiness;
pub mod retry;
pub mod shutdown;
pub mod stream_consumer;
pub mod telemetry;
