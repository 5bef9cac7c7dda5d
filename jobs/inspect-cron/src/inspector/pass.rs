//! One pass: list the owner-labelled containers and the runtime records, pick
//! the targets that matter, check them at most `RTMANAGER_INSPECT_CONCURRENCY`
//! at a time, and fold what each produced into a [`PassReport`].
//!
//! The pass reads here; every write about a game is one of the actions of
//! [`super::actions`]. Only a failure to list containers or read records
//! fails the pass ([`PassError`]); per-container failures and timeouts are in
//! the report.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::InspectCronConfig;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::RngCore;
use shared::adapters::postgres::StoreError;
use shared::domain::labels::LABEL_GAME_ID;
use shared::domain::{GameId, ObservationMemory as Memory, RuntimeRecord, RuntimeStatus};
use shared::ports::{ContainerSummary, EngineError};

use super::assess::{assess, observation_of, Verdict};
use super::Inspector;

/// Settings of a pass, from [`InspectCronConfig`].
#[derive(Debug, Clone)]
pub struct InspectSettings {
    /// `RTMANAGER_INSPECT_TIMEOUT`: bound on one container's inspect.
    pub timeout: Duration,
    /// `RTMANAGER_INSPECT_CONCURRENCY`: containers checked at once.
    pub concurrency: usize,
    /// `RTMANAGER_DOCKER_NETWORK`: the network of adopted containers.
    pub network: String,
    /// `RTMANAGER_GAME_STATE_ROOT`: adopted records get `<root>/<game_id>`.
    pub state_root: PathBuf,
    /// `RTMANAGER_CONTAINER_STOP_TIMEOUT_SECONDS`: for the containers a
    /// newer stop superseded.
    pub stop_timeout: Duration,
}

impl InspectSettings {
    pub fn from_config(config: &InspectCronConfig) -> Self {
        Self {
            timeout: config.inspect.timeout,
            concurrency: config.inspect.concurrency,
            network: config.common.docker.network.clone(),
            state_root: config.state.root.clone(),
            stop_timeout: config.lifecycle.stop_timeout,
        }
    }
}

/// The outcome of one pass. Container ids and game ids are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The `source_ref` of this pass's operation-log rows.
    pub pass_id: String,
    pub reconciled: bool,
    /// Owner-labelled containers listed.
    pub listed: usize,
    /// Containers inspected within the timeout.
    pub inspected: Vec<String>,
    /// Containers whose inspect exceeded the timeout: skipped this pass.
    pub timed_out: Vec<String>,
    /// Containers whose inspect or action failed (each logged).
    pub failed: Vec<String>,
    /// Games skipped because their lease was held.
    pub busy: Vec<GameId>,
    /// Games whose record changed between the listing and the action.
    pub superseded: Vec<GameId>,
    /// Games for which `inspect_unhealthy` was published.
    pub unhealthy: Vec<GameId>,
    pub adopted: Vec<GameId>,
    pub disposed: Vec<GameId>,
    pub observed_exits: Vec<GameId>,
    /// Owner-labelled, unrecorded containers not adopted (bad game id label,
    /// or not on the configured network).
    pub ignored: Vec<String>,
}

/// A failure that ends the pass before any container was checked.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("listing managed containers: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One container (or missing container) a pass looks at.
enum Target {
    /// The current container of a `running` record, listed.
    Current {
        record: RuntimeRecord,
        container_id: String,
    },
    /// The current container of a `running` record, not listed.
    Missing {
        record: RuntimeRecord,
        container_id: String,
    },
    /// A running owner-labelled container on our network whose game's
    /// record is not running (a restart or patch, or a start of a stopped
    /// game, that died between creating it and committing).
    Unwatched {
        record: RuntimeRecord,
        container_id: String,
    },
    /// A not-running owner-labelled container on our network whose game's
    /// record is not running and names a container that is not listed (a
    /// restart or patch, or a start of a stopped game, that died after
    /// removing the old container and creating this one, before starting
    /// it; the name is the game's, so there is no other).
    Replaced {
        record: RuntimeRecord,
        container_id: String,
    },
    /// An owner-labelled container on our network whose game has no record.
    Orphan {
        game_id: GameId,
        container_id: String,
    },
}

/// One thing a target produced, folded into the [`PassReport`].
pub(super) enum Finding {
    Inspected(String),
    TimedOut(String),
    Failed(String),
    Busy(GameId),
    Superseded(GameId),
    Unhealthy(GameId),
    Adopted(GameId),
    Disposed(GameId),
    ObservedExit(GameId),
}

/// What every check of one pass shares.
pub(super) struct PassContext {
    /// The `source_ref` of the pass's operation-log rows.
    pub(super) pass_id: String,
    pub(super) reconcile: bool,
    /// What earlier passes remember, by container id.
    memory: HashMap<String, Memory>,
}

impl PassReport {
    fn record(&mut self, finding: Finding) {
        match finding {
            Finding::Inspected(c) => self.inspected.push(c),
            Finding::TimedOut(c) => self.timed_out.push(c),
            Finding::Failed(c) => self.failed.push(c),
            Finding::Busy(g) => self.busy.push(g),
            Finding::Superseded(g) => self.superseded.push(g),
            Finding::Unhealthy(g) => self.unhealthy.push(g),
            Finding::Adopted(g) => self.adopted.push(g),
            Finding::Disposed(g) => self.disposed.push(g),
            Finding::ObservedExit(g) => self.observed_exits.push(g),
        }
    }

    fn sort(&mut self) {
        for list in [
            &mut self.inspected,
            &mut self.timed_out,
            &mut self.failed,
            &mut self.ignored,
        ] {
            list.sort();
        }
        for list in [
            &mut self.busy,
            &mut self.superseded,
            &mut self.unhealthy,
            &mut self.adopted,
            &mut self.disposed,
            &mut self.observed_exits,
        ] {
            list.sort();
        }
    }
}

impl Inspector {
    /// One pass: inspect, and reconcile too when `reconcile` is set.
    /// Per-container failures and timeouts are in the report; only a failure
    /// to list containers or read records fails the pass.
    pub async fn pass(&self, reconcile: bool) -> Result<PassReport, PassError> {
        let started = Utc::now();
        let pass_id = new_pass_id(started);
        let list = async { self.engine.list_managed().await.map_err(PassError::from) };
        let reads = async {
            tokio::try_join!(
                async {
                    self.db
                        .list_records((!reconcile).then_some(RuntimeStatus::Running))
                        .await
                        .map_err(PassError::from)
                },
                async { self.db.observation_memory().await.map_err(PassError::from) },
            )
        };
        // A reconcile reads the records after the listing: a start that
        // commits in between then shows as a listed container whose record
        // it did not read (left alone), never as a record whose container
        // the listing missed (which it would settle as gone). An
        // inspect-only pass acts on listed containers only, so its three
        // reads go at once: one round trip of latency instead of three.
        // Each read is bounded (Docker's and the pool's timeouts): waiting
        // for a dependency that is away is not a stall.
        let (containers, (records, memory)) = self
            .heartbeat
            .idle(async {
                if reconcile {
                    let containers = list.await?;
                    Ok::<_, PassError>((containers, reads.await?))
                } else {
                    tokio::try_join!(list, reads)
                }
            })
            .await?;

        let mut report = PassReport {
            pass_id: pass_id.clone(),
            reconciled: reconcile,
            listed: containers.len(),
            ..PassReport::default()
        };
        let targets = self.targets(&containers, &records, reconcile, &mut report.ignored);
        let ctx = PassContext {
            pass_id,
            reconcile,
            memory,
        };
        let checks = futures_util::stream::iter(targets)
            .map(|target| async {
                let found = self.check(target, &ctx).await;
                self.heartbeat.tick();
                found
            })
            .buffer_unordered(self.settings.concurrency)
            .collect::<Vec<Vec<Finding>>>();
        // The prune runs beside the checks: it removes only the
        // observations of containers this pass did not list, older than the
        // pass, which no check of this pass writes.
        let listed_ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        let (findings, pruned) =
            tokio::join!(checks, self.db.prune_observations(&listed_ids, started));
        if let Err(e) = pruned {
            tracing::warn!(error = %e, "pruning inspect observations failed; retried next pass");
        }
        for finding in findings.into_iter().flatten() {
            report.record(finding);
        }
        report.sort();
        tracing::info!(
            pass_id = %report.pass_id,
            reconciled = report.reconciled,
            listed = report.listed,
            inspected = report.inspected.len(),
            timed_out = report.timed_out.len(),
            failed = report.failed.len(),
            busy = report.busy.len(),
            unhealthy = report.unhealthy.len(),
            adopted = report.adopted.len(),
            disposed = report.disposed.len(),
            observed_exits = report.observed_exits.len(),
            "inspect pass done"
        );
        Ok(report)
    }

    /// The containers a pass checks: the current container of each `running`
    /// record (listed, or missing when reconciling), and, when reconciling,
    /// each owner-labelled container that is ours and that no running record
    /// watches: unrecorded (an orphan), running for a game whose record is
    /// not (unwatched), or not running for a game whose stopped or removed
    /// record names a container that is gone (replaced). The ones that are not ours (a bad game id label,
    /// another network) go to `ignored`.
    ///
    /// Adoption is scoped to the configured network: the adopted record names
    /// `RTMANAGER_DOCKER_NETWORK`, so a container on another network (left by
    /// another deployment or an earlier configuration) is not ours. The kept,
    /// exited container of a stopped record is left to the next start, which
    /// replaces it.
    fn targets(
        &self,
        containers: &[ContainerSummary],
        records: &[RuntimeRecord],
        reconcile: bool,
        ignored: &mut Vec<String>,
    ) -> Vec<Target> {
        let listed: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        let recorded: HashMap<&str, &RuntimeRecord> =
            records.iter().map(|r| (r.game_id.as_str(), r)).collect();
        let mut targets = Vec::new();
        for record in records
            .iter()
            .filter(|r| r.status == RuntimeStatus::Running)
        {
            let Some(container_id) = record
                .current_container_id
                .clone()
                .filter(|c| !c.is_empty())
            else {
                continue;
            };
            if listed.contains(container_id.as_str()) {
                targets.push(Target::Current {
                    record: record.clone(),
                    container_id,
                });
            } else if reconcile {
                targets.push(Target::Missing {
                    record: record.clone(),
                    container_id,
                });
            }
        }
        if !reconcile {
            return targets;
        }
        for container in containers {
            let label = container.labels.get(LABEL_GAME_ID).map(String::as_str);
            if let Some(record) = label.and_then(|g| recorded.get(g)) {
                if record.status == RuntimeStatus::Running
                    || !container.networks.contains(&self.settings.network)
                {
                    continue;
                }
                let names_missing = record
                    .current_container_id
                    .as_deref()
                    .is_none_or(|c| c != container.id && !listed.contains(c));
                if container.state.is_running() {
                    targets.push(Target::Unwatched {
                        record: (*record).clone(),
                        container_id: container.id.clone(),
                    });
                } else if names_missing {
                    targets.push(Target::Replaced {
                        record: (*record).clone(),
                        container_id: container.id.clone(),
                    });
                }
                continue;
            }
            let game_id = match label.map(GameId::parse) {
                Some(Ok(game_id)) => game_id,
                Some(Err(e)) => {
                    tracing::warn!(container_id = %container.id, label = label.unwrap_or(""), error = %e, "owner-labelled container with an invalid game id label; not adopted");
                    ignored.push(container.id.clone());
                    continue;
                }
                None => {
                    tracing::warn!(container_id = %container.id, "owner-labelled container without a game id label; not adopted");
                    ignored.push(container.id.clone());
                    continue;
                }
            };
            if !container.networks.contains(&self.settings.network) {
                tracing::debug!(container_id = %container.id, game_id = %game_id, networks = ?container.networks, "unrecorded container on another network; not adopted");
                ignored.push(container.id.clone());
                continue;
            }
            targets.push(Target::Orphan {
                game_id,
                container_id: container.id.clone(),
            });
        }
        targets
    }

    async fn check(&self, target: Target, ctx: &PassContext) -> Vec<Finding> {
        match target {
            Target::Current {
                record,
                container_id,
            } => self.check_current(record, container_id, ctx).await,
            Target::Missing {
                record,
                container_id,
            } => self.dispose(&record, &container_id, ctx).await,
            Target::Unwatched {
                record,
                container_id,
            } => self.adopt_unwatched(&record, &container_id, ctx).await,
            Target::Replaced {
                record,
                container_id,
            } => self.repoint(&record, &container_id, ctx).await,
            Target::Orphan {
                game_id,
                container_id,
            } => self.adopt(&game_id, &container_id, ctx).await,
        }
    }

    /// Inspects the current container of a `running` record and acts on what
    /// it shows: gone or exited (when reconciling) settle the record; an
    /// unhealthy observation not yet published is published; a healthy one
    /// after a published failure clears it (bookkeeping only, no lease).
    async fn check_current(
        &self,
        record: RuntimeRecord,
        container_id: String,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let info = match self.inspect(&container_id).await {
            Ok(Some(info)) => info,
            // Gone since the listing: the reconciler's business.
            Ok(None) if ctx.reconcile => return self.dispose(&record, &container_id, ctx).await,
            Ok(None) => return Vec::new(),
            Err(finding) => return vec![finding],
        };
        let observed_at = Utc::now();
        let mut findings = vec![Finding::Inspected(container_id.clone())];
        let observation = observation_of(&info);
        if ctx.reconcile && observation.state.is_exited() {
            findings.extend(self.observe_exit(&record, &container_id, ctx).await);
            return findings;
        }
        match assess(&observation, ctx.memory.get(&container_id)) {
            Verdict::Publish => findings.extend(
                self.publish_unhealthy(&record.game_id, &container_id, &observation, observed_at)
                    .await,
            ),
            Verdict::Recovered => {
                if let Err(e) = self.db.forget_published(&container_id).await {
                    tracing::warn!(game_id = %record.game_id, container_id, error = %e, "clearing the published observation failed");
                    findings.push(Finding::Failed(container_id));
                }
            }
            Verdict::AlreadyPublished | Verdict::Healthy => {}
        }
        findings
    }
}

/// `inspect-<unix ms>-<8 hex>`: names the pass in logs and operation rows.
fn new_pass_id(at: DateTime<Utc>) -> String {
    let mut bytes = [0u8; 4];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("inspect-{}-{hex}", at.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_ids_are_distinct() {
        let now = Utc::now();
        assert_ne!(new_pass_id(now), new_pass_id(now));
        assert!(new_pass_id(now).starts_with("inspect-"));
    }
}
