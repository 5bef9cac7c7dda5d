//! Start-up shared by every job: settings, logs, signals, then connect,
//! migrate and check before taking work, and the wiring of the operations.
//! Any failure is returned with a message naming what failed, and the job
//! exits non-zero.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::adapters::docker::DockerEngine;
use crate::adapters::lobby::LobbyClient;
use crate::adapters::postgres::{Database, MigrateError};
use crate::adapters::redis::RedisMaster;
use crate::adapters::{LeaseStore, RedisClient};
use crate::config::{
    CommonConfig, Env, JobConfig, LifecycleConfig, MigrationMode, RedisConfig, StateConfig,
};
use crate::liveness::Liveness;
use crate::operations::{OperationDeps, Operations};
use crate::outbox::Outbox;
use crate::ports::{ContainerEngine, NoEngine};
use crate::readiness::Readiness;
use crate::telemetry::{Endpoints, MeteredEngine, Metrics};

/// The connected adapters a job is wired from, and what its endpoints
/// report: its metrics, its main loops (liveness) and its checks
/// (readiness).
#[derive(Clone)]
pub struct Infra {
    pub db: Database,
    pub redis: RedisClient,
    /// Timed ([`MeteredEngine`]): every call moves the Docker API metrics.
    pub engine: Arc<dyn ContainerEngine>,
    pub outbox: Outbox,
    pub metrics: Metrics,
    /// The main loops `/healthz` watches; each job's loop registers itself.
    pub liveness: Liveness,
    /// The checks `/readyz` runs: `postgres`, `redis` and `docker` from the
    /// start (`docker` only where the process uses Docker, [`DockerUse`]); a
    /// consumer adds `consumer_group`.
    pub readiness: Readiness,
}

impl Infra {
    /// What `/metrics`, `/healthz` and `/readyz` answer from.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            metrics: self.metrics.clone(),
            liveness: self.liveness.clone(),
            readiness: self.readiness.clone(),
        }
    }
}

/// What a process needs of Docker at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerUse {
    /// Nothing: no socket is opened (it need not exist), [`Infra::engine`]
    /// is a [`NoEngine`] and `/readyz` has no `docker` check.
    Unused,
    /// The daemon, pinged at start-up.
    Daemon,
    /// The daemon and the network `RTMANAGER_DOCKER_NETWORK` (the jobs that
    /// create or stop engines).
    DaemonAndNetwork,
}

impl DockerUse {
    /// The daemon, with the network checked when `check_network` is set;
    /// nothing when the job's settings say it does not use Docker.
    pub fn of<C: JobConfig>(config: &C, check_network: bool) -> Self {
        match (config.uses_docker(), check_network) {
            (false, _) => Self::Unused,
            (true, false) => Self::Daemon,
            (true, true) => Self::DaemonAndNetwork,
        }
    }
}

/// Connects PostgreSQL (and runs migrations), Redis and Docker, and checks the
/// Docker network when `check_network` is set.
pub async fn connect(config: &CommonConfig, check_network: bool) -> anyhow::Result<Infra> {
    let docker = if check_network {
        DockerUse::DaemonAndNetwork
    } else {
        DockerUse::Daemon
    };
    connect_using(config, docker).await
}

/// [`connect`], with Docker as `docker` says.
pub async fn connect_using(config: &CommonConfig, docker: DockerUse) -> anyhow::Result<Infra> {
    let db = Database::connect(
        config.postgres.dsn.expose(),
        config.postgres.max_connections,
    )
    .await
    .context("connecting to PostgreSQL (RTMANAGER_POSTGRES_PRIMARY_DSN)")?;
    prepare_schema(&db, config.postgres.migrations).await?;
    let redis = connect_redis(&config.redis).await?;
    let s = &config.streams;
    redis
        .refuse_cluster_unsafe_streams([
            ("RTMANAGER_JOB_RESULTS_STREAM", s.job_results.as_str()),
            ("RTMANAGER_HEALTH_EVENTS_STREAM", s.health_events.as_str()),
            (
                "RTMANAGER_NOTIFICATION_INTENTS_STREAM",
                s.notification_intents.as_str(),
            ),
        ])
        .map_err(anyhow::Error::msg)?;
    let engine: Arc<dyn ContainerEngine> = match docker {
        DockerUse::Unused => Arc::new(NoEngine),
        DockerUse::Daemon | DockerUse::DaemonAndNetwork => {
            Arc::new(connect_docker(config, docker == DockerUse::DaemonAndNetwork).await?)
        }
    };
    let metrics = Metrics::new();
    tokio::spawn(report_redis_master(redis.master(), metrics.clone()));
    let outbox = Outbox::new(db.clone(), config.streams.clone(), metrics.clone());
    let engine: Arc<dyn ContainerEngine> = Arc::new(MeteredEngine::new(engine, metrics.clone()));
    let readiness = Readiness::new(metrics.clone());
    let (pg, rd, dk) = (db.clone(), redis.clone(), engine.clone());
    readiness.add("postgres", move || {
        let db = pg.clone();
        async move { db.ping().await }
    });
    readiness.add("redis", move || {
        let redis = rd.clone();
        async move { redis.ping().await }
    });
    if docker != DockerUse::Unused {
        readiness.add("docker", move || {
            let engine = dk.clone();
            async move { engine.ping().await }
        });
    }
    Ok(Infra {
        db,
        redis,
        engine,
        outbox,
        liveness: Liveness::new(config.process.liveness_stall_factor),
        readiness,
        metrics,
    })
}

/// Opens the Docker client and pings the daemon; checks the network when
/// `check_network` is set.
async fn connect_docker(
    config: &CommonConfig,
    check_network: bool,
) -> anyhow::Result<DockerEngine> {
    let engine = DockerEngine::connect(&config.docker.host).with_context(|| {
        format!(
            "connecting to Docker at {} (RTMANAGER_DOCKER_HOST)",
            config.docker.host
        )
    })?;
    engine.ping().await.context("pinging Docker")?;
    if check_network {
        let exists = engine
            .network_exists(&config.docker.network)
            .await
            .context("checking the Docker network")?;
        anyhow::ensure!(
            exists,
            "Docker network {:?} does not exist (RTMANAGER_DOCKER_NETWORK); rtmanager never creates it",
            config.docker.network
        );
    }
    Ok(engine)
}

/// `RTMANAGER_POSTGRES_MIGRATIONS`: `auto` runs the pending migrations,
/// `off` only checks that none is pending. Either way a schema newer than
/// this binary (a later release migrated it) is accepted and logged: the
/// migrations only ever add what an older release ignores.
pub async fn prepare_schema(db: &Database, mode: MigrationMode) -> anyhow::Result<()> {
    let state = match mode {
        MigrationMode::Auto => db.migrate().await.map_err(|e| match e {
            MigrateError::PermissionDenied(why) => anyhow::anyhow!(
                "running database migrations: the role of RTMANAGER_POSTGRES_PRIMARY_DSN may not change the schema ({why}); run `rest-gateway migrate` as the schema's owner and set RTMANAGER_POSTGRES_MIGRATIONS=off for this role"
            ),
            MigrateError::Failed(why) => anyhow::anyhow!("running database migrations: {why}"),
        })?,
        MigrationMode::Off => {
            let state = db
                .migration_state()
                .await
                .context("checking database migrations (RTMANAGER_POSTGRES_MIGRATIONS=off)")?;
            if !state.pending.is_empty() {
                let missing: Vec<String> = state
                    .pending
                    .iter()
                    .map(|(version, name)| format!("{version} ({name})"))
                    .collect();
                anyhow::bail!(
                    "RTMANAGER_POSTGRES_MIGRATIONS=off, and the schema lacks migration(s) {}: run `rest-gateway migrate` with the owner's RTMANAGER_POSTGRES_PRIMARY_DSN first",
                    missing.join(", ")
                );
            }
            state
        }
    };
    if !state.newer.is_empty() {
        tracing::info!(
            versions = ?state.newer,
            "the schema is newer than this binary (migrations it does not know are applied); running against it"
        );
    }
    Ok(())
}

/// Connects Redis as the settings say and pings it; an error names the
/// variables that told where Redis is.
pub async fn connect_redis(config: &RedisConfig) -> anyhow::Result<RedisClient> {
    let vars = match &config.sentinel {
        Some(s) => format!(
            "sentinels {} (RTMANAGER_REDIS_SENTINEL_ADDRS), master {:?} (RTMANAGER_REDIS_SENTINEL_MASTER)",
            s.addrs.join(","),
            s.master
        ),
        None => format!("{} (RTMANAGER_REDIS_MASTER_ADDR)", config.addr),
    };
    let vars = match &config.tls {
        None => vars,
        Some(tls) => match &tls.ca_file {
            Some(file) => format!(
                "{vars} over TLS (RTMANAGER_REDIS_TLS), trusting the CA of {file} \
                 (RTMANAGER_REDIS_TLS_CA_FILE)"
            ),
            None => format!(
                "{vars} over TLS (RTMANAGER_REDIS_TLS), trusting the compiled-in web roots \
                 (RTMANAGER_REDIS_TLS_CA_FILE unset)"
            ),
        },
    };
    let redis = RedisClient::open(config)
        .await
        .with_context(|| format!("connecting to Redis at {vars}"))?;
    redis
        .ping()
        .await
        .with_context(|| format!("pinging Redis at {vars}"))?;
    Ok(redis)
}

/// Logs `redis master` and sets `rtmanager_redis_master_info` whenever the
/// master in use changes (once at start-up; again after each failover).
async fn report_redis_master(mut master: watch::Receiver<Option<RedisMaster>>, metrics: Metrics) {
    let mut previous: Option<RedisMaster> = None;
    loop {
        let current = master.borrow_and_update().clone();
        if let Some(now) = current.filter(|now| previous.as_ref() != Some(now)) {
            tracing::info!(
                topology = now.topology.as_str(),
                addr = %now.addr,
                previous = previous.as_ref().map_or("", |p| p.addr.as_str()),
                "redis master"
            );
            metrics.set_redis_master(
                now.topology.as_str(),
                previous.as_ref().map(|p| p.addr.as_str()),
                &now.addr,
            );
            previous = Some(now);
        }
        if master.changed().await.is_err() {
            return;
        }
    }
}

/// The start of a process: its settings (only the sections `C` reads) and
/// JSON logs.
pub fn settings<C: JobConfig>() -> anyhow::Result<C> {
    let config = C::from_env(&Env::from_process())?;
    crate::telemetry::init_logging(C::JOB, &config.common().process.log_level);
    crate::failpoints::arm_from_env();
    Ok(config)
}

/// The common start of a long-running job: settings, JSON logs, signal
/// handling, connected and checked adapters, and the metrics listener.
pub async fn process<C: JobConfig>(
    check_network: bool,
) -> anyhow::Result<(C, Infra, CancellationToken)> {
    process_with(check_network, true).await
}

/// [`process`], optionally without the metrics listener (a one-shot run has
/// nothing to be scraped, and must not fail on a port in use).
pub async fn process_with<C: JobConfig>(
    check_network: bool,
    serve_metrics: bool,
) -> anyhow::Result<(C, Infra, CancellationToken)> {
    let config: C = settings()?;
    let shutdown = crate::shutdown::on_signals().context("installing signal handlers")?;
    let common = config.common();
    let infra = connect_using(common, DockerUse::of(&config, check_network)).await?;
    infra.metrics.set_build_info(C::JOB);
    infra.readiness.stop_on(shutdown.clone());
    let metrics_addr = match (&common.process.metrics_addr, serve_metrics) {
        (Some(addr), true) => addr.as_str(),
        _ => "",
    };
    if let Some(listener) = crate::telemetry::bind_metrics(metrics_addr).await? {
        tokio::spawn(crate::telemetry::serve_metrics(listener, infra.endpoints()));
    }
    Ok((config, infra, shutdown))
}

/// The lifecycle operations, wired from connected adapters.
pub fn operations(
    infra: &Infra,
    common: &CommonConfig,
    lifecycle: &LifecycleConfig,
    state: &StateConfig,
) -> anyhow::Result<Operations> {
    let lobby = match &lifecycle.lobby_base_url {
        None => None,
        Some(url) => Some(
            LobbyClient::new(url, lifecycle.lobby_timeout)
                .context("RTMANAGER_LOBBY_INTERNAL_BASE_URL")?,
        ),
    };
    let deps = OperationDeps {
        engine: infra.engine.clone(),
        db: infra.db.clone(),
        outbox: infra.outbox.clone(),
        leases: LeaseStore::new(infra.redis.clone(), common.redis.lease_ttl),
        lobby,
        metrics: infra.metrics.clone(),
    };
    Ok(Operations::new(
        deps,
        lifecycle.operation_settings(&common.docker, state),
    ))
}
