//! The Docker events listener (`docker-events`): turns the daemon's container
//! events into health events, exactly once, across its own restarts and the
//! daemon's.
//!
//! # Mapping
//! Events come already filtered to `com.galaxy.owner=rtmanager` containers
//! (the adapter asks the daemon for that label); the game is the
//! `com.galaxy.game_id` label. `occurred_at_ms` is the daemon's event time
//! (`time_nano / 1e6`).
//! - `die` with a non-zero exit -> `container_exited {exit_code, oom}`; `oom`
//!   is the container's `State.OOMKilled` (inspected; `false` when it is
//!   already gone). A zero exit publishes nothing and leaves the record alone,
//!   as in the Go service (the reconciler settles the record).
//! - `oom` -> `container_oom {exit_code}`: the exit code is inspected when the
//!   container has already exited, else it is not known yet and is reported as
//!   137 (SIGKILL, what the OOM killer sends).
//! - `destroy` -> `container_disappeared {}`.
//! - `start` is not re-published: the start service owns `container_started`.
//!
//! # Suppression: what rtmanager did itself is not reported
//! An event is published only for the *current* container of a `running`
//! record (`current_container_id` is the event's container). That leaves out
//! rtmanager's own rollbacks (a container never made current) and the
//! containers replaced by a restart or patch, and everything after a stop
//! (the record is no longer running). On top of that:
//! - a `die` is not reported when a stop or removal intent was recorded for
//!   the container ([`IntentKind`]; the lifecycle records it *before* acting,
//!   so it is always there when the die arrives);
//! - a `destroy` is not reported when a removal intent was recorded.
//!
//! # The record follows an observed exit
//! A reported `die` moves the record `running -> stopped` by compare-and-set
//! on the container id ([`mark_stopped`]), in the transaction that stages the
//! event, so a late event never overwrites a newer start. No operation-log row
//! is written: an observation is not an operation. Two exceptions keep the
//! record as it is: a `die` of a container that is being removed (`docker rm
//! -f` kills, then removes: the container is `removing` or already gone when
//! the die is handled) still publishes `container_exited`, but the record
//! stays `running` so that the `destroy` that follows is reported as
//! `container_disappeared`; and `container_disappeared` never changes the
//! record (the reconciler of `inspect-cron` marks it removed).
//!
//! # Exactly once by construction
//! Every event is staged with an outbox dedupe key,
//! `health:{event_type}:{container_id}` ([`Outbox::health_once`]): the
//! outbox's unique key is checked and set in the same PostgreSQL transaction
//! that queues the event (and flips the record). So handling an observation
//! twice — cursor overlap, catch-up racing a replayed event, two instances
//! during a lease hand-over, a crash between commit and cursor write — queues
//! it once, and a failed transaction queues nothing and is retried. A
//! container exits, OOMs and disappears at most once with its record current
//! (a replaced container gets a new id), so one event of each type per
//! container is the whole truth. Dedupe keys live as long as their outbox
//! rows (pruned 7 days after delivery), far longer than the daemon keeps an
//! event to replay. A Redis `SET NX` marker (for `destroy`, say) is not
//! used: set outside the transaction, it could be left behind by a crash
//! before the commit and lose the event.
//!
//! # Nothing lost across restarts: cursor and catch-up
//! The time of the last handled event is kept in Redis
//! (`rtmanager:docker_events:cursor:{instance}:{daemon_id}`). Every
//! (re)subscription asks the daemon for events `since` that cursor
//! (inclusive): the overlap is handled again and, by the above, publishes
//! nothing new, so no separate set of seen events is kept. Without a cursor
//! (first start) it subscribes from two seconds before now. While the daemon
//! is away it retries with capped backoff (100 ms doubling to 5 s).
//!
//! The daemon keeps only its last 256 events and forgets them on restart, so
//! every (re)subscription is followed by a catch-up by inspection, before the
//! stream is read: for each running record, a current container that exited
//! with a non-zero code is reported exactly as its `die` would have been
//! (`container_oom` first, at `FinishedAt - 1 ms`, when it was OOM-killed;
//! `container_exited` at `FinishedAt`; the record stopped), and a current
//! container that no longer exists is reported `container_disappeared` (at
//! the time of the catch-up). The stream is opened before the catch-up with
//! `since` in the past, so an event between the inspection and the
//! subscription is still delivered. One visible artefact: a container
//! removed from outside during a gap is reported `container_disappeared` by
//! the catch-up first, and its kill (`container_exited`, with the earlier
//! daemon time) by the replay right after; each still exactly once. The
//! catch-up assumes, like every job, that the records of one schema live on
//! the one Docker host of `RTMANAGER_DOCKER_HOST`.
//!
//! # One listener per Docker host
//! A Redis lease (`rtmanager:docker_events_lease:{instance}:{daemon_id}`,
//! 15 s TTL renewed every 5 s) makes one instance the holder; the others wait
//! and retry every 2 s, and take over when the holder releases it (shutdown)
//! or dies (expiry). A holder that finds its lease lost stops handling events
//! at once and goes back to waiting. `{instance}` is the outbox identity of
//! the schema (`outbox_identity.instance_id`), so deployments (or test
//! schemas) that share a Redis and a daemon each get their own listener,
//! which they need since each publishes to its own outbox.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use shared::adapters::postgres::{Database, StoreError, UnitOfWork};
use shared::adapters::redis::{
    IntentKind, IntentStore, Lease, LeaseStore, RedisClient, RedisError,
};
use shared::config::Config;
use shared::domain::labels::LABEL_GAME_ID;
use shared::domain::{
    ContainerState, EventAction, GameId, HealthDetails, HealthEvent, RuntimeRecord, RuntimeStatus,
};
use shared::outbox::Outbox;
use shared::ports::{ContainerEngine, ContainerInfo, EngineError, EngineEvent};

/// Reported as the exit code of an OOM kill whose exit is not known yet.
pub const OOM_EXIT_CODE: i64 = 137;

/// Without a cursor, how far back the first subscription starts.
const NO_CURSOR_LOOKBACK_NANOS: i64 = 2_000_000_000;

/// Timings of the listener; [`ListenerSettings::from_config`] gives the
/// production values.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// TTL of the per-host lease (renewed every third of it).
    pub lease_ttl: Duration,
    /// How often a standby instance tries to take the lease.
    pub standby_retry: Duration,
    /// First and largest delay between resubscriptions while the daemon is away.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How often the holder checks its lease between events.
    pub lease_check: Duration,
    /// Parallel inspections of the catch-up.
    pub catch_up_concurrency: usize,
}

impl ListenerSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            lease_ttl: Duration::from_secs(15),
            standby_retry: Duration::from_secs(2),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            lease_check: Duration::from_millis(500),
            catch_up_concurrency: config.inspect_concurrency,
        }
    }
}

/// Why one attempt to follow the daemon ended.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("the daemon closed the event stream")]
    StreamEnded,
}

/// The Redis keys of one (deployment, daemon) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerKeys {
    pub lease: String,
    pub cursor: String,
}

impl ListenerKeys {
    pub fn new(instance: &str, daemon_id: &str) -> Self {
        Self {
            lease: format!("rtmanager:docker_events_lease:{instance}:{daemon_id}"),
            cursor: format!("rtmanager:docker_events:cursor:{instance}:{daemon_id}"),
        }
    }
}

/// The outbox dedupe key of an observation: one per event type and container.
pub fn dedupe_key(details: &HealthDetails, container_id: &str) -> String {
    format!("health:{}:{container_id}", details.event_type().as_str())
}

/// How holding the lease ended.
enum End {
    Shutdown,
    LeaseLost,
    /// Another daemon now answers at the configured address.
    DaemonChanged,
}

struct Held {
    daemon_id: String,
    keys: ListenerKeys,
    lease: Lease,
}

/// Doubling delay between `min` and `max`.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// Follows one Docker daemon's events while it holds that daemon's lease.
#[derive(Clone)]
pub struct Listener {
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    outbox: Outbox,
    redis: RedisClient,
    leases: LeaseStore,
    intents: IntentStore,
    settings: ListenerSettings,
    instance: Arc<OnceCell<String>>,
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

fn now_nanos() -> i64 {
    Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or(i64::MAX - NO_CURSOR_LOOKBACK_NANOS)
}

/// `removing` while `docker rm -f` runs (it kills first); `dead` when a
/// removal failed half-way.
fn is_being_removed(info: &ContainerInfo) -> bool {
    info.state.is_being_removed()
}

impl Listener {
    pub fn new(
        engine: Arc<dyn ContainerEngine>,
        db: Database,
        outbox: Outbox,
        redis: RedisClient,
        settings: ListenerSettings,
    ) -> Self {
        Self {
            engine,
            db,
            outbox,
            leases: LeaseStore::new(redis.clone(), settings.lease_ttl),
            intents: IntentStore::new(redis.clone()),
            redis,
            settings,
            instance: Arc::default(),
        }
    }

    /// Runs until `shutdown`: waits for the lease, follows the daemon while
    /// holding it, and releases it on the way out. Never fails: every outage
    /// is retried.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        let mut waiting_logged = false;
        loop {
            let wait = match self.acquire().await {
                Ok(Some(held)) => {
                    backoff.reset();
                    waiting_logged = false;
                    tracing::info!(daemon_id = %held.daemon_id, "docker-events lease taken; following the daemon");
                    let end = self.hold(&held, &shutdown).await;
                    held.lease.release().await;
                    match end {
                        End::Shutdown => return,
                        End::LeaseLost => {
                            tracing::warn!(daemon_id = %held.daemon_id, "docker-events lease lost; standing by");
                            self.settings.standby_retry
                        }
                        End::DaemonChanged => {
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
                    let delay = backoff.step();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "docker-events cannot start following the daemon");
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
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
    async fn acquire(&self) -> Result<Option<Held>, ListenerError> {
        let instance = self.instance().await?.to_owned();
        let daemon_id = self.engine.daemon_id().await?;
        let keys = ListenerKeys::new(&instance, &daemon_id);
        Ok(self
            .leases
            .try_acquire_key(keys.lease.clone())
            .await?
            .map(|lease| Held {
                daemon_id,
                keys,
                lease,
            }))
    }

    /// Resubscribes, with capped backoff, until shutdown or the lease is gone.
    async fn hold(&self, held: &Held, shutdown: &CancellationToken) -> End {
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let began = tokio::time::Instant::now();
            let mut progressed = false;
            let failure = match self.follow(held, shutdown, &mut progressed).await {
                Ok(end) => return end,
                Err(e) => e,
            };
            // A session that lived or worked for a while starts a fresh backoff.
            if progressed || began.elapsed() >= self.settings.max_backoff {
                backoff.reset();
            }
            let delay = backoff.step();
            tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "docker events interrupted; resubscribing");
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = tokio::time::sleep(delay) => {}
            }
            if held.lease.is_lost() {
                return End::LeaseLost;
            }
        }
    }

    /// One subscription: open the stream from the cursor, catch up by
    /// inspection, then handle events in daemon order.
    async fn follow(
        &self,
        held: &Held,
        shutdown: &CancellationToken,
        progressed: &mut bool,
    ) -> Result<End, ListenerError> {
        if self.engine.daemon_id().await? != held.daemon_id {
            return Ok(End::DaemonChanged);
        }
        let cursor = self.read_cursor(&held.keys).await?;
        let since = cursor.unwrap_or_else(|| now_nanos() - NO_CURSOR_LOOKBACK_NANOS);
        let mut events = self.engine.events(Some(since));
        let published = self.catch_up().await?;
        *progressed = true;
        tracing::info!(
            since_nano = since,
            caught_up = published,
            "following docker events"
        );
        let mut check = tokio::time::interval(self.settings.lease_check);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(End::Shutdown),
                _ = check.tick() => {
                    if held.lease.is_lost() {
                        return Ok(End::LeaseLost);
                    }
                }
                item = events.next() => {
                    let event = item.ok_or(ListenerError::StreamEnded)??;
                    if held.lease.is_lost() {
                        return Ok(End::LeaseLost);
                    }
                    self.handle(&event).await?;
                    self.write_cursor(&held.keys, event.time_nano).await?;
                }
            }
        }
    }

    async fn read_cursor(&self, keys: &ListenerKeys) -> Result<Option<i64>, RedisError> {
        self.redis.read_cursor(&keys.cursor).await
    }

    async fn write_cursor(&self, keys: &ListenerKeys, time_nano: i64) -> Result<(), RedisError> {
        self.redis.write_cursor(&keys.cursor, time_nano).await
    }

    /// Handles one daemon event; an error leaves the cursor before it, so it
    /// is handled again after the resubscription.
    pub async fn handle(&self, event: &EngineEvent) -> Result<(), ListenerError> {
        let Some(game_id) = event
            .labels
            .get(LABEL_GAME_ID)
            .and_then(|g| GameId::parse(g).ok())
        else {
            return Ok(());
        };
        let at_ms = event.time_nano.div_euclid(1_000_000);
        let container = event.container_id.as_str();
        match event.action {
            EventAction::Die => {
                self.on_die(&game_id, container, event.exit_code, at_ms)
                    .await
            }
            EventAction::Oom => self.on_oom(&game_id, container, at_ms).await,
            EventAction::Destroy => self.on_destroy(&game_id, container, at_ms).await,
            _ => Ok(()),
        }
    }

    async fn on_die(
        &self,
        game_id: &GameId,
        container: &str,
        exit_code: Option<i64>,
        at_ms: i64,
    ) -> Result<(), ListenerError> {
        if exit_code == Some(0) || self.rtmanager_acted(container).await? {
            return Ok(());
        }
        if self.current_running(game_id, container).await?.is_none() {
            return Ok(());
        }
        let info = self.engine.inspect_container(container).await?;
        let exit_code = match exit_code.or(info.as_ref().map(|i| i.exit_code)) {
            Some(0) | None => return Ok(()),
            Some(code) => code,
        };
        let oom = info.as_ref().is_some_and(|i| i.oom_killed);
        let removing = info.as_ref().is_none_or(is_being_removed);
        self.publish_exit(game_id, container, exit_code, oom, !removing, at_ms)
            .await?;
        Ok(())
    }

    async fn on_oom(
        &self,
        game_id: &GameId,
        container: &str,
        at_ms: i64,
    ) -> Result<(), ListenerError> {
        if self.current_running(game_id, container).await?.is_none() {
            return Ok(());
        }
        let exit_code = match self.engine.inspect_container(container).await? {
            Some(info) if !info.state.is_running() && info.exit_code != 0 => info.exit_code,
            _ => OOM_EXIT_CODE,
        };
        self.publish(&[HealthEvent::container_oom(
            game_id, container, at_ms, exit_code,
        )])
        .await?;
        Ok(())
    }

    async fn on_destroy(
        &self,
        game_id: &GameId,
        container: &str,
        at_ms: i64,
    ) -> Result<(), ListenerError> {
        if self
            .intents
            .is_recorded(IntentKind::Removal, container)
            .await?
        {
            return Ok(());
        }
        if self.current_running(game_id, container).await?.is_none() {
            return Ok(());
        }
        self.publish(&[HealthEvent::container_disappeared(
            game_id, container, at_ms,
        )])
        .await?;
        Ok(())
    }

    /// Whether rtmanager itself stops or removes this container.
    async fn rtmanager_acted(&self, container: &str) -> Result<bool, RedisError> {
        Ok(self
            .intents
            .is_recorded(IntentKind::Stop, container)
            .await?
            || self
                .intents
                .is_recorded(IntentKind::Removal, container)
                .await?)
    }

    /// The game's record, when it is running with this container.
    async fn current_running(
        &self,
        game_id: &GameId,
        container: &str,
    ) -> Result<Option<RuntimeRecord>, StoreError> {
        Ok(self.db.get_record(game_id).await?.filter(|r| {
            r.status == RuntimeStatus::Running
                && r.current_container_id.as_deref() == Some(container)
        }))
    }

    /// `container_oom` (when OOM-killed, just before) and `container_exited`,
    /// with the record stopped by compare-and-set when `stop_record`, in one
    /// transaction. Returns how many events were new.
    async fn publish_exit(
        &self,
        game_id: &GameId,
        container: &str,
        exit_code: i64,
        oom: bool,
        stop_record: bool,
        at_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut events = Vec::with_capacity(2);
        if oom {
            // The daemon's `oom` precedes its `die`; normally it was already
            // published from its own event and this one is a no-op.
            events.push(HealthEvent::container_oom(
                game_id,
                container,
                at_ms - 1,
                exit_code,
            ));
        }
        events.push(HealthEvent::container_exited(
            game_id, container, at_ms, exit_code, oom,
        ));
        let mut tx = self.outbox.begin().await?;
        if stop_record {
            // Compare-and-set on the container: a late event never
            // overwrites a newer start. Losing it to another observer (or an
            // earlier pass) is fine: the dedupe key decides publication.
            tx.mark_stopped(game_id, container, millis_to_time(at_ms))
                .await?;
        }
        let fresh = self.stage(&mut tx, &events).await?;
        tx.commit().await?;
        self.published(&events, fresh);
        Ok(fresh)
    }

    /// Stages each event once (by its dedupe key) in one transaction.
    async fn publish(&self, events: &[HealthEvent]) -> Result<usize, StoreError> {
        let mut tx = self.outbox.begin().await?;
        let fresh = self.stage(&mut tx, events).await?;
        tx.commit().await?;
        self.published(events, fresh);
        Ok(fresh)
    }

    async fn stage(
        &self,
        tx: &mut UnitOfWork,
        events: &[HealthEvent],
    ) -> Result<usize, StoreError> {
        let mut fresh = 0;
        for event in events {
            let key = dedupe_key(&event.details, &event.container_id);
            if tx.stage(&self.outbox.health_once(event, &key)).await? {
                fresh += 1;
                tracing::info!(
                    game_id = %event.game_id,
                    container_id = %event.container_id,
                    event_type = event.details.event_type().as_str(),
                    occurred_at_ms = event.occurred_at_ms,
                    "health event staged"
                );
            }
        }
        Ok(fresh)
    }

    fn published(&self, events: &[HealthEvent], fresh: usize) {
        if fresh == 0 {
            if let Some(event) = events.last() {
                tracing::debug!(game_id = %event.game_id, container_id = %event.container_id, "observation already published");
            }
        }
    }

    /// Reports, by inspection, what the events of a gap would have reported
    /// for the current container of each running record. Returns how many
    /// events were new.
    pub async fn catch_up(&self) -> Result<usize, ListenerError> {
        let records = self.db.list_records(Some(RuntimeStatus::Running)).await?;
        let results: Vec<Result<usize, ListenerError>> = futures_util::stream::iter(records)
            .map(|record| async move { self.catch_up_one(&record).await })
            .buffer_unordered(self.settings.catch_up_concurrency.max(1))
            .collect()
            .await;
        let mut published = 0;
        for result in results {
            published += result?;
        }
        Ok(published)
    }

    async fn catch_up_one(&self, record: &RuntimeRecord) -> Result<usize, ListenerError> {
        let Some(container) = record.current_container_id.as_deref() else {
            return Ok(0);
        };
        let game_id = &record.game_id;
        match self.engine.inspect_container(container).await? {
            None => {
                if self
                    .intents
                    .is_recorded(IntentKind::Removal, container)
                    .await?
                {
                    return Ok(0);
                }
                Ok(self
                    .publish(&[HealthEvent::container_disappeared(
                        game_id,
                        container,
                        Utc::now().timestamp_millis(),
                    )])
                    .await?)
            }
            Some(info) if info.state == ContainerState::Exited && info.exit_code != 0 => {
                if self.rtmanager_acted(container).await? {
                    return Ok(0);
                }
                let at_ms = info.finished_at.unwrap_or_else(Utc::now).timestamp_millis();
                Ok(self
                    .publish_exit(
                        game_id,
                        container,
                        info.exit_code,
                        info.oom_killed,
                        true,
                        at_ms,
                    )
                    .await?)
            }
            // Running, or being removed (its `destroy` follows on the stream).
            Some(_) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_deployments_and_daemons() {
        let keys = ListenerKeys::new("inst", "ABCD:EF");
        assert_eq!(keys.lease, "rtmanager:docker_events_lease:inst:ABCD:EF");
        assert_eq!(keys.cursor, "rtmanager:docker_events:cursor:inst:ABCD:EF");
        assert_eq!(
            dedupe_key(&HealthDetails::ContainerDisappeared, "c1"),
            "health:container_disappeared:c1"
        );
    }

    #[test]
    fn backoff_doubles_from_100ms_to_5s_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let steps: Vec<u64> = (0..8).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(100));
    }
}
