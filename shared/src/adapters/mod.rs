//! Adapters: the only modules that speak bollard, sqlx and redis.

pub mod docker;
pub mod postgres;
pub mod redis;
