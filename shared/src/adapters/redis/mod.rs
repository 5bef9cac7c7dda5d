//! Redis adapter: the only code that speaks the `redis` crate.
//!
//! - [`RedisClient`]: connections, to a single master, to the master the
//!   sentinels name, or to a Cluster ([`connection`]; the choice is made once,
//!   from [`RedisConfig`]). Two kinds, because a blocking `XREADGROUP` stalls
//!   every other command on a multiplexed connection: a shared connection for
//!   quick commands and a dedicated reader whose response timeout exceeds its
//!   block time.
//! - `sentinel`: following the master through a failover.
//! - [`slots`]: keys of our own that share a stream's or a lease's Cluster
//!   slot, so every script touches one slot.
//! - [`leases`]: per-game (and per-host) leases.
//! - [`streams`]: the consumer-group commands of the job loop.
//! - [`delivery`]: the relay's exactly-once `XADD`.
//! - [`streaks`]: the prober's failure streaks.
//! - [`cursor`]: the Docker events listener's resume point.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisConnectionInfo, TlsCertificates,
};
use tokio::sync::watch;

use crate::config::{split_host_port, RedisConfig, RedisTls, Secret};
use crate::domain::ErrorCode;

pub mod connection;
pub mod cursor;
pub mod delivery;
pub mod leases;
mod sentinel;
pub mod slots;
pub mod streaks;
pub mod streams;

pub use connection::RedisConnection;
pub use leases::{lease_key, Lease, LeaseStore};
pub use streams::{entry_fields, ConsumerGroup, GroupStatus, StreamEntry};

use connection::Route;
use sentinel::MasterFollower;

#[derive(Debug, Clone, thiserror::Error)]
#[error("redis unavailable: {message}")]
pub struct RedisError {
    message: String,
    no_group: bool,
}

impl RedisError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            no_group: false,
        }
    }

    pub fn code(&self) -> ErrorCode {
        ErrorCode::ServiceUnavailable
    }

    /// Redis answered `NOGROUP`: the consumer group (or its stream) is gone,
    /// as after a `FLUSHALL` or a failover to a replica that never had it.
    /// Retrying does not help; the group has to be created again.
    pub fn is_no_group(&self) -> bool {
        self.no_group
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        Self {
            no_group: e.code() == Some("NOGROUP"),
            message: e.to_string(),
        }
    }
}

/// How long a quick command may take before it counts as Redis being away.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// How the processes reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One master at `RTMANAGER_REDIS_MASTER_ADDR`.
    Single,
    /// The master the sentinels name (`RTMANAGER_REDIS_SENTINEL_*`).
    Sentinel,
    /// A Cluster; `RTMANAGER_REDIS_MASTER_ADDR` is one of its nodes.
    Cluster,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// The master a process uses now: its `host:port` (for a Cluster, the node
/// it was pointed at; the client finds the other masters from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisMaster {
    pub topology: Topology,
    pub addr: String,
}

#[derive(Clone)]
pub struct RedisClient {
    conn: RedisConnection,
    dedicated: Dedicated,
    master: watch::Receiver<Option<RedisMaster>>,
    /// Keeps the master channel open while any clone is alive.
    _master_tx: Arc<watch::Sender<Option<RedisMaster>>>,
}

/// How a dedicated (blocking) connection is opened.
#[derive(Clone)]
enum Dedicated {
    Single(Client),
    Followed(Arc<MasterFollower>),
    Cluster(ClusterSeed),
}

/// What a dedicated Cluster connection is built from.
#[derive(Clone)]
struct ClusterSeed {
    seed: ConnectionInfo,
    settings: RedisConnectionInfo,
    transport: Transport,
}

/// How every connection to a Redis server (data node or sentinel) is made:
/// plain TCP, or TLS (`rediss`) trusting the configured CA, else the Mozilla
/// roots compiled in (webpki-roots: the scratch image has no system store).
/// The server's name is always checked against its certificate.
#[derive(Clone, Default)]
pub(super) enum Transport {
    #[default]
    Plain,
    Tls {
        ca_pem: Option<Arc<Vec<u8>>>,
    },
}

impl Transport {
    fn from_config(tls: Option<&RedisTls>) -> Self {
        match tls {
            None => Self::Plain,
            Some(tls) => {
                // rustls needs a process-wide provider; ring is the only one
                // compiled in. An error means one is installed already.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Self::Tls {
                    ca_pem: tls.ca_pem.clone().map(Arc::new),
                }
            }
        }
    }

    fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        match self {
            Self::Plain => ConnectionAddr::Tcp(host.to_owned(), port),
            Self::Tls { .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            },
        }
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        match self {
            Self::Tls {
                ca_pem: Some(pem), ..
            } => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            }),
            _ => None,
        }
    }

    /// A client for the server at `host:port`, authenticating with `settings`.
    pub(super) fn client(
        &self,
        host: &str,
        port: u16,
        settings: &RedisConnectionInfo,
    ) -> Result<Client, redis::RedisError> {
        let info = self
            .addr(host, port)
            .into_connection_info()?
            .set_redis_settings(settings.clone());
        match self.certificates() {
            Some(certs) => Client::build_with_tls(info, certs),
            None => Client::open(info),
        }
    }
}

impl RedisClient {
    /// `addr` is `host:port` (as `RTMANAGER_REDIS_MASTER_ADDR`, `[v6]:port`
    /// for IPv6); the password may be empty. A Cluster node is recognised.
    pub async fn connect(addr: &str, password: &Secret) -> Result<Self, RedisError> {
        let (host, port) = split_host_port(addr)
            .ok_or_else(|| RedisError::new(format!("bad address {addr:?}: expected host:port")))?;
        let settings = node_settings(&Secret::default(), password);
        Self::connect_addr(&host, port, settings, Transport::Plain).await
    }

    /// Connects as the settings say: through the sentinels when they are
    /// set, else to the master address (a Cluster when that node is one).
    pub async fn open(config: &RedisConfig) -> Result<Self, RedisError> {
        let settings = node_settings(&config.username, &config.password);
        let transport = Transport::from_config(config.tls.as_ref());
        match &config.sentinel {
            Some(sentinel) => {
                let (tx, rx) = watch::channel(None);
                let tx = Arc::new(tx);
                let follower = MasterFollower::start(sentinel, settings, transport, (*tx).clone())
                    .await
                    .map_err(|e| {
                        RedisError::new(format!(
                            "no master {:?} through the sentinels {}: {e}",
                            sentinel.master,
                            sentinel.addrs.join(",")
                        ))
                    })?;
                Ok(Self {
                    conn: RedisConnection(Route::Followed(follower.clone())),
                    dedicated: Dedicated::Followed(follower),
                    master: rx,
                    _master_tx: tx,
                })
            }
            None => {
                let (host, port) = split_host_port(&config.addr).ok_or_else(|| {
                    RedisError::new(format!("bad address {:?}: expected host:port", config.addr))
                })?;
                Self::connect_addr(&host, port, settings, transport).await
            }
        }
    }

    async fn connect_addr(
        host: &str,
        port: u16,
        settings: RedisConnectionInfo,
        transport: Transport,
    ) -> Result<Self, RedisError> {
        let client = transport.client(host, port, &settings)?;
        let addr = display_addr(host, port);
        if is_cluster_node(&client).await? {
            let info = transport
                .addr(host, port)
                .into_connection_info()?
                .set_redis_settings(settings.clone());
            return Self::connect_cluster(addr, info, settings, transport).await;
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager: ConnectionManager = client.get_connection_manager_with_config(config).await?;
        let (tx, rx) = watch::channel(Some(RedisMaster {
            topology: Topology::Single,
            addr,
        }));
        Ok(Self {
            conn: RedisConnection(Route::Single(manager)),
            dedicated: Dedicated::Single(client),
            master: rx,
            _master_tx: Arc::new(tx),
        })
    }

    async fn connect_cluster(
        addr: String,
        seed: ConnectionInfo,
        settings: RedisConnectionInfo,
        transport: Transport,
    ) -> Result<Self, RedisError> {
        let parts = ClusterSeed {
            seed,
            settings,
            transport,
        };
        let conn = parts.connect(COMMAND_TIMEOUT).await?;
        let (tx, rx) = watch::channel(Some(RedisMaster {
            topology: Topology::Cluster,
            addr,
        }));
        Ok(Self {
            conn: RedisConnection(Route::Cluster(conn)),
            dedicated: Dedicated::Cluster(parts),
            master: rx,
            _master_tx: Arc::new(tx),
        })
    }

    /// The shared connection: for this adapter's modules, and for the system
    /// tests, which read and sabotage Redis directly.
    pub fn manager(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// The master in use, updated when it changes (a Sentinel failover).
    pub fn master(&self) -> watch::Receiver<Option<RedisMaster>> {
        self.master.clone()
    }

    /// How this client reaches Redis.
    pub fn topology(&self) -> Topology {
        match &self.dedicated {
            Dedicated::Single(_) => Topology::Single,
            Dedicated::Followed(_) => Topology::Sentinel,
            Dedicated::Cluster(_) => Topology::Cluster,
        }
    }

    /// On a Cluster, refuses the first of `streams` (variable, name) whose
    /// delivery marker cannot share its slot ([`slots::refuse_cluster_unsafe`]);
    /// any other topology takes every name.
    pub fn refuse_cluster_unsafe_streams<'a>(
        &self,
        streams: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), String> {
        match self.topology() {
            Topology::Cluster => slots::refuse_cluster_unsafe(streams),
            Topology::Single | Topology::Sentinel => Ok(()),
        }
    }

    /// A dedicated connection for blocking reads of up to `block`.
    async fn blocking(&self, block: Duration) -> Result<RedisConnection, RedisError> {
        let timeout = block + COMMAND_TIMEOUT;
        let route = match &self.dedicated {
            Dedicated::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(COMMAND_TIMEOUT));
                Route::SingleDedicated(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Dedicated::Followed(follower) => {
                let (generation, conn) = follower.dedicated(timeout).await?;
                Route::FollowedDedicated {
                    follower: follower.clone(),
                    generation,
                    conn,
                }
            }
            Dedicated::Cluster(parts) => Route::Cluster(parts.connect(timeout).await?),
        };
        Ok(RedisConnection(route))
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.manager();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

impl ClusterSeed {
    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<redis::cluster_async::ClusterConnection, RedisError> {
        let mut builder = ClusterClientBuilder::new(vec![self.seed.clone()])
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(response_timeout);
        if let Some(username) = self.settings.username() {
            builder = builder.username(username);
        }
        if let Some(password) = self.settings.password() {
            builder = builder.password(password);
        }
        if let Some(certs) = self.transport.certificates() {
            builder = builder.certs(certs);
        }
        Ok(builder.build()?.get_async_connection().await?)
    }
}

/// The user and password every data node is connected with (the sentinels
/// have their own). No `CLIENT SETINFO` on connecting: Redis 7.0 does not
/// know it, and an ACL rule allowing it would be refused there. (A Cluster
/// client builds its node connections itself and sends it anyway, ignoring
/// the answer; README "ACL users".)
fn node_settings(username: &Secret, password: &Secret) -> RedisConnectionInfo {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if !username.expose().is_empty() {
        settings = settings.set_username(username.expose());
    }
    if !password.expose().is_empty() {
        settings = settings.set_password(password.expose());
    }
    settings
}

/// `host:port`, bracketing an IPv6 host.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Whether the node at `client` runs in Cluster mode (`INFO cluster`).
async fn is_cluster_node(client: &Client) -> Result<bool, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_connection_timeout(Some(COMMAND_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}
