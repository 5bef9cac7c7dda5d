//! Start-up shared by every job: connect, migrate, check, before taking work.
//! Any failure is returned with a message naming what failed, and the job
//! exits non-zero.

use std::sync::Arc;

use anyhow::Context;

use crate::adapters::docker::DockerEngine;
use crate::adapters::lobby::LobbyClient;
use crate::adapters::postgres::Database;
use crate::adapters::redis::{IntentStore, LeaseStore, RedisClient};
use crate::config::Config;
use crate::operations::{OperationDeps, Operations};
use crate::outbox::{Outbox, StreamNames};
use crate::ports::ContainerEngine;
use crate::telemetry::Metrics;

/// The connected adapters a job is wired from.
#[derive(Clone)]
pub struct Infra {
    pub db: Database,
    pub redis: RedisClient,
    pub engine: Arc<dyn ContainerEngine>,
    pub outbox: Outbox,
    pub metrics: Metrics,
}

/// Connects PostgreSQL (and runs migrations), Redis and Docker, and checks the
/// Docker network when `check_network` is set.
pub async fn connect(config: &Config, check_network: bool) -> anyhow::Result<Infra> {
    let db = Database::connect(
        config.postgres_primary_dsn.expose(),
        config.postgres_max_connections,
    )
    .await
    .context("connecting to PostgreSQL (RTMANAGER_POSTGRES_PRIMARY_DSN)")?;
    db.migrate().await.context("running database migrations")?;
    let redis = RedisClient::connect(&config.redis_master_addr, &config.redis_password)
        .await
        .with_context(|| {
            format!(
                "connecting to Redis at {} (RTMANAGER_REDIS_MASTER_ADDR)",
                config.redis_master_addr
            )
        })?;
    redis.ping().await.context("pinging Redis")?;
    let engine = DockerEngine::connect(&config.docker_host).with_context(|| {
        format!(
            "connecting to Docker at {} (RTMANAGER_DOCKER_HOST)",
            config.docker_host
        )
    })?;
    engine.ping().await.context("pinging Docker")?;
    if check_network {
        let exists = engine
            .network_exists(&config.docker_network)
            .await
            .context("checking the Docker network")?;
        anyhow::ensure!(
            exists,
            "Docker network {:?} does not exist (RTMANAGER_DOCKER_NETWORK); rtmanager never creates it",
            config.docker_network
        );
    }
    let metrics = Metrics::new();
    let outbox = Outbox::new(
        db.clone(),
        StreamNames::from_config(config),
        metrics.clone(),
    );
    Ok(Infra {
        db,
        redis,
        engine: Arc::new(engine),
        outbox,
        metrics,
    })
}

/// The common start of a long-running job: settings, JSON logs, signal
/// handling, connected and checked adapters, and the metrics listener.
pub async fn process(
    check_network: bool,
) -> anyhow::Result<(Config, Infra, tokio_util::sync::CancellationToken)> {
    process_with(check_network, true).await
}

/// [`process`], optionally without the metrics listener (a one-shot run has
/// nothing to be scraped, and must not fail on a port in use).
pub async fn process_with(
    check_network: bool,
    serve_metrics: bool,
) -> anyhow::Result<(Config, Infra, tokio_util::sync::CancellationToken)> {
    let config = Config::from_env()?;
    crate::telemetry::init_logging(&config.log_level);
    let shutdown = crate::shutdown::on_signals().context("installing signal handlers")?;
    let infra = connect(&config, check_network).await?;
    let metrics_addr = if serve_metrics {
        config.metrics_addr.as_str()
    } else {
        ""
    };
    if let Some(listener) = crate::telemetry::bind_metrics(metrics_addr).await? {
        tokio::spawn(crate::telemetry::serve_metrics(
            listener,
            infra.metrics.clone(),
            shutdown.clone(),
        ));
    }
    Ok((config, infra, shutdown))
}

/// The lifecycle operations, wired from connected adapters.
pub fn operations(config: &Config, infra: &Infra) -> anyhow::Result<Operations> {
    let lobby = match config.lobby_internal_base_url.as_str() {
        "" => None,
        url => Some(
            LobbyClient::new(url, config.lobby_internal_timeout)
                .context("RTMANAGER_LOBBY_INTERNAL_BASE_URL")?,
        ),
    };
    let deps = OperationDeps {
        engine: infra.engine.clone(),
        db: infra.db.clone(),
        outbox: infra.outbox.clone(),
        leases: LeaseStore::new(infra.redis.clone(), config.lease_ttl()),
        intents: IntentStore::new(infra.redis.clone()),
        lobby,
        metrics: infra.metrics.clone(),
    };
    Ok(Operations::new(deps, config.operation_settings()?))
}
