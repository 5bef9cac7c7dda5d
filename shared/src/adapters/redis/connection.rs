//! [`RedisConnection`]: one connection type for the three ways to the
//! master, so the command code is written once. Each command goes:
//!
//! - **single address**: to that address (a `ConnectionManager`, which
//!   reconnects to it by itself);
//! - **Sentinel**: to the master the sentinels name now
//!   (`sentinel::MasterFollower`); an error that says the master may
//!   have moved (a dropped or timed-out connection, `READONLY`) drops the
//!   connection, so the next command asks the sentinels again;
//! - **Cluster**: to the node serving the command's slot (the crate's
//!   cluster connection, which follows `MOVED` and re-reads the slots).

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::sentinel::MasterFollower;

/// A connection to wherever commands must go; cheap to clone (clones share
/// the underlying connection).
#[derive(Clone)]
pub struct RedisConnection(pub(super) Route);

#[derive(Clone)]
pub(super) enum Route {
    /// The shared connection to a single master.
    Single(ConnectionManager),
    /// A dedicated connection to a single master (blocking reads).
    SingleDedicated(MultiplexedConnection),
    /// The shared connection to the current master, found through the
    /// sentinels.
    Followed(Arc<MasterFollower>),
    /// A dedicated connection to the master of `generation` (blocking
    /// reads); stale once the follower has moved on.
    FollowedDedicated {
        follower: Arc<MasterFollower>,
        generation: u64,
        conn: MultiplexedConnection,
    },
    /// A connection to every master of a Cluster, routed by slot.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// False once the master this dedicated connection was opened to is no
    /// longer the one the sentinels name: it must be opened again.
    pub(super) fn is_current(&self) -> bool {
        match &self.0 {
            Route::FollowedDedicated {
                follower,
                generation,
                ..
            } => follower.is_generation(*generation),
            _ => true,
        }
    }
}

/// Errors after which a followed master may be gone or demoted: the
/// connection is dropped, and the sentinels are asked again.
pub(super) fn master_may_have_moved(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Route::Single(conn) => conn.req_packed_command(cmd),
            Route::SingleDedicated(conn) => conn.req_packed_command(cmd),
            Route::Cluster(conn) => conn.req_packed_command(cmd),
            Route::Followed(follower) => Box::pin(async move {
                let (generation, mut conn) = follower.connection().await?;
                conn.req_packed_command(cmd)
                    .await
                    .inspect_err(|e| follower.forget_if(generation, e))
            }),
            Route::FollowedDedicated {
                follower,
                generation,
                conn,
            } => Box::pin(async move {
                conn.req_packed_command(cmd)
                    .await
                    .inspect_err(|e| follower.forget_if(*generation, e))
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Route::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Route::SingleDedicated(conn) => conn.req_packed_commands(pipeline, offset, count),
            Route::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Route::Followed(follower) => Box::pin(async move {
                let (generation, mut conn) = follower.connection().await?;
                conn.req_packed_commands(pipeline, offset, count)
                    .await
                    .inspect_err(|e| follower.forget_if(generation, e))
            }),
            Route::FollowedDedicated {
                follower,
                generation,
                conn,
            } => Box::pin(async move {
                conn.req_packed_commands(pipeline, offset, count)
                    .await
                    .inspect_err(|e| follower.forget_if(*generation, e))
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
