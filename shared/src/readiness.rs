//! Readiness: can the process do its work right now?
//!
//! `/readyz` runs every registered check at once, each bounded by
//! [`CHECK_TIMEOUT`], so it answers within about that however a dependency
//! fails (refusing, hanging, half-open): 200
//! `{"status":"ready","checks":{...}}`, or 503
//! `{"status":"not_ready","failed":[...],"checks":{...}}` naming the failed
//! checks (sorted, then `shutting_down` once the process stops). Check
//! values are `ok` or the check's failure word (`failed`; `pending` for the
//! gateway's migrations); why a check failed goes to the log, not the answer.
//!
//! The checks are cheap and speak only adapter verbs: `postgres` (`SELECT 1`),
//! `redis` (`PING`), `docker` (`/_ping`, where the process uses Docker),
//! `consumer_group` (start-job, stop-job: the group exists, `XINFO GROUPS`).
//! Each evaluation also sets `rtmanager_ready{check}` (1 or 0); `/metrics`
//! evaluates before it encodes, so the gauges are as fresh as the scrape.
//! Liveness is the other question (`crate::liveness`): a dependency away
//! makes a process unready, never dead.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{CheckLabels, Metrics};

/// Bound on each check: an answer within it or the check failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
struct Check {
    name: &'static str,
    /// What the answer says when the check fails.
    failed_as: &'static str,
    run: CheckFn,
}

/// The readiness checks of one process. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    checks: Arc<RwLock<Vec<Check>>>,
    shutdown: Arc<Mutex<Option<CancellationToken>>>,
    metrics: Metrics,
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Each check's value: `ok` or its failure word.
    pub checks: BTreeMap<&'static str, &'static str>,
    /// The failed checks, sorted, then `shutting_down` when the process stops.
    pub failed: Vec<&'static str>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.failed.is_empty()
    }

    /// The `/readyz` body.
    pub fn body(&self) -> serde_json::Value {
        if self.is_ready() {
            serde_json::json!({"status": "ready", "checks": self.checks})
        } else {
            serde_json::json!({"status": "not_ready", "failed": self.failed, "checks": self.checks})
        }
    }
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            checks: Arc::default(),
            shutdown: Arc::default(),
            metrics,
        }
    }

    /// Adds (or replaces) the check `name`; its failure reads `failed`.
    pub fn add<F, Fut, E>(&self, name: &'static str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.add_as(name, "failed", check);
    }

    /// [`Self::add`] with another failure word.
    pub fn add_as<F, Fut, E>(&self, name: &'static str, failed_as: &'static str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let check = Arc::new(move || -> BoxFuture<'static, Result<(), String>> {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        let mut checks = self.checks.write().expect("readiness checks poisoned");
        checks.retain(|c| c.name != name);
        checks.push(Check {
            name,
            failed_as,
            run: check,
        });
    }

    /// Drops the check `name` (a process that does not use that dependency).
    pub fn remove(&self, name: &str) {
        self.checks
            .write()
            .expect("readiness checks poisoned")
            .retain(|c| c.name != name);
        self.metrics.ready.remove(&CheckLabels {
            check: name.to_owned(),
        });
    }

    /// From the cancellation of `shutdown` on, the process is not ready
    /// (`shutting_down`): it is draining.
    pub fn stop_on(&self, shutdown: CancellationToken) {
        *self.shutdown.lock().expect("readiness shutdown poisoned") = Some(shutdown);
    }

    /// Runs every check at once, each within [`CHECK_TIMEOUT`], and sets
    /// `rtmanager_ready{check}`.
    pub async fn evaluate(&self) -> ReadinessReport {
        let checks: Vec<Check> = self
            .checks
            .read()
            .expect("readiness checks poisoned")
            .clone();
        let results = futures_util::future::join_all(checks.iter().map(|check| async {
            match tokio::time::timeout(CHECK_TIMEOUT, (check.run)()).await {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    tracing::warn!(check = check.name, %error, "readiness check failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        check = check.name,
                        timeout_ms = CHECK_TIMEOUT.as_millis() as u64,
                        "readiness check timed out"
                    );
                    false
                }
            }
        }))
        .await;
        let mut report = ReadinessReport {
            checks: BTreeMap::new(),
            failed: Vec::new(),
        };
        for (check, ok) in checks.iter().zip(results) {
            report
                .checks
                .insert(check.name, if ok { "ok" } else { check.failed_as });
            if !ok {
                report.failed.push(check.name);
            }
            self.metrics
                .ready
                .get_or_create(&CheckLabels {
                    check: check.name.to_owned(),
                })
                .set(i64::from(ok));
        }
        report.failed.sort_unstable();
        let stopping = self
            .shutdown
            .lock()
            .expect("readiness shutdown poisoned")
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled);
        if stopping {
            report.failed.push("shutting_down");
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failed_and_hung_checks_are_named_and_the_answer_is_bounded() {
        let metrics = Metrics::new();
        let readiness = Readiness::new(metrics.clone());
        readiness.add("redis", || async { Ok::<_, String>(()) });
        readiness.add("postgres", || async { Err("connection refused") });
        readiness.add("docker", || async {
            std::future::pending::<Result<(), String>>().await
        });
        readiness.add_as("migrations", "pending", || async { Err("1 missing") });
        let report = readiness.evaluate().await;
        assert_eq!(report.failed, ["docker", "migrations", "postgres"]);
        assert_eq!(
            report.body(),
            serde_json::json!({"status": "not_ready", "failed": ["docker", "migrations", "postgres"],
                "checks": {"docker": "failed", "migrations": "pending", "postgres": "failed", "redis": "ok"}})
        );
        let text = metrics.encode();
        assert!(
            text.contains("rtmanager_ready{check=\"redis\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rtmanager_ready{check=\"docker\"} 0"),
            "{text}"
        );

        readiness.remove("docker");
        readiness.remove("postgres");
        readiness.remove("migrations");
        let shutdown = CancellationToken::new();
        readiness.stop_on(shutdown.clone());
        assert!(readiness.evaluate().await.is_ready());
        assert!(!metrics.encode().contains("check=\"docker\""));
        shutdown.cancel();
        assert_eq!(readiness.evaluate().await.failed, ["shutting_down"]);
    }
}
