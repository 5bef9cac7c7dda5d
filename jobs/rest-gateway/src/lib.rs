//! `rest-gateway`: the internal REST API of rtmanager for Game Master and
//! Admin, on `RTMANAGER_INTERNAL_HTTP_ADDR` (`:8096`). The contract is
//! `contracts/rest-gateway.openapi.yaml`.
//!
//! # Layout
//! - [`routes`]: the route groups (lifecycle, reads, discovery, observe,
//!   timeline, probes).
//! - [`auth`]: bearer tokens (file + env, SIGHUP reload), fail-closed.
//! - [`tls`]: HTTPS on the API listener (rustls, SIGHUP reload), or plain
//!   HTTP when no certificate is set.
//! - [`middleware`]: request id, declared-size check, access log, timeout.
//! - [`extract`]: strict extractors (game id, JSON body, query, caller).
//! - [`error`]: the `{"error":{"code","message"}}` envelope.
//! - [`metrics`]: the gateway's metrics, appended to the shared ones.
//! - [`state`]: what handlers reach.
//! - [`startup`]: the command line and the process start-up (`main` calls
//!   [`startup::run`]).
//! - [`file_sd`]: the `sync-file-sd` subcommand (the discovery inventory as a
//!   Prometheus `file_sd` file).
//!
//! # Layers, outermost first
//! request id (+ 413 on a declared oversize body, access log, request
//! counter) -> bearer auth on `/api/v1/internal/*` (every path under the
//! prefix, known or not, so the route list leaks nothing) -> body limit ->
//! timeout -> the route. Unknown routes are 404 and wrong methods 405, both in
//! the envelope.
//!
//! The outbox relay runs alongside: a REST start stages its health event and
//! intents in the outbox like the stream path does. It is the gateway's
//! main loop, the one `/healthz` watches (the HTTP server answering is the
//! rest of its liveness).

pub mod auth;
pub mod error;
pub mod extract;
pub mod file_sd;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod tls;

/// The property tests' runner: deterministic in CI (seed 10, 512 cases)
/// unless `PROPTEST_RNG_SEED` or `PROPTEST_CASES` ask otherwise (the README's
/// "Property tests"); no failure files.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config {
        failure_persistence: None,
        ..Default::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(10);
    }
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    config
}

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use crate::settings::RestGatewayConfig;
use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use shared::bootstrap::Infra;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::metrics::GatewayMetrics;
use crate::state::AppState;
use crate::tls::{ApiTls, TlsListener};

pub use crate::startup::{parse_args, Command, USAGE};

/// The whole application: every route group under the gateway's layers.
pub fn app(state: AppState) -> Router {
    let limit = state.config.gateway.body_limit;
    Router::new()
        .merge(routes::lifecycle::router())
        .merge(routes::read::router())
        .merge(routes::discovery::router())
        .merge(routes::observe::router())
        .merge(routes::timeline::router())
        .merge(routes::probes::router())
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_id,
        ))
        .with_state(state)
}

/// `/metrics`, `/healthz` and `/readyz` only, for `RTMANAGER_METRICS_ADDR`
/// (the port every rtmanager pod is scraped on).
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .merge(routes::probes::router())
        .fallback(error::route_not_found)
        .with_state(state)
}

/// The API listener: plain HTTP, or HTTPS with the certificate of an
/// [`ApiTls`].
pub enum ApiListener {
    Plain(TcpListener),
    Tls { listener: TlsListener, tls: ApiTls },
}

impl ApiListener {
    /// `tcp` as it is (`tls` is `None`) or with TLS on every connection.
    pub fn new(tcp: TcpListener, tls: Option<ApiTls>) -> Self {
        match tls {
            None => Self::Plain(tcp),
            Some(tls) => Self::Tls {
                listener: tls.listen(tcp),
                tls,
            },
        }
    }

    fn tls(&self) -> Option<&ApiTls> {
        match self {
            Self::Plain(_) => None,
            Self::Tls { tls, .. } => Some(tls),
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        use axum::serve::Listener;
        match self {
            Self::Plain(l) => l.local_addr(),
            Self::Tls { listener, .. } => listener.local_addr(),
        }
    }
}

impl From<TcpListener> for ApiListener {
    fn from(tcp: TcpListener) -> Self {
        Self::Plain(tcp)
    }
}

/// Loads the API tokens from `config` (refusing to start without any, unless
/// auth is explicitly disabled) and its TLS files if set, and serves until
/// `shutdown`. Tests call this with a listener on port 0.
pub async fn run(
    config: RestGatewayConfig,
    infra: Infra,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = Auth::from_config(&config.gateway).context("API authentication")?;
    let tls = ApiTls::from_config(&config.gateway).context("API TLS")?;
    let listener = ApiListener::new(listener, tls);
    serve(config, infra, listener, None, auth, shutdown).await
}

/// Serves the API on `listener` (and `/metrics` on `metrics_listener`) until
/// `shutdown`; then stops accepting, lets running requests and lifecycle
/// operations finish within `RTMANAGER_SHUTDOWN_TIMEOUT`, and gives the
/// outbox relay a last pass.
pub async fn serve(
    config: RestGatewayConfig,
    infra: Infra,
    listener: impl Into<ApiListener>,
    metrics_listener: Option<TcpListener>,
    auth: Auth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = listener.into();
    let operations =
        shared::bootstrap::operations(&infra, &config.common, &config.lifecycle, &config.state)?;
    let db = infra.db.clone();
    infra.readiness.add_as("migrations", "pending", move || {
        routes::probes::migrations_applied(db.clone())
    });
    infra.readiness.stop_on(shutdown.clone());
    let relay_loop = infra.liveness.watch("outbox relay", shared::retry::CAP);
    let state = AppState {
        config: Arc::new(config),
        metrics: GatewayMetrics::new(&auth, listener.tls()),
        infra,
        operations,
        auth,
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
    };
    let grace = state.config.common.process.shutdown_timeout;
    if let Some(metrics_listener) = metrics_listener {
        let server = axum::serve(metrics_listener, metrics_app(state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tokio::spawn(server.into_future());
    }
    let https = listener.tls().is_some();
    if !https {
        tracing::warn!(
            "RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE and RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE are not set: \
             the API serves plain HTTP and bearer tokens cross the network in clear"
        );
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, https, auth_disabled = state.auth.is_disabled(), "rest-gateway listening");
    }
    let outbox = state.infra.outbox.clone();
    match listener {
        ApiListener::Plain(tcp) => {
            let serving = serve_until_drained(&state, tcp, grace);
            outbox
                .with_watched_relay(&state.infra.redis, relay_loop, serving)
                .await
        }
        ApiListener::Tls { listener, .. } => {
            let serving = serve_until_drained(&state, listener, grace);
            outbox
                .with_watched_relay(&state.infra.redis, relay_loop, serving)
                .await
        }
    }
}

/// Serves until `shutdown`, then lets open connections and running lifecycle
/// tasks finish within `grace`.
async fn serve_until_drained<L>(
    state: &AppState,
    listener: L,
    grace: Duration,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = state.shutdown.clone();
    let server = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let mut server = tokio::spawn(server.into_future());
    let served = tokio::select! {
        done = &mut server => Some(done),
        _ = shutdown.cancelled() => None,
    };
    let result = match served {
        Some(done) => done
            .context("HTTP server task")?
            .context("HTTP server failed"),
        None => match tokio::time::timeout(grace, &mut server).await {
            Ok(done) => done
                .context("HTTP server task")?
                .context("HTTP server failed"),
            Err(_) => {
                tracing::warn!("open connections did not finish within RTMANAGER_SHUTDOWN_TIMEOUT; closing them");
                server.abort();
                Ok(())
            }
        },
    };
    state.tasks.close();
    if tokio::time::timeout(grace, state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = state.tasks.len(),
            "lifecycle operations still running at the end of the shutdown grace"
        );
    }
    result
}
