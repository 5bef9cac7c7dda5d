//! The Docker events listener's resume point: the daemon time (ns) of the
//! last event it handled, per (deployment, daemon).

use std::time::Duration;

use super::{RedisClient, RedisError};

/// Forgotten after a month without events (a deployment that went away).
const CURSOR_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl RedisClient {
    pub async fn read_cursor(&self, key: &str) -> Result<Option<i64>, RedisError> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.manager())
            .await?;
        Ok(raw.and_then(|r| r.parse().ok()))
    }

    /// Plain `SET`: only the lease holder writes, and a cursor that goes back
    /// (a holder that just lost its lease) only makes events be handled again,
    /// which publishes nothing new.
    pub async fn write_cursor(&self, key: &str, time_nano: i64) -> Result<(), RedisError> {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(time_nano)
            .arg("EX")
            .arg(CURSOR_TTL.as_secs())
            .query_async(&mut self.manager())
            .await?;
        Ok(())
    }
}
