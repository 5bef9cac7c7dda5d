//! `rest-gateway sync-file-sd --out FILE`: the monitoring inventory for
//! Prometheus `file_sd_configs`, for hosts that sync a file instead of
//! calling the HTTP discovery endpoint.
//!
//! The file holds the same target groups as
//! `GET /api/v1/internal/monitoring/targets` (active games only). Every run
//! rewrites it whole, so targets of games that are gone disappear. The write
//! is atomic: a temporary file in the same directory, fsync, rename over the
//! old one, fsync of the directory. Prometheus never reads half a file.
//!
//! # When discovery fails
//! The run returns the error (the binary logs it and exits non-zero) and the
//! previous file is left as it was. Emptying it instead would tell Prometheus
//! that every game is gone, which is as misleading as a stale list and
//! louder in the wrong way (every target "deleted" at once). The failure is
//! not silent: the exit status is the signal for the sync job's alert, and the
//! file's modification time stops advancing, which the stale-`file_sd`-age
//! alert of seed 003 watches.
//!
//! # The run made visible
//! Each run is recorded in `cron_passes` (job `sync-file-sd`, with its
//! target count or its error) when PostgreSQL could be reached, so the
//! gateway's `/metrics` shows its last pass (`rtmanager_cron_last_*`). With
//! `--textfile PATH` a successful run also writes, atomically like the
//! targets, `rtmanager_file_sd_last_success_timestamp_seconds` and
//! `rtmanager_file_sd_targets` in node_exporter's textfile format; a failed
//! run leaves it, so its timestamp says when the file was last good.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Utc;
use shared::adapters::postgres::Database;
use shared::adapters::{LeaseStore, RedisClient};
use shared::bootstrap::Infra;
use shared::config::RedisConfig;
use shared::domain::{CronJob, CronPass};

use crate::settings::SyncFileSdConfig;

use crate::routes::discovery::{inventory, Scope, TargetGroup};

/// Reads the active inventory and writes it to `out`; returns the number of
/// target groups written.
pub async fn sync_file_sd(
    config: &RedisConfig,
    infra: &Infra,
    out: &Path,
) -> anyhow::Result<usize> {
    sync_with(config, &infra.db, &infra.redis, out).await
}

async fn sync_with(
    config: &RedisConfig,
    db: &Database,
    redis: &RedisClient,
    out: &Path,
) -> anyhow::Result<usize> {
    let leases = LeaseStore::new(redis.clone(), config.lease_ttl);
    let groups = inventory(db, &leases, Scope::Active)
        .await
        .context("monitoring discovery failed; the file_sd file was left unchanged")?;
    let out = out.to_owned();
    let count = groups.len();
    tokio::task::spawn_blocking(move || write_atomically(&out, &groups))
        .await
        .context("file_sd writer task")??;
    Ok(count)
}

/// `rest-gateway sync-file-sd --out FILE`: [`run`] without a textfile.
pub async fn run_once(config: &SyncFileSdConfig, out: &Path) -> anyhow::Result<usize> {
    run(config, out, None).await
}

/// `rest-gateway sync-file-sd --out FILE [--textfile PATH]`: one sync, then
/// exit. Connects to PostgreSQL and Redis only (the inventory needs no
/// Docker, and a sync runs no migrations). The run is recorded in
/// `cron_passes`; on success the textfile, when asked for, is rewritten. A
/// failure is logged as an error and returned, so the process exits
/// non-zero and the sync job's alert fires. Returns the number of target
/// groups written.
pub async fn run(
    config: &SyncFileSdConfig,
    out: &Path,
    textfile: Option<&Path>,
) -> anyhow::Result<usize> {
    let started = Utc::now();
    let db = Database::connect(
        config.postgres.dsn.expose(),
        config.postgres.max_connections.clamp(1, 2),
    )
    .await
    .context("connecting to PostgreSQL (RTMANAGER_POSTGRES_PRIMARY_DSN)");
    let synced = match &db {
        Ok(db) => {
            async {
                let redis = shared::bootstrap::connect_redis(&config.redis).await?;
                sync_with(&config.redis, db, &redis, out).await
            }
            .await
        }
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let synced = match (synced, textfile) {
        (Ok(targets), Some(path)) => write_textfile(path, targets)
            .await
            .map(|()| targets)
            .context("the targets were written; the textfile was not"),
        (synced, _) => synced,
    };
    match &synced {
        Ok(targets) => {
            tracing::info!(targets, file = %out.display(), "file_sd inventory written");
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), file = %out.display(), "file_sd sync failed");
        }
    }
    if let Ok(db) = &db {
        let counts = match &synced {
            Ok(targets) => Ok([("targets".to_owned(), *targets as i64)].into()),
            Err(err) => Err(format!("{err:#}")),
        };
        let pass = CronPass::finished(CronJob::SyncFileSd, started, counts);
        if let Err(e) = db.record_cron_pass(&pass).await {
            tracing::warn!(error = %e, "recording the sync in cron_passes failed");
        }
    }
    synced
}

/// The textfile of a successful sync of `targets` target groups.
pub fn textfile_metrics(targets: usize, at: chrono::DateTime<Utc>) -> String {
    format!(
        "# HELP rtmanager_file_sd_last_success_timestamp_seconds When rest-gateway sync-file-sd last wrote the file_sd targets.\n\
         # TYPE rtmanager_file_sd_last_success_timestamp_seconds gauge\n\
         rtmanager_file_sd_last_success_timestamp_seconds {}\n\
         # HELP rtmanager_file_sd_targets Target groups in the file_sd file at that sync.\n\
         # TYPE rtmanager_file_sd_targets gauge\n\
         rtmanager_file_sd_targets {targets}\n",
        at.timestamp_millis() as f64 / 1000.0
    )
}

async fn write_textfile(path: &Path, targets: usize) -> anyhow::Result<()> {
    let path = path.to_owned();
    let text = textfile_metrics(targets, Utc::now());
    tokio::task::spawn_blocking(move || write_bytes_atomically(&path, text.as_bytes()))
        .await
        .context("textfile writer task")?
}

/// Writes `groups` as JSON to `out` through a temporary file and a rename.
pub fn write_atomically(out: &Path, groups: &[TargetGroup]) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(groups).context("encoding the target groups")?;
    json.push(b'\n');
    write_bytes_atomically(out, &json)
}

/// Writes `bytes` to `out` through a temporary file in its directory, an
/// fsync, a rename and an fsync of the directory: a reader sees the old file
/// or the new one, whole.
fn write_bytes_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .with_context(|| format!("{} names no file", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("writing {}", out.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A fresh directory, removed on drop (a failed assertion too).
    struct ScratchDir(std::path::PathBuf);

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_file_is_left() {
        let scratch =
            ScratchDir(std::env::temp_dir().join(format!("file-sd-unit-{}", std::process::id())));
        let dir = &scratch.0;
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join("targets.json");
        std::fs::write(&out, "[{\"targets\":[\"stale:1\"],\"labels\":{}}]").unwrap();
        let group = TargetGroup {
            targets: vec!["galaxy-game-a:8080".into()],
            labels: BTreeMap::from([("vmid".to_owned(), "a".to_owned())]),
        };
        write_atomically(&out, std::slice::from_ref(&group)).unwrap();
        let back: Vec<TargetGroup> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(back, [group]);
        write_atomically(&out, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "[]");
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["targets.json"]);
    }

    #[test]
    fn the_textfile_is_two_gauges_in_the_text_format() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 500_000_000).unwrap();
        let text = textfile_metrics(3, at);
        assert!(text.ends_with("rtmanager_file_sd_targets 3\n"), "{text}");
        assert!(
            text.contains("\nrtmanager_file_sd_last_success_timestamp_seconds 1800000000.5\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE ").count(), 2);
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn a_directory_that_does_not_exist_is_an_error_naming_the_file() {
        let err = write_atomically(Path::new("/nonexistent-dir-xyz/targets.json"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent-dir-xyz/targets.json"), "{err}");
    }
}
