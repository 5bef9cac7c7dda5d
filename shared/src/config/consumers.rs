//! The job consumers' sections: start-job's and stop-job's streams and
//! consumer groups.

use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, Env, Section};

/// One job stream and its consumer group (start-job or stop-job).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The job stream; dead letters go to `<stream>:dead`.
    pub stream: String,
    pub group: String,
    /// Where the group starts when it is created: `0`, `$` or an entry id.
    pub group_start_id: String,
    /// Entries one process works on at once.
    pub concurrency: usize,
    /// An entry pending this long with a consumer is reclaimed by another.
    pub reclaim_idle: Duration,
    /// `XREADGROUP BLOCK` time.
    pub block: Duration,
    /// Consumers idle this long with nothing pending leave the group.
    pub idle_remove_after: Duration,
}

/// `RTMANAGER_START_JOBS_*` and the consumers' shared settings.
#[derive(Deserialize)]
pub struct StartJobsEnv {
    #[serde(default = "d::start_jobs_stream")]
    start_jobs_stream: String,
    #[serde(default = "d::start_jobs_group")]
    start_jobs_group: String,
    #[serde(default = "d::group_start_id")]
    start_jobs_group_start_id: String,
    #[serde(default = "d::jobs_concurrency")]
    start_jobs_concurrency: usize,
    #[serde(default = "d::job_reclaim_idle", with = "humantime_serde")]
    job_reclaim_idle: Duration,
    #[serde(default = "d::stream_block", with = "humantime_serde")]
    stream_block: Duration,
    #[serde(default = "d::consumer_idle_remove_after", with = "humantime_serde")]
    consumer_idle_remove_after: Duration,
}

/// `RTMANAGER_STOP_JOBS_*` and the consumers' shared settings.
#[derive(Deserialize)]
pub struct StopJobsEnv {
    #[serde(default = "d::stop_jobs_stream")]
    stop_jobs_stream: String,
    #[serde(default = "d::stop_jobs_group")]
    stop_jobs_group: String,
    #[serde(default = "d::group_start_id")]
    stop_jobs_group_start_id: String,
    #[serde(default = "d::jobs_concurrency")]
    stop_jobs_concurrency: usize,
    #[serde(default = "d::job_reclaim_idle", with = "humantime_serde")]
    job_reclaim_idle: Duration,
    #[serde(default = "d::stream_block", with = "humantime_serde")]
    stream_block: Duration,
    #[serde(default = "d::consumer_idle_remove_after", with = "humantime_serde")]
    consumer_idle_remove_after: Duration,
}

/// The start-jobs consumer (a newtype, so each stream has its own section).
#[derive(Debug, Clone)]
pub struct StartJobsConfig(pub ConsumerConfig);

/// The stop-jobs consumer.
#[derive(Debug, Clone)]
pub struct StopJobsConfig(pub ConsumerConfig);

impl ConsumerConfig {
    #[allow(clippy::too_many_arguments)] // one per variable of the section
    fn checked(
        prefix: &str,
        stream: String,
        group: String,
        group_start_id: String,
        concurrency: usize,
        reclaim_idle: Duration,
        block: Duration,
        idle_remove_after: Duration,
    ) -> Result<Self, ConfigError> {
        if stream.is_empty() {
            return Err(ConfigError::var(
                &format!("{prefix}_STREAM"),
                "must not be empty",
            ));
        }
        if group.is_empty() {
            return Err(ConfigError::var(
                &format!("{prefix}_GROUP"),
                "must not be empty",
            ));
        }
        ranges::check(&[
            (&format!("{prefix}_CONCURRENCY"), concurrency.into()),
            ("JOB_RECLAIM_IDLE", reclaim_idle.into()),
            ("STREAM_BLOCK", block.into()),
            ("CONSUMER_IDLE_REMOVE_AFTER", idle_remove_after.into()),
        ])?;
        Ok(Self {
            stream,
            group,
            group_start_id,
            concurrency,
            reclaim_idle,
            block,
            idle_remove_after,
        })
    }

    pub fn start_jobs(env: &Env) -> Result<Self, ConfigError> {
        env.section::<StartJobsConfig>().map(|c| c.0)
    }

    pub fn stop_jobs(env: &Env) -> Result<Self, ConfigError> {
        env.section::<StopJobsConfig>().map(|c| c.0)
    }
}

impl Section for StartJobsConfig {
    type Raw = StartJobsEnv;
    fn from_raw(raw: StartJobsEnv) -> Result<Self, ConfigError> {
        ConsumerConfig::checked(
            "START_JOBS",
            raw.start_jobs_stream,
            raw.start_jobs_group,
            raw.start_jobs_group_start_id,
            raw.start_jobs_concurrency,
            raw.job_reclaim_idle,
            raw.stream_block,
            raw.consumer_idle_remove_after,
        )
        .map(Self)
    }
}

impl Section for StopJobsConfig {
    type Raw = StopJobsEnv;
    fn from_raw(raw: StopJobsEnv) -> Result<Self, ConfigError> {
        ConsumerConfig::checked(
            "STOP_JOBS",
            raw.stop_jobs_stream,
            raw.stop_jobs_group,
            raw.stop_jobs_group_start_id,
            raw.stop_jobs_concurrency,
            raw.job_reclaim_idle,
            raw.stream_block,
            raw.consumer_idle_remove_after,
        )
        .map(Self)
    }
}

mod d {
    use std::time::Duration;

    pub fn start_jobs_stream() -> String {
        "runtime:start_jobs".into()
    }
    pub fn stop_jobs_stream() -> String {
        "runtime:stop_jobs".into()
    }
    pub fn start_jobs_group() -> String {
        "rtmanager-start-jobs".into()
    }
    pub fn stop_jobs_group() -> String {
        "rtmanager-stop-jobs".into()
    }
    pub fn group_start_id() -> String {
        "0".into()
    }
    pub fn jobs_concurrency() -> usize {
        4
    }
    pub fn job_reclaim_idle() -> Duration {
        Duration::from_secs(60)
    }
    pub fn consumer_idle_remove_after() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn stream_block() -> Duration {
        Duration::from_secs(2)
    }
}
