//! What rest-gateway reads: serving reads the common sections, the lifecycle
//! and state sections (it runs every operation) and its own; `sync-file-sd`
//! reads only the process, PostgreSQL and Redis sections (it needs no Docker).

use shared::config::{
    Config, ConfigError, Env, GatewayConfig, LifecycleConfig, PostgresConfig, ProcessConfig,
    RedisConfig, StateConfig,
};

shared::job_config! {
    /// Serving: everything a lifecycle operation needs, and the gateway's own.
    pub struct RestGatewayConfig {
        job = "rest-gateway";
        lifecycle: LifecycleConfig = lifecycle,
        state: StateConfig = state,
        gateway: GatewayConfig = gateway,
    }
}

/// `rest-gateway sync-file-sd`.
#[derive(Debug, Clone)]
pub struct SyncFileSdConfig {
    pub process: ProcessConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
}

impl SyncFileSdConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            process: env.section()?,
            postgres: env.section()?,
            redis: env.section()?,
        })
    }
}

impl From<&Config> for SyncFileSdConfig {
    fn from(all: &Config) -> Self {
        Self {
            process: all.common.process.clone(),
            postgres: all.common.postgres.clone(),
            redis: all.common.redis.clone(),
        }
    }
}
