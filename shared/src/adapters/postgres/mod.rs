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
//! - [`cron_passes`]: the passes of the cron jobs, for the gateway's `/metrics`.
//!
//! Queries are checked at run time (no live database at build time). The
//! tables live in the schema the DSN's `search_path` names.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::domain::ErrorCode;

pub mod cron_passes;
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
/// new release's migrate step made, which only adds (expand/contract).
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut migrator = sqlx::migrate!("../migrations");
    migrator.ignore_missing = true;
    migrator
};

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

    /// Applies pending migrations; an already-applied migration is a success.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Query(format!("migrations: {e}")))
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
