//! Intents: what rtmanager itself is about to do to a container.

use super::{RedisClient, RedisError};

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
