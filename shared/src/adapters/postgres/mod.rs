//! PostgreSQL adapter: the only code that speaks sqlx.
//!
//! - [`Database`]: the pool, migrations, reads outside a transaction.
//! - [`UnitOfWork`]: one transaction in our vocabulary; every write of a
//!   lifecycle operation or a health source goes through one.
//! - [`records`], [`operations`], [`snapshots`], [`health_history`] (every
//!   health event, for the timeline), [`outbox`], [`observations`],
//!   [`stream_offsets`] (the job consumers' last acked ids),
//!   [`reads`]: the queries, by table (reads: the gateway's and discovery's);
//!   [`probe_targets`]: the prober's targets with their committed streaks.
//! - [`retention`]: cleanup-cron's pruning of the history tables.
//! - [`engine_images`]: the images of managed games, and since when each
//!   has been unused (cleanup-cron removes them after a retention).
//! - [`cron_passes`]: the passes of the cron jobs, for the gateway's `/metrics`.
//!
//! Queries are checked at run time (no live database at build time). The
//! tables live in the schema the DSN's `search_path` names.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::domain::ErrorCode;

pub mod cron_passes;
pub mod engine_images;
pub mod fences;
pub mod health_history;
pub mod intents;
pub mod observations;
pub mod operations;
pub mod outbox;
pub mod probe_targets;
pub mod reads;
pub mod records;
pub mod retention;
pub mod snapshots;
pub mod stream_offsets;
mod unit_of_work;

pub use engine_images::EngineImage;
pub use fences::Fence;
pub use intents::IntentStore;
pub use outbox::{OutboxBacklog, PendingRow, Redrive, RelayBatch};
pub use probe_targets::{CommittedStreak, OpenProbeFailure, ProbeTarget};
pub use reads::MonitoringRow;
pub use retention::PruneCounts;
pub use unit_of_work::UnitOfWork;

/// Migrations embedded at build time from the workspace's `migrations/`.
///
/// Versions applied that this binary does not know are ignored, not refused:
/// during a rolling upgrade the previous release runs against the schema the
/// new release's migrate step made, which only adds (expand/contract, see the
/// README's Upgrades). [`Database::migration_state`] reports them.
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut migrator = sqlx::migrate!("../migrations");
    migrator.ignore_missing = true;
    migrator
};

/// Where the schema stands against the migrations this binary embeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationState {
    /// Embedded migrations not (successfully) applied: `(version, description)`.
    pub pending: Vec<(i64, String)>,
    /// Versions applied that this binary does not know: a newer release
    /// migrated the schema.
    pub newer: Vec<i64>,
}

/// Why migrations could not be run.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The role may not create or alter objects (SQLSTATE 42501): a
    /// least-privilege role, whose migrations an owner runs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached in time: `service_unavailable`.
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error: `internal_error`.
    #[error("postgres error: {0}")]
    Query(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A later holder of the game's lease took a newer fencing token: this
    /// holder's lease was lost, and what it would commit is not its to
    /// commit (`conflict`).
    #[error("fenced: game {game_id} token {token} superseded by {latest}")]
    Fenced {
        game_id: String,
        token: i64,
        latest: i64,
    },
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Query(_) | Self::Corrupt(_) => ErrorCode::Internal,
            Self::Fenced { .. } => ErrorCode::Conflict,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            // Class 08 (connection exception) and 57 (operator intervention:
            // a shutdown, a restart) are the server going away, not an
            // answer about the query.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                Self::Unavailable(db.to_string())
            }
            sqlx::Error::Database(db) => Self::Query(db.to_string()),
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::Query(err.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// A pool on the primary.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Connects lazily-checked: `acquire_timeout` bounds how long an operation
    /// waits when PostgreSQL is away, so it fails with `service_unavailable`
    /// instead of hanging.
    pub async fn connect(dsn: &str, max_connections: u32) -> Result<Self, StoreError> {
        let (dsn, search_path) = split_search_path(dsn);
        let mut options: PgConnectOptions = dsn
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Unavailable(format!("bad DSN: {e}")))?;
        if let Some(schema) = search_path {
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; an already-applied migration is a success,
    /// and so is one applied that this binary does not know (a newer
    /// release's). Returns the state after the run.
    pub async fn migrate(&self) -> Result<MigrationState, MigrateError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| {
            let denied = match &e {
                sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
                | sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(db), _) => {
                    db.code().as_deref() == Some("42501")
                }
                _ => false,
            };
            if denied {
                MigrateError::PermissionDenied(e.to_string())
            } else {
                MigrateError::Failed(e.to_string())
            }
        })?;
        self.migration_state()
            .await
            .map_err(|e| MigrateError::Failed(e.to_string()))
    }

    /// Which embedded migrations are not applied, and which applied ones this
    /// binary does not know. Reads only `_sqlx_migrations` (a role with DML
    /// rights suffices); no such table means nothing is applied.
    pub async fn migration_state(&self) -> Result<MigrationState, StoreError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(applied) => applied,
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
        let known: std::collections::HashSet<i64> = MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .collect();
        let applied_set: std::collections::HashSet<i64> = applied.iter().copied().collect();
        let pending = MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .filter(|m| !applied_set.contains(&m.version))
            .map(|m| (m.version, m.description.to_string()))
            .collect();
        let mut newer: Vec<i64> = applied.into_iter().filter(|v| !known.contains(v)).collect();
        newer.sort_unstable();
        Ok(MigrationState { pending, newer })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Opens a unit of work (one transaction).
    pub async fn begin(&self) -> Result<UnitOfWork, StoreError> {
        Ok(UnitOfWork::new(self.pool.begin().await?))
    }

    /// The raw pool: for the system tests, which sabotage and inspect the
    /// database directly. Production code goes through the methods here.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool (tests, and processes on their way out).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The Go service's DSNs carry `?search_path=rtmanager` (a lib/pq parameter),
/// which sqlx ignores; it is turned into the session option sqlx understands,
/// so a DSN copied from the Go service keeps its tables in their schema.
fn split_search_path(dsn: &str) -> (String, Option<String>) {
    let Some((base, query)) = dsn.split_once('?') else {
        return (dsn.to_owned(), None);
    };
    let mut search_path = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("search_path", value)) => {
                search_path = Some(value.replace("%2C", ",").replace("%2c", ","));
                false
            }
            _ => true,
        })
        .collect();
    let dsn = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (dsn, search_path)
}

#[cfg(test)]
mod tests {
    use super::split_search_path;

    #[test]
    fn a_go_style_search_path_parameter_becomes_a_session_option() {
        assert_eq!(
            split_search_path("postgres://u:p@h/db?search_path=rtmanager&sslmode=disable"),
            (
                "postgres://u:p@h/db?sslmode=disable".to_owned(),
                Some("rtmanager".to_owned())
            )
        );
        assert_eq!(
            split_search_path("postgres://h/db?search_path=a%2Cb"),
            ("postgres://h/db".to_owned(), Some("a,b".to_owned()))
        );
        assert_eq!(
            split_search_path("postgres://h/db"),
            ("postgres://h/db".to_owned(), None)
        );
    }
}
