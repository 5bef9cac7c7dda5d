//! The per-game lease `rtmanager:game_lease:{base64url(game_id)}` (and the
//! same lease on any key, e.g. one `docker-events` per Docker host).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use redis::Script;

use super::{RedisClient, RedisError};
use crate::domain::GameId;

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
    let mut last_renewed = tokio::time::Instant::now();
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
            Ok(1) => last_renewed = tokio::time::Instant::now(),
            Ok(_) => {
                tracing::warn!(lease = %key, "lease lost: another holder or expired");
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            // Redis away: keep trying while the TTL still protects the game;
            // past it, the lease has expired wherever Redis is.
            Err(e) if last_renewed.elapsed() >= ttl => {
                tracing::warn!(lease = %key, error = %e, "lease lost: not renewed within its TTL");
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
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
