//! Following the master through Redis Sentinel.
//!
//! [`MasterFollower`] asks the sentinels for the master's address
//! (`SENTINEL get-master-addr-by-name`), connects, and checks that the node
//! says `role:master` before any command goes to it: a node that was demoted
//! (or a stale sentinel) is never written to. The connection is dropped on
//! an error that says the master may have moved (see
//! [`super::connection::master_may_have_moved`]), and a watcher asks the
//! sentinels every [`WATCH_PERIOD`] and moves to a new master as soon as they
//! name one, so even an idle process follows a failover, and its log and
//! metrics say which master it uses.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisResult};
use redis::{ErrorKind, RedisConnectionInfo};
use tokio::sync::watch;

use super::connection::master_may_have_moved;
use super::{display_addr, RedisMaster, Topology, Transport, COMMAND_TIMEOUT};
use crate::config::{split_host_port, SentinelConfig};

/// How often the watcher asks the sentinels whether the master moved.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Bound on one search for the master (every sentinel, then the master).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct MasterFollower {
    sentinels: Vec<(String, u16)>,
    master_name: String,
    sentinel_settings: RedisConnectionInfo,
    node_settings: RedisConnectionInfo,
    /// TLS or not, to the sentinels and the master alike.
    transport: Transport,
    state: Mutex<State>,
    /// Held while the master is being searched for, so concurrent commands
    /// wait for one search instead of each starting their own; it also holds
    /// the connections to the sentinels.
    search: tokio::sync::Mutex<SentinelLinks>,
    master_tx: watch::Sender<Option<RedisMaster>>,
}

#[derive(Default)]
struct State {
    /// Moves on with every master connected to; a dedicated connection of
    /// an older generation is stale.
    generation: u64,
    current: Option<Master>,
}

#[derive(Clone)]
struct Master {
    addr: String,
    client: Client,
    conn: MultiplexedConnection,
}

/// One cached connection per sentinel, and which one answered last.
#[derive(Default)]
struct SentinelLinks {
    conns: Vec<Option<MultiplexedConnection>>,
    preferred: usize,
}

fn connection_config(response_timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
}

fn failure(what: String) -> redis::RedisError {
    redis::RedisError::from((ErrorKind::Io, "sentinel", what))
}

impl MasterFollower {
    /// Finds the master once (an error names what failed), then follows it.
    pub(super) async fn start(
        config: &SentinelConfig,
        node_settings: RedisConnectionInfo,
        transport: Transport,
        master_tx: watch::Sender<Option<RedisMaster>>,
    ) -> RedisResult<Arc<Self>> {
        let sentinels = config
            .addrs
            .iter()
            .filter_map(|a| split_host_port(a))
            .collect::<Vec<_>>();
        let mut sentinel_settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if !config.password.expose().is_empty() {
            sentinel_settings = sentinel_settings.set_password(config.password.expose());
        }
        let follower = Arc::new(Self {
            search: tokio::sync::Mutex::new(SentinelLinks {
                conns: vec![None; sentinels.len()],
                preferred: 0,
            }),
            sentinels,
            master_name: config.master.clone(),
            sentinel_settings,
            node_settings,
            transport,
            state: Mutex::default(),
            master_tx,
        });
        follower.connection().await?;
        tokio::spawn(watch(Arc::downgrade(&follower)));
        Ok(follower)
    }

    /// The connection to the current master, found first if there is none.
    pub(super) async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut links = self.search.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let master = tokio::time::timeout(RESOLVE_TIMEOUT, self.find_master(&mut links))
            .await
            .map_err(|_| {
                failure(format!(
                    "no master {:?} found within {RESOLVE_TIMEOUT:?}",
                    self.master_name
                ))
            })??;
        let mut state = self.state.lock().expect("sentinel state poisoned");
        state.generation += 1;
        state.current = Some(master.clone());
        let generation = state.generation;
        drop(state);
        let addr = master.addr.clone();
        self.master_tx.send_if_modified(|known| {
            let changed = known.as_ref().is_none_or(|k| k.addr != addr);
            if changed {
                *known = Some(RedisMaster {
                    topology: Topology::Sentinel,
                    addr,
                });
            }
            changed
        });
        Ok((generation, master.conn))
    }

    /// A new connection to the current master for blocking reads.
    pub(super) async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> RedisResult<(u64, MultiplexedConnection)> {
        self.connection().await?;
        let (generation, client) = {
            let state = self.state.lock().expect("sentinel state poisoned");
            match &state.current {
                Some(master) => (state.generation, master.client.clone()),
                None => return Err(failure("the master went away".into())),
            }
        };
        let conn = client
            .get_multiplexed_async_connection_with_config(&connection_config(response_timeout))
            .await?;
        Ok((generation, conn))
    }

    pub(super) fn is_generation(&self, generation: u64) -> bool {
        let state = self.state.lock().expect("sentinel state poisoned");
        state.generation == generation && state.current.is_some()
    }

    /// Drops the master of `generation` after an error that says it may
    /// have moved; the next command asks the sentinels again.
    pub(super) fn forget_if(&self, generation: u64, error: &redis::RedisError) {
        if master_may_have_moved(error) {
            self.forget(generation, error);
        }
    }

    fn forget(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut state = self.state.lock().expect("sentinel state poisoned");
        if state.generation == generation {
            if let Some(master) = state.current.take() {
                tracing::warn!(addr = %master.addr, error = %why, "redis master connection dropped; asking the sentinels");
            }
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let state = self.state.lock().expect("sentinel state poisoned");
        let master = state.current.as_ref()?;
        Some((state.generation, master.conn.clone()))
    }

    fn current_addr(&self) -> Option<(u64, String)> {
        let state = self.state.lock().expect("sentinel state poisoned");
        let master = state.current.as_ref()?;
        Some((state.generation, master.addr.clone()))
    }

    /// Asks the sentinels in turn (the last one that answered first) and
    /// connects to the first master named that says it is one.
    async fn find_master(&self, links: &mut SentinelLinks) -> RedisResult<Master> {
        let mut last_err = failure("no sentinel answered".into());
        let preferred = links.preferred;
        for i in (0..self.sentinels.len()).map(|i| (i + preferred) % self.sentinels.len()) {
            let addr = match self.ask(links, i).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    last_err = failure(format!(
                        "sentinel {}:{} does not know master {:?}",
                        self.sentinels[i].0, self.sentinels[i].1, self.master_name
                    ));
                    continue;
                }
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            match self.open_master(&addr).await {
                Ok(master) => {
                    links.preferred = i;
                    return Ok(master);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// The master's `host:port` according to sentinel `i`.
    async fn ask(&self, links: &mut SentinelLinks, i: usize) -> RedisResult<Option<(String, u16)>> {
        let conn = match &mut links.conns[i] {
            Some(conn) => conn,
            empty => {
                let (host, port) = self.sentinels[i].clone();
                let conn = self
                    .transport
                    .client(&host, port, &self.sentinel_settings)?
                    .get_multiplexed_async_connection_with_config(&connection_config(
                        COMMAND_TIMEOUT,
                    ))
                    .await?;
                empty.insert(conn)
            }
        };
        let reply: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(conn)
            .await;
        if reply.is_err() {
            links.conns[i] = None;
        }
        reply
    }

    /// Connects to `addr` and checks it is a master, not a replica.
    async fn open_master(&self, (host, port): &(String, u16)) -> RedisResult<Master> {
        let addr = display_addr(host, *port);
        let client: Client = self.transport.client(host, *port, &self.node_settings)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&connection_config(COMMAND_TIMEOUT))
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        if !info.lines().any(|l| l.trim() == "role:master") {
            return Err(failure(format!(
                "{addr}, named by the sentinels, is not a master (yet)"
            )));
        }
        Ok(Master { addr, client, conn })
    }

    /// One look at what the sentinels say now; moves to the master they
    /// name when it is not the one in use, or reconnects when there is none.
    async fn check(&self) {
        let named = {
            let Ok(mut links) = self.search.try_lock() else {
                return; // a search is under way
            };
            let preferred = links.preferred;
            let mut named = None;
            for i in (0..self.sentinels.len()).map(|i| (i + preferred) % self.sentinels.len()) {
                if let Ok(Some(addr)) = self.ask(&mut links, i).await {
                    named = Some(addr);
                    break;
                }
            }
            named
        };
        match (self.current_addr(), named) {
            (Some((generation, in_use)), Some((host, port))) => {
                let named = display_addr(&host, port);
                if named != in_use {
                    self.forget(generation, &format!("the sentinels now name {named}"));
                    let _ = self.connection().await;
                } else {
                    // Still the master: make sure its connection is alive.
                    self.verify(generation).await;
                }
            }
            (None, _) => {
                if let Err(e) = self.connection().await {
                    tracing::debug!(error = %e, "redis master not found yet");
                }
            }
            (Some(_), None) => {}
        }
    }

    /// `PING`s the master in use, so a connection that died quietly is
    /// noticed by the watcher rather than by the next command.
    async fn verify(&self, generation: u64) {
        let Some((current, mut conn)) = self.current() else {
            return;
        };
        if current != generation {
            return;
        }
        if let Err(e) = conn.req_packed_command(&redis::cmd("PING")).await {
            self.forget_if(generation, &e);
        }
    }
}

/// Runs [`MasterFollower::check`] every [`WATCH_PERIOD`] while the follower
/// is in use.
async fn watch(follower: Weak<MasterFollower>) {
    loop {
        tokio::time::sleep(WATCH_PERIOD).await;
        let Some(follower) = follower.upgrade() else {
            return;
        };
        follower.check().await;
    }
}
