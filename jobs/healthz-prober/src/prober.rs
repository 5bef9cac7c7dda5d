//! Active `/healthz` probes of running engines, sharded by game id
//! (`healthz-prober`).
//!
//! # What it does
//! Every `RTMANAGER_PROBE_INTERVAL` (15 s) each `running` game of this
//! instance's shard gets one `GET {engine}/healthz` with
//! `RTMANAGER_PROBE_TIMEOUT` (2 s). A 2xx answer is a success; anything else
//! (another status, a timeout, a refused or reset connection, a failed name
//! lookup) is a failure. After `RTMANAGER_PROBE_FAILURES_THRESHOLD` (3)
//! failures in a row it emits one `probe_failed {consecutive_failures,
//! last_status, last_error}` (`last_status` 0 without a response;
//! `last_error` e.g. `timeout after 2s`, `connection refused`, `status 500`);
//! the first success after that emits one `probe_recovered
//! {prior_failure_count}`. Nothing below the threshold, nothing repeated
//! during a streak. Events go through the one health publisher
//! ([`Outbox::health`]: snapshot + outbox row in one transaction).
//!
//! Not probed (and not counted as a failure): a game younger than
//! `RTMANAGER_PROBE_INITIAL_GRACE` (by `started_at`); a game whose per-game
//! lease is held (a lifecycle operation is running; checked before each probe
//! and again, atomically, before a failure is counted); a failure whose record
//! meanwhile stopped or got another container (re-read from PostgreSQL, only
//! on failures, so a stop between two target refreshes is not reported).
//!
//! # Targets and shards
//! The target set is re-read from PostgreSQL (`runtime_records` with status
//! `running`) every `RTMANAGER_PROBE_REFRESH_INTERVAL`. A game belongs to
//! shard `fnv1a64(game_id) % RTMANAGER_SHARD_COUNT` ([`shard_of`]); this
//! instance is `RTMANAGER_SHARD_INDEX` or its StatefulSet ordinal. FNV-1a 64
//! is written out here and pinned by a unit test, so the assignment never
//! changes across Rust versions or platforms (std's `DefaultHasher` may). A
//! game that stops, leaves the shard or is removed is dropped at the next
//! refresh; a refresh that fails keeps the previous set.
//!
//! # Scheduling
//! Each target has its own task. Its probes happen at wall-clock slots
//! `k * interval + offset(game)`, where the offset is a stable hash of the
//! game id ([`slot_offset`]): probes are spread evenly over the interval, and
//! every prober (after a restart, or two overlapping during a reshard) probes
//! a game at the same instants. A slot is named by its time (milliseconds
//! since the epoch), which every prober computes alike and which keeps
//! growing when the interval is reconfigured. Probes run
//! concurrently, bounded by `RTMANAGER_PROBE_CONCURRENCY` (a semaphore held
//! only for the HTTP exchange), each with its own timeout, so one hung engine
//! costs one permit for at most the timeout and never delays another game. A
//! slot missed because the previous probe of the same game was still running
//! is skipped, not queued.
//!
//! One `reqwest` client (hyper's keep-alive pool, idle connections kept longer
//! than the interval) serves every probe, so a healthy engine is probed over
//! one long-lived connection instead of a connect per probe.
//!
//! # Streak state in Redis
//! The streak lives in Redis, not in memory, so it survives a prober restart
//! or a reshard: hash `rtmanager:probe:{base64url(game_id)}` with
//! `container_id`, `consecutive_failures`, `failed_published` (`1` while a
//! `probe_failed` waits for its `probe_recovered`), `failed_container` (the
//! container that `probe_failed` was about) and `last_slot`. One Lua script
//! ([`OBSERVE_LUA`]) applies an observation and decides atomically whether to
//! publish, so when two probers briefly overlap on a game only one can win a
//! transition; and because an observation carries its slot, the second
//! observation of the same slot is ignored (`Duplicate`) instead of
//! counting the failure twice. If the event cannot be committed (PostgreSQL
//! away) the prober retries; if it is stopped before it succeeds, it restores
//! the state the script replaced, so the transition is decided again later
//! rather than lost. The key expires a day (or 100 intervals) after the last
//! observation.
//!
//! A new container (restart, patch) starts a new streak: its failures are
//! counted from zero. An open `probe_failed` is not forgotten, though: the
//! first success, on whichever container, publishes `probe_recovered` (with
//! the count right before it, i.e. the old container's streak when the new
//! one succeeds at once). If the new container instead fails up to the
//! threshold, it gets its own `probe_failed` (the snapshot would otherwise
//! show `healthy` from its `container_started` while it fails), and one
//! `probe_recovered` closes both. So every `probe_failed` is followed by a
//! `probe_recovered`, and the health snapshot is never stale.
//!
//! # Address modes (`RTMANAGER_PROBE_ADDRESS_MODE`)
//! - `hostname` (default): `GET {engine_endpoint}/healthz` with the stored
//!   endpoint, `http://galaxy-game-{game_id}:8080`, as Game Master calls it.
//!   The name resolves only through Docker's DNS inside the engines' network,
//!   so the prober runs there: a `FROM scratch` container of the static binary
//!   attached to `RTMANAGER_DOCKER_NETWORK` (compose), or a pod that can
//!   resolve the engines. It exercises the same path as Game Master.
//! - `container_ip`: for a prober running on the Docker host itself (outside
//!   any container), where the host reaches bridge-network addresses but
//!   cannot resolve container names. It inspects the record's current
//!   container, takes its IP on the record's `docker_network` and probes
//!   `http://{ip}:{endpoint port}/healthz`. The address is cached per
//!   container id and re-inspected after any failure. Docker being away skips
//!   the round (it is not the engine's failure); a missing container counts.
//!
//! Both modes need Docker reachable at start-up (the shared bootstrap pings
//! it); only `container_ip` uses it afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use shared::adapters::postgres::Database;
use shared::adapters::redis::streaks::StreakVerdict;
use shared::adapters::redis::{LeaseStore, RedisClient};
use shared::config::{Config, ConfigError};
use shared::domain::{GameId, HealthDetails, HealthEvent, RuntimeRecord, RuntimeStatus};
use shared::outbox::Outbox;
use shared::ports::{ContainerEngine, EngineError};

// ---------------------------------------------------------------------------
// Stable hashes: shard and slot offset
// ---------------------------------------------------------------------------

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, over the bytes. Written out (not std's `DefaultHasher`,
/// whose output may change between Rust releases) because shard assignment
/// must agree between every prober version that ever runs side by side.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard of a game: `fnv1a64(game_id) % shard_count`.
pub fn shard_of(game_id: &GameId, shard_count: u32) -> u32 {
    (fnv1a64(game_id.as_str().as_bytes()) % u64::from(shard_count.max(1))) as u32
}

/// SplitMix64's finalizer: decorrelates the slot offset from the shard (both
/// come from the same FNV hash; without it, with 2 shards all of one shard's
/// offsets would share a parity).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where in each interval a game is probed: a stable, evenly spread offset in
/// `[0, interval)`, identical in every prober, in milliseconds.
pub fn slot_offset(game_id: &GameId, interval: Duration) -> u64 {
    mix(fnv1a64(game_id.as_str().as_bytes())) % interval_ms(interval)
}

fn interval_ms(interval: Duration) -> u64 {
    (interval.as_millis() as u64).max(1)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time (ms since the epoch) of the first slot strictly after `now_ms`.
pub fn next_slot(now_ms: u64, interval: Duration, offset_ms: u64) -> u64 {
    let interval = interval_ms(interval);
    (now_ms.saturating_sub(offset_ms) / interval + 1) * interval + offset_ms
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// How the engine's address is found; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    Hostname,
    ContainerIp,
}

impl AddressMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "hostname" => Some(Self::Hostname),
            "container_ip" => Some(Self::ContainerIp),
            _ => None,
        }
    }
}

/// Prober settings, resolved from [`Config`] once.
#[derive(Debug, Clone)]
pub struct ProberSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub threshold: u32,
    pub initial_grace: Duration,
    pub concurrency: usize,
    pub refresh_interval: Duration,
    pub address_mode: AddressMode,
    pub shard_count: u32,
    pub shard_index: u32,
    /// Bound on the in-flight probes' finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl ProberSettings {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let address_mode = AddressMode::parse(&config.probe_address_mode).ok_or_else(|| {
            ConfigError(format!(
                "RTMANAGER_PROBE_ADDRESS_MODE: {:?} is not hostname or container_ip",
                config.probe_address_mode
            ))
        })?;
        let shard_index = config
            .shard_index()
            .map_err(|e| ConfigError(format!("RTMANAGER_SHARD_INDEX: {e}")))?;
        Ok(Self {
            interval: config.probe_interval,
            timeout: config.probe_timeout,
            threshold: config.probe_failures_threshold,
            initial_grace: config.probe_initial_grace,
            concurrency: config.probe_concurrency,
            refresh_interval: config.probe_refresh_interval,
            address_mode,
            shard_count: config.shard_count,
            shard_index,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Whether this instance probes the game.
    pub fn owns(&self, game_id: &GameId) -> bool {
        shard_of(game_id, self.shard_count) == self.shard_index
    }
}

// ---------------------------------------------------------------------------
// The HTTP probe
// ---------------------------------------------------------------------------

/// One HTTP probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Healthy {
        status: u16,
    },
    /// `status` is 0 when no response arrived.
    Unhealthy {
        status: u16,
        error: String,
    },
}

impl ProbeResult {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy { .. })
    }
}

/// Bytes of a `/healthz` body read (and discarded) so the connection can go
/// back to the pool; a longer body is cut and its connection not reused.
const MAX_BODY: usize = 64 * 1024;

/// The one client every probe uses: no proxy (proxy variables must not
/// reroute engine traffic), no redirects, Nagle off, and idle connections
/// kept beyond one interval so the next round reuses them.
pub fn http_client(interval: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout((interval * 3).max(Duration::from_secs(90)))
        .user_agent(concat!(
            "rtmanager-healthz-prober/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// `GET url` within `timeout`, classified. The bare HTTP part of a probe.
pub async fn http_probe(client: &reqwest::Client, url: &str, timeout: Duration) -> ProbeResult {
    let response = match client.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => {
            return ProbeResult::Unhealthy {
                status: 0,
                error: describe(&e, timeout),
            }
        }
    };
    let status = response.status().as_u16();
    let mut response = response;
    let mut read = 0usize;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return ProbeResult::Unhealthy {
                    status,
                    error: describe(&e, timeout),
                }
            }
        }
    }
    if (200..300).contains(&status) {
        ProbeResult::Healthy { status }
    } else {
        ProbeResult::Unhealthy {
            status,
            error: format!("status {status}"),
        }
    }
}

/// An operator-readable `last_error`: short, stable wording for the common
/// cases, the innermost cause otherwise.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timeout after {}", humantime::format_duration(timeout));
    }
    let mut innermost: &dyn std::error::Error = err;
    let mut chain = String::new();
    let mut io_kind = None;
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        chain.push_str(&e.to_string());
        chain.push('\n');
        innermost = e;
        source = e.source();
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::ConnectionRefused) => return "connection refused".into(),
        Some(K::ConnectionReset) => return "connection reset".into(),
        Some(K::ConnectionAborted) => return "connection aborted".into(),
        Some(K::TimedOut) => {
            return format!("timeout after {}", humantime::format_duration(timeout))
        }
        _ => {}
    }
    if chain.contains("dns error") {
        return format!("dns lookup failed: {innermost}");
    }
    if err.is_connect() {
        return format!("connection failed: {innermost}");
    }
    format!("request failed: {innermost}")
}

// ---------------------------------------------------------------------------
// Streak state (Redis)
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Targets and verdicts
// ---------------------------------------------------------------------------

/// What the prober needs of a running record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub game_id: GameId,
    pub container_id: String,
    pub engine_endpoint: String,
    pub docker_network: String,
    pub started_at: Option<DateTime<Utc>>,
}

impl Target {
    /// `None` for a record that is not running or has no container.
    pub fn from_record(record: &RuntimeRecord) -> Option<Self> {
        if record.status != RuntimeStatus::Running {
            return None;
        }
        Some(Self {
            game_id: record.game_id.clone(),
            container_id: record.current_container_id.clone()?,
            engine_endpoint: record.engine_endpoint.clone(),
            docker_network: record.docker_network.clone(),
            started_at: record.started_at,
        })
    }

    /// The port of the stored endpoint (`http://host:port`), else 8080.
    fn endpoint_port(&self) -> u16 {
        self.engine_endpoint
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8080)
    }
}

/// Why a slot passed without an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Younger than `RTMANAGER_PROBE_INITIAL_GRACE`.
    Grace,
    /// The game's lease is held: an operation is running.
    Leased,
    /// `container_ip` mode and Docker is away: not the engine's failure.
    EngineUnavailable,
    /// The streak could not be read or written.
    RedisUnavailable,
    /// The prober is stopping, or the target was dropped.
    Cancelled,
}

/// What one slot of one game came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    NotProbed(Skip),
    Healthy,
    /// A failure below the threshold, or during an already reported streak.
    Failing {
        consecutive_failures: i64,
    },
    /// `probe_failed` was published.
    Failed {
        consecutive_failures: i64,
    },
    /// `probe_recovered` was published.
    Recovered {
        prior_failure_count: i64,
    },
    /// This slot was already observed (an overlapping prober, a restart).
    Duplicate,
    /// A failure not counted: meanwhile the record stopped, got another
    /// container, or an operation took the lease.
    Discarded,
}

/// Per-target memory of a prober task (the `container_ip` address cache).
#[derive(Debug, Default)]
pub struct TargetState {
    /// `(container_id, url)` of the last inspect.
    cached_url: Option<(String, String)>,
}

// ---------------------------------------------------------------------------
// The prober
// ---------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    #[error("probe HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Probes the running games of one shard until shut down. Cheap to clone.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProberSettings,
    db: Database,
    redis: RedisClient,
    engine: Arc<dyn ContainerEngine>,
    outbox: Outbox,
    leases: LeaseStore,
    http: reqwest::Client,
    permits: Semaphore,
    /// How long a game's streak outlives its last observation.
    streak_ttl: Duration,
}

/// A running target task: its latest record and its stop switch.
struct TaskHandle {
    target: watch::Sender<Target>,
    stop: CancellationToken,
}

impl Prober {
    pub fn new(
        settings: ProberSettings,
        db: Database,
        redis: RedisClient,
        engine: Arc<dyn ContainerEngine>,
        outbox: Outbox,
    ) -> Result<Self, ProberError> {
        let http = http_client(settings.interval)?;
        let streak_ttl = (settings.interval * 100).max(Duration::from_secs(24 * 3600));
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Semaphore::new(settings.concurrency.max(1)),
                leases: LeaseStore::new(redis.clone(), Duration::from_secs(60)),
                settings,
                db,
                redis,
                engine,
                outbox,
                http,
                streak_ttl,
            }),
        })
    }

    pub fn settings(&self) -> &ProberSettings {
        &self.inner.settings
    }

    /// This shard's probe targets, from the running records.
    pub async fn targets(&self) -> Result<Vec<Target>, shared::adapters::postgres::StoreError> {
        let records = self
            .inner
            .db
            .list_records(Some(RuntimeStatus::Running))
            .await?;
        Ok(records
            .iter()
            .filter(|r| self.inner.settings.owns(&r.game_id))
            .filter_map(Target::from_record)
            .collect())
    }

    /// Refreshes the targets every refresh interval and keeps one task per
    /// target until `shutdown`; then lets in-flight probes finish (bounded).
    pub async fn run(&self, shutdown: CancellationToken) {
        let settings = &self.inner.settings;
        tracing::info!(
            shard_index = settings.shard_index,
            shard_count = settings.shard_count,
            interval_ms = settings.interval.as_millis() as u64,
            address_mode = ?settings.address_mode,
            "healthz prober started"
        );
        let mut tasks: HashMap<GameId, TaskHandle> = HashMap::new();
        let mut joins = JoinSet::new();
        loop {
            match self.targets().await {
                Ok(targets) => self.reconcile(&mut tasks, &mut joins, targets),
                Err(e) => {
                    tracing::warn!(error = %e, targets = tasks.len(), "probe target refresh failed; keeping the current targets")
                }
            }
            while joins.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(settings.refresh_interval) => {}
            }
        }
        for task in tasks.values() {
            task.stop.cancel();
        }
        let drain = async { while joins.join_next().await.is_some() {} };
        if tokio::time::timeout(settings.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!("probes still running at the shutdown timeout; abandoning them");
            joins.abort_all();
        }
        tracing::info!("healthz prober stopped");
    }

    fn reconcile(
        &self,
        tasks: &mut HashMap<GameId, TaskHandle>,
        joins: &mut JoinSet<()>,
        targets: Vec<Target>,
    ) {
        let mut wanted: HashMap<GameId, Target> = targets
            .into_iter()
            .map(|t| (t.game_id.clone(), t))
            .collect();
        tasks.retain(|game, task| match wanted.remove(game) {
            Some(target) => {
                task.target.send_if_modified(|current| {
                    let changed = *current != target;
                    *current = target;
                    changed
                });
                true
            }
            None => {
                tracing::debug!(game_id = %game, "no longer a probe target");
                task.stop.cancel();
                false
            }
        });
        for (game, target) in wanted {
            let (tx, rx) = watch::channel(target);
            let stop = CancellationToken::new();
            joins.spawn(self.clone().target_loop(rx, stop.clone()));
            tasks.insert(game, TaskHandle { target: tx, stop });
        }
    }

    /// One game's probes, at its slots, until `stop`.
    async fn target_loop(self, target: watch::Receiver<Target>, stop: CancellationToken) {
        let game_id = target.borrow().game_id.clone();
        let offset = slot_offset(&game_id, self.inner.settings.interval);
        let mut state = TargetState::default();
        let mut last_slot = 0;
        loop {
            let mut slot = next_slot(now_ms(), self.inner.settings.interval, offset);
            if slot <= last_slot {
                // Woke early (clock step): wait for the next slot instead.
                slot = last_slot + interval_ms(self.inner.settings.interval);
            }
            let wait = Duration::from_millis(slot.saturating_sub(now_ms()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            last_slot = slot;
            let current = target.borrow().clone();
            let verdict = self.probe(&current, slot, &mut state, &stop).await;
            tracing::trace!(game_id = %game_id, slot, ?verdict, "probe");
        }
    }

    /// Probes one target once, as slot `slot` (its time in ms since the epoch;
    /// any increasing numbers do), and applies the result:
    /// the whole machinery of one slot (grace, lease, permit, address, HTTP,
    /// streak, event). Public for the benchmark.
    pub async fn probe(
        &self,
        target: &Target,
        slot: u64,
        state: &mut TargetState,
        stop: &CancellationToken,
    ) -> Verdict {
        let inner = &self.inner;
        if let Some(started_at) = target.started_at {
            let age = Utc::now().signed_duration_since(started_at);
            if age.to_std().unwrap_or_default() < inner.settings.initial_grace {
                return Verdict::NotProbed(Skip::Grace);
            }
        }
        match inner.leases.is_held(&target.game_id).await {
            Ok(false) => {}
            Ok(true) => return Verdict::NotProbed(Skip::Leased),
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "lease check failed; probe skipped");
                return Verdict::NotProbed(Skip::RedisUnavailable);
            }
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return Verdict::NotProbed(Skip::Cancelled),
            result = self.exchange(target, state) => result,
        };
        let result = match result {
            Some(result) => result,
            None => return Verdict::NotProbed(Skip::EngineUnavailable),
        };
        if !result.is_healthy() {
            state.cached_url = None;
            if !self.still_current(target).await {
                return Verdict::Discarded;
            }
        }
        self.observe(target, slot, result, stop).await
    }

    /// Permit, address, HTTP. `None` when Docker is away (`container_ip`).
    async fn exchange(&self, target: &Target, state: &mut TargetState) -> Option<ProbeResult> {
        let inner = &self.inner;
        let _permit = inner
            .permits
            .acquire()
            .await
            .expect("probe semaphore closed");
        let url = match inner.settings.address_mode {
            AddressMode::Hostname => {
                format!("{}/healthz", target.engine_endpoint.trim_end_matches('/'))
            }
            AddressMode::ContainerIp => match self.container_url(target, state).await {
                Ok(url) => url,
                Err(Ok(unhealthy)) => return Some(unhealthy),
                Err(Err(e)) => {
                    tracing::warn!(game_id = %target.game_id, error = %e, "container inspect failed; probe skipped");
                    return None;
                }
            },
        };
        Some(http_probe(&inner.http, &url, inner.settings.timeout).await)
    }

    /// `http://{ip}:{port}/healthz` of the target's container on its network,
    /// cached per container. `Err(Ok(_))`: the engine is not there (counts as
    /// a failure); `Err(Err(_))`: Docker could not answer.
    async fn container_url(
        &self,
        target: &Target,
        state: &mut TargetState,
    ) -> Result<String, Result<ProbeResult, EngineError>> {
        if let Some((container, url)) = &state.cached_url {
            if *container == target.container_id {
                return Ok(url.clone());
            }
        }
        let short = &target.container_id[..target.container_id.len().min(12)];
        let unhealthy = |error: String| Err(Ok(ProbeResult::Unhealthy { status: 0, error }));
        let inspect = tokio::time::timeout(
            self.inner.settings.timeout.max(Duration::from_secs(2)),
            self.inner.engine.inspect_container(&target.container_id),
        )
        .await;
        let info = match inspect {
            Err(_) => return Err(Err(EngineError::Unavailable("inspect timed out".into()))),
            Ok(Err(EngineError::NotFound(_))) | Ok(Ok(None)) => {
                return unhealthy(format!("container {short} not found"))
            }
            Ok(Err(e)) => return Err(Err(e)),
            Ok(Ok(Some(info))) => info,
        };
        let Some(ip) = info.addresses.get(&target.docker_network) else {
            return unhealthy(format!(
                "container {short} has no address on network {} (state {})",
                target.docker_network, info.state
            ));
        };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        let url = format!("http://{host}:{}/healthz", target.endpoint_port());
        state.cached_url = Some((target.container_id.clone(), url.clone()));
        Ok(url)
    }

    /// Whether the record is still running the probed container (a failure
    /// right after a stop is not the engine's). PostgreSQL away: assume yes.
    async fn still_current(&self, target: &Target) -> bool {
        match self.inner.db.get_record(&target.game_id).await {
            Ok(Some(record)) => {
                record.status == RuntimeStatus::Running
                    && record.current_container_id.as_deref() == Some(&target.container_id)
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "record re-check failed; counting the failure");
                true
            }
        }
    }

    /// Applies the result to the streak and publishes a transition.
    async fn observe(
        &self,
        target: &Target,
        slot: u64,
        result: ProbeResult,
        stop: &CancellationToken,
    ) -> Verdict {
        let inner = &self.inner;
        let observed = inner
            .redis
            .observe_streak(
                &target.game_id,
                &target.container_id,
                result.is_healthy(),
                inner.settings.threshold,
                slot,
                inner.streak_ttl,
            )
            .await;
        let (verdict, pre) = match observed {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "probe streak update failed; observation lost");
                return Verdict::NotProbed(Skip::RedisUnavailable);
            }
        };
        let at_ms = Utc::now().timestamp_millis();
        let (game, container) = (&target.game_id, target.container_id.as_str());
        let event = match (verdict, &result) {
            (StreakVerdict::Healthy, _) => return Verdict::Healthy,
            (
                StreakVerdict::Counted {
                    consecutive_failures,
                },
                _,
            ) => {
                return Verdict::Failing {
                    consecutive_failures,
                }
            }
            (StreakVerdict::Duplicate, _) => return Verdict::Duplicate,
            (StreakVerdict::Skipped, _) => return Verdict::Discarded,
            (
                StreakVerdict::Recovered {
                    prior_failure_count,
                },
                _,
            ) => HealthEvent::probe_recovered(game, container, at_ms, prior_failure_count),
            (
                StreakVerdict::Failed {
                    consecutive_failures,
                },
                ProbeResult::Unhealthy { status, error },
            ) => HealthEvent::probe_failed(
                game,
                container,
                at_ms,
                consecutive_failures,
                i64::from(*status),
                error,
            ),
            (StreakVerdict::Failed { .. }, _) => {
                tracing::error!(game_id = %target.game_id, "probe streak failed on a healthy probe");
                return Verdict::Discarded;
            }
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            match inner.outbox.publish(&[inner.outbox.health(&event)]).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(game_id = %target.game_id, error = %e, "probe event not committed; retrying");
                }
            }
            let stopped = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(backoff) => false,
            };
            if stopped {
                // Give the transition back, so it is decided again later.
                let undone = inner.redis.undo_streak(game, slot, &pre).await;
                tracing::warn!(game_id = %target.game_id, undone = ?undone, "stopping before the probe event was committed; streak transition given back");
                return Verdict::NotProbed(Skip::Cancelled);
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        match event.details {
            HealthDetails::ProbeFailed {
                consecutive_failures,
                ref last_error,
                ..
            } => {
                tracing::info!(game_id = %target.game_id, consecutive_failures, last_error = %last_error, "probe_failed");
                Verdict::Failed {
                    consecutive_failures,
                }
            }
            HealthDetails::ProbeRecovered {
                prior_failure_count,
            } => {
                tracing::info!(game_id = %target.game_id, prior_failure_count, "probe_recovered");
                Verdict::Recovered {
                    prior_failure_count,
                }
            }
            _ => Verdict::Discarded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(id: &str) -> GameId {
        GameId::parse(id).unwrap()
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_assignment_is_pinned() {
        // Changing any of these reshuffles every game between probers.
        let pinned: Vec<u32> = ["g1", "game-42", "abc_DEF-9", "Z"]
            .iter()
            .map(|id| shard_of(&game(id), 7))
            .collect();
        assert_eq!(pinned, PINNED_SHARDS);
        assert_eq!(shard_of(&game("anything"), 1), 0);
    }

    const PINNED_SHARDS: [u32; 4] = [0, 6, 5, 0];

    #[test]
    fn slot_offsets_are_pinned_spread_and_within_the_interval() {
        let interval = Duration::from_secs(15);
        assert_eq!(slot_offset(&game("g1"), interval), PINNED_OFFSET_G1);
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let offset = slot_offset(&game(&format!("game-{i}")), interval);
            assert!(offset < 15_000);
            buckets[(offset / 1_500) as usize] += 1;
        }
        // Evenly spread: each tenth of the interval holds about 1000 games.
        assert!(
            buckets.iter().all(|b| (850..1150).contains(b)),
            "{buckets:?}"
        );
    }

    const PINNED_OFFSET_G1: u64 = 12_330;

    #[test]
    fn slots_are_aligned_to_the_wall_clock() {
        let interval = Duration::from_millis(1000);
        assert_eq!(next_slot(10_250, interval, 300), 10_300);
        assert_eq!(next_slot(10_300, interval, 300), 11_300);
        assert_eq!(next_slot(10_299, interval, 300), 10_300);
    }

    #[test]
    fn the_endpoint_port_is_kept_in_container_ip_mode() {
        let target = |endpoint: &str| Target {
            game_id: game("g"),
            container_id: "c".into(),
            engine_endpoint: endpoint.into(),
            docker_network: "n".into(),
            started_at: None,
        };
        assert_eq!(target("http://galaxy-game-g:8080").endpoint_port(), 8080);
        assert_eq!(target("http://galaxy-game-g:9000/").endpoint_port(), 9000);
        assert_eq!(target("http://galaxy-game-g").endpoint_port(), 8080);
    }

    async fn serve_once(reply: &'static [u8], delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(delay).await;
            let _ = s.write_all(reply).await;
        });
        format!("http://{addr}/healthz")
    }

    #[tokio::test]
    async fn failures_are_described_for_operators() {
        let client = http_client(Duration::from_secs(1)).unwrap();
        let timeout = Duration::from_millis(300);

        let url = serve_once(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            http_probe(&client, &url, timeout).await,
            ProbeResult::Unhealthy {
                status: 500,
                error: "status 500".into()
            }
        );

        let url = serve_once(b"", Duration::from_secs(5)).await;
        assert_eq!(
            http_probe(&client, &url, timeout).await,
            ProbeResult::Unhealthy {
                status: 0,
                error: "timeout after 300ms".into()
            }
        );

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert_eq!(
            http_probe(&client, &format!("http://{addr}/healthz"), timeout).await,
            ProbeResult::Unhealthy {
                status: 0,
                error: "connection refused".into()
            }
        );

        let url = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            http_probe(&client, &url, timeout).await,
            ProbeResult::Healthy { status: 200 }
        );
    }
}
