//! Redis adapter: connections, the per-game lease, stream helpers.
//!
//! Two kinds of connection, because a blocking `XREADGROUP` stalls every other
//! command on a multiplexed connection: [`RedisClient::manager`] for quick
//! commands (leases, acks, publishes) and [`RedisClient::blocking`] for a
//! dedicated reader whose response timeout exceeds its block time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script};

use crate::config::Secret;
use crate::domain::{ErrorCode, GameId};

#[derive(Debug, Clone, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct RedisError(pub String);

impl RedisError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::ServiceUnavailable
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// How long a quick command may take before it counts as Redis being away.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct RedisClient {
    client: Client,
    manager: ConnectionManager,
}

impl RedisClient {
    /// `addr` is `host:port` (as `RTMANAGER_REDIS_MASTER_ADDR`); the password
    /// may be empty.
    pub async fn connect(addr: &str, password: &Secret) -> Result<Self, RedisError> {
        let url = if password.expose().is_empty() {
            format!("redis://{addr}/")
        } else {
            // The password is percent-encoded into the URL only in memory.
            format!("redis://:{}@{addr}/", percent_encode(password.expose()))
        };
        let client =
            Client::open(url).map_err(|e| RedisError(format!("bad address {addr}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = client.get_connection_manager_with_config(config).await?;
        Ok(Self { client, manager })
    }

    pub fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A dedicated connection for blocking reads of up to `block`.
    pub async fn blocking(&self, block: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(block + COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.manager();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Turns a stream entry's values into strings; non-UTF-8 values are lossy.
pub fn entry_fields(map: &HashMap<String, redis::Value>) -> HashMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            let s = match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::SimpleString(s) => s.clone(),
                redis::Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (k.clone(), s)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Per-game lease
// ---------------------------------------------------------------------------

/// Compare-and-delete: Redis 7.0 has no built-in for it.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"#;

/// Compare-and-extend, so a long pull never loses the lease.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0"#;

/// Takes and releases `rtmanager:game_lease:{base64url(game_id)}`.
#[derive(Clone)]
pub struct LeaseStore {
    redis: RedisClient,
    ttl: Duration,
    /// Leases this process holds, released on shutdown even if their holder
    /// was cancelled before its guard could release them.
    held: Arc<Mutex<HashMap<String, String>>>,
}

/// A held lease. Renewed in the background until released or dropped; dropping
/// it releases it (compare-and-delete) on a detached task.
pub struct Lease {
    store: LeaseStore,
    key: String,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
    lost: Arc<std::sync::atomic::AtomicBool>,
    released: bool,
}

pub fn lease_key(game_id: &GameId) -> String {
    format!("rtmanager:game_lease:{}", game_id.key_segment())
}

impl LeaseStore {
    pub fn new(redis: RedisClient, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            held: Arc::default(),
        }
    }

    /// `Ok(None)` when another holder has it.
    pub async fn try_acquire(&self, game_id: &GameId) -> Result<Option<Lease>, RedisError> {
        self.try_acquire_key(lease_key(game_id)).await
    }

    /// The same lease on any key (e.g. one `docker-events` per Docker host).
    pub async fn try_acquire_key(&self, key: String) -> Result<Option<Lease>, RedisError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut conn = self.redis.manager();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if set.is_none() {
            return Ok(None);
        }
        self.held
            .lock()
            .expect("lease registry poisoned")
            .insert(key.clone(), token.clone());
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renewer = tokio::spawn(renew_loop(
            self.redis.clone(),
            key.clone(),
            token.clone(),
            self.ttl,
            lost.clone(),
        ));
        Ok(Some(Lease {
            store: self.clone(),
            key,
            token,
            renewer,
            lost,
            released: false,
        }))
    }

    /// Whether anyone holds the game's lease right now.
    pub async fn is_held(&self, game_id: &GameId) -> Result<bool, RedisError> {
        let mut conn = self.redis.manager();
        let exists: bool = redis::cmd("EXISTS")
            .arg(lease_key(game_id))
            .query_async(&mut conn)
            .await?;
        Ok(exists)
    }

    async fn release_key(&self, key: &str, token: &str) -> Result<(), RedisError> {
        let mut conn = self.redis.manager();
        let _: i64 = Script::new(RELEASE_LUA)
            .key(key)
            .arg(token)
            .invoke_async(&mut conn)
            .await?;
        self.held
            .lock()
            .expect("lease registry poisoned")
            .remove(key);
        Ok(())
    }

    /// Releases every lease this process still holds (graceful shutdown).
    pub async fn release_all(&self) {
        let held: Vec<_> = self
            .held
            .lock()
            .expect("lease registry poisoned")
            .drain()
            .collect();
        for (key, token) in held {
            if let Err(e) = self.release_key(&key, &token).await {
                tracing::warn!(lease = %key, error = %e, "lease release at shutdown failed");
            }
        }
    }
}

async fn renew_loop(
    redis: RedisClient,
    key: String,
    token: String,
    ttl: Duration,
    lost: Arc<std::sync::atomic::AtomicBool>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let mut conn = redis.manager();
        let renewed: Result<i64, _> = Script::new(RENEW_LUA)
            .key(&key)
            .arg(&token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(lease = %key, "lease lost: another holder or expired");
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            // Redis away: keep trying; the TTL still protects the game.
            Err(e) => tracing::warn!(lease = %key, error = %e, "lease renewal failed"),
        }
    }
}

impl Lease {
    /// True once a renewal found the lease gone: the holder must not commit.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Releases now; a token that no longer matches is not an error.
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        if let Err(e) = self.store.release_key(&self.key, &self.token).await {
            tracing::warn!(lease = %self.key, error = %e, "lease release failed; it expires with its TTL");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        // Cancelled holder: release on a detached task (bounded), so a dropped
        // request does not pin the lease for its whole TTL.
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), store.release_key(&key, &token))
                        .await;
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Intents: what rtmanager itself is about to do to a container
// ---------------------------------------------------------------------------

/// A stop or removal rtmanager starts itself, recorded *before* it acts, so
/// the health sources do not report it as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentKind {
    Stop,
    Removal,
}

impl IntentKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Removal => "removal",
        }
    }
}

/// How long an intent is remembered: far beyond a stop timeout.
const INTENT_TTL_SECS: u64 = 3600;

#[derive(Clone)]
pub struct IntentStore {
    redis: RedisClient,
}

pub fn intent_key(kind: IntentKind, container_id: &str) -> String {
    format!("rtmanager:intent:{}:{container_id}", kind.as_str())
}

impl IntentStore {
    pub fn new(redis: RedisClient) -> Self {
        Self { redis }
    }

    pub async fn record(&self, kind: IntentKind, container_id: &str) -> Result<(), RedisError> {
        let mut conn = self.redis.manager();
        let _: () = redis::cmd("SET")
            .arg(intent_key(kind, container_id))
            .arg(1)
            .arg("EX")
            .arg(INTENT_TTL_SECS)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn is_recorded(
        &self,
        kind: IntentKind,
        container_id: &str,
    ) -> Result<bool, RedisError> {
        let mut conn = self.redis.manager();
        Ok(redis::cmd("EXISTS")
            .arg(intent_key(kind, container_id))
            .query_async(&mut conn)
            .await?)
    }
}
