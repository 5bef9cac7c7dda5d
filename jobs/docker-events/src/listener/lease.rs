//! One listener per Docker host.
//!
//! A Redis lease (`rtmanager:docker_events_lease:{instance}:{daemon_id}`,
//! 15 s TTL renewed every 5 s) makes one instance the holder; the others wait
//! and retry every 2 s, and take over when the holder releases it (shutdown)
//! or dies (expiry). A holder that finds its lease lost stops handling events
//! at once and goes back to waiting. `{instance}` is the outbox identity of
//! the schema (`outbox_identity.instance_id`), so deployments (or test
//! schemas) that share a Redis and a daemon each get their own listener,
//! which they need since each publishes to its own outbox.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use shared::adapters::postgres::StoreError;
use shared::adapters::Lease;
use shared::retry;

use super::{Listener, ListenerError, ListenerKeys};

/// The lease of one daemon, held, with that daemon's keys.
pub(super) struct DaemonLease {
    pub(super) daemon_id: String,
    pub(super) keys: ListenerKeys,
    pub(super) lease: Lease,
}

/// How holding the lease ended.
pub(super) enum HoldEnd {
    Shutdown,
    LeaseLost,
    /// Another daemon now answers at the configured address.
    DaemonChanged,
}

impl Listener {
    /// Runs until `shutdown`: waits for the lease, follows the daemon while
    /// holding it, and releases it on the way out. Never fails: every outage
    /// is retried.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut backoff = retry::backoff();
        // A standby says so once, not every retry.
        let mut waiting_logged = false;
        loop {
            self.heartbeat.beat().await;
            let wait = match self.acquire().await {
                Ok(Some(held)) => {
                    backoff = retry::backoff();
                    waiting_logged = false;
                    tracing::info!(daemon_id = %held.daemon_id, "docker-events lease taken; following the daemon");
                    self.metrics.lease_held.set(1);
                    let end = self.hold(&held, &shutdown).await;
                    held.lease.release().await;
                    self.metrics.lease_held.set(0);
                    self.metrics.cursor_age.set(0.0);
                    match end {
                        HoldEnd::Shutdown => return,
                        HoldEnd::LeaseLost => {
                            tracing::warn!(daemon_id = %held.daemon_id, "docker-events lease lost; standing by");
                            self.settings.standby_retry
                        }
                        // The new daemon has its own lease and cursor: take
                        // them at once.
                        HoldEnd::DaemonChanged => {
                            tracing::warn!(daemon_id = %held.daemon_id, "another daemon answers now; starting over");
                            Duration::ZERO
                        }
                    }
                }
                Ok(None) => {
                    if !waiting_logged {
                        tracing::info!(
                            "another docker-events instance holds this daemon; standing by"
                        );
                        waiting_logged = true;
                    }
                    self.settings.standby_retry
                }
                Err(e) => {
                    let delay = retry::next(&mut backoff);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "docker-events cannot start following the daemon");
                    delay
                }
            };
            let stopped = self
                .heartbeat
                .idle(async {
                    tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(wait) => false,
                    }
                })
                .await;
            if stopped {
                return;
            }
        }
    }

    async fn instance(&self) -> Result<&str, StoreError> {
        self.instance
            .get_or_try_init(|| async { self.db.outbox_instance().await })
            .await
            .map(String::as_str)
    }

    /// The lease of the daemon answering now; `None` while another holds it.
    async fn acquire(&self) -> Result<Option<DaemonLease>, ListenerError> {
        let instance = self.instance().await?.to_owned();
        let daemon_id = self.engine.daemon_id().await?;
        let keys = ListenerKeys::new(&instance, &daemon_id);
        Ok(self
            .leases
            .try_acquire_key(keys.lease.clone())
            .await?
            .map(|lease| DaemonLease {
                daemon_id,
                keys,
                lease,
            }))
    }
}
