//! Redis adapter: the only code that speaks the `redis` crate.
//!
//! - [`RedisClient`]: connections. Two kinds, because a blocking `XREADGROUP`
//!   stalls every other command on a multiplexed connection: a shared manager
//!   for quick commands and a dedicated reader whose response timeout exceeds
//!   its block time.
//! - [`leases`]: per-game (and per-host) leases.
//! - [`streams`]: the consumer-group commands of the job loop.
//! - [`delivery`]: the relay's exactly-once `XADD`.
//! - [`streaks`]: the prober's failure streaks.
//! - [`cursor`]: the Docker events listener's resume point.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};

use crate::config::Secret;
use crate::domain::ErrorCode;

pub mod cursor;
pub mod delivery;
pub mod leases;
pub mod streaks;
pub mod streams;

pub use leases::{lease_key, Lease, LeaseStore};
pub use streams::{entry_fields, ConsumerGroup, StreamEntry};

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

#[derive(Clone)]
pub struct RedisClient {
    client: Client,
    manager: ConnectionManager,
}

impl RedisClient {
    /// `addr` is `host:port` (as `RTMANAGER_REDIS_MASTER_ADDR`, `[v6]:port`
    /// for IPv6); the password may be empty.
    pub async fn connect(addr: &str, password: &Secret) -> Result<Self, RedisError> {
        let (host, port) = split_host_port(addr)
            .ok_or_else(|| RedisError::new(format!("bad address {addr:?}: expected host:port")))?;
        let mut settings = RedisConnectionInfo::default();
        if !password.expose().is_empty() {
            settings = settings.set_password(password.expose());
        }
        let info = ConnectionAddr::Tcp(host, port)
            .into_connection_info()
            .map_err(|e| RedisError::new(format!("bad address {addr}: {e}")))?
            .set_redis_settings(settings);
        let client =
            Client::open(info).map_err(|e| RedisError::new(format!("bad address {addr}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = client.get_connection_manager_with_config(config).await?;
        Ok(Self { client, manager })
    }

    /// The shared connection: for this adapter's modules, and for the system
    /// tests, which read and sabotage Redis directly.
    pub fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A dedicated connection for blocking reads of up to `block`.
    async fn blocking(&self, block: Duration) -> Result<MultiplexedConnection, RedisError> {
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

/// `host:port` or `[v6]:port`.
fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(split_host_port("redis:6379"), Some(("redis".into(), 6379)));
        assert_eq!(split_host_port("[::1]:6380"), Some(("::1".into(), 6380)));
        assert_eq!(split_host_port("redis"), None);
        assert_eq!(split_host_port(":6379"), None);
        assert_eq!(split_host_port("h:port"), None);
    }
}
