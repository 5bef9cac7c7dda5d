//! Fail points for crash tests: a process that dies at an exact step.
//!
//! Compiled in only by the `failpoints` cargo feature of `shared` (each job
//! forwards it: `cargo build -p healthz-prober --features failpoints`); a
//! build without it, as every release build is, keeps no trace of them.
//! With the feature, the process arms the points named in `FAILPOINTS` at
//! start-up ([`arm_from_env`], called by [`crate::bootstrap::settings`]), in
//! the `fail` crate's syntax: `FAILPOINTS=prober-after-streak=return`.
//!
//! A [`crash_point`] armed with `return` aborts the process on the spot
//! (`std::process::abort`): no destructor, no graceful shutdown, no lease
//! released, nothing flushed, which is what a `kill -9` at that step leaves
//! behind, but at a step chosen exactly rather than where a sleep puts it.
//! The `fail` crate's other actions (`sleep(ms)`, `pause`, `N*return`, ...)
//! work as it documents.
//!
//! A [`stall_point`] armed with `return(MS)` holds the task that reaches
//! it for `MS` milliseconds without blocking its thread: a loop wedged on a
//! future that does not complete, while the rest of the process (its
//! `/healthz`) runs on. (`sleep(MS)` also works, but blocks a worker thread.)
//! `FAILPOINTS=main-loop-stall=3*off->return(600000)` lets a main loop go
//! round three times, then wedges it for ten minutes.
//!
//! The points, by name (README "Fail points" says which test runs each):
//! - `prober-after-streak`: healthz-prober, after the Redis streak decided a
//!   `probe_failed` or `probe_recovered`, before the PostgreSQL commit.
//! - `start-before-pull`: a start, before the image pull.
//! - `docker-after-create`: the Docker adapter, between creating a container
//!   and starting it.
//! - `start-after-create`: a start, its container created and started,
//!   before the commit.
//! - `start-commit-reply-lost` (a plain `fail_point!`): a start's commit
//!   went through but reports an error.
//! - `start-after-commit`: a start, after its commit.
//! - `stop-after-intent`: a stop, its intent committed, before the Docker
//!   stop.
//! - `stop-after-container-stop`: a stop, the container stopped, before the
//!   record is marked.
//! - `stop-after-mark`: a stop, the record marked, before the answer.
//! - `cleanup-after-remove`: a cleanup, the container removed, before the
//!   record is marked.
//! - `recreate-after-stop`: a restart or patch, between its inner stop and
//!   its inner start.
//! - `inspect-before-commit`: inspect-cron, an action's unit of work
//!   written, before its fenced commit.
//! - `job-before-result`: start-job and stop-job, after an operation's
//!   outcome, before its result is committed.
//! - `main-loop-stall` (a stall point): each long-running process's main
//!   loop, at the start of an iteration (`Heartbeat::beat`).

/// Arms the fail points named in `FAILPOINTS` for the rest of the process.
/// Without the `failpoints` feature, nothing.
pub fn arm_from_env() {
    #[cfg(feature = "failpoints")]
    {
        // The scenario guard would disarm everything when dropped; a crash
        // test's process keeps its points until it dies.
        std::mem::forget(fail::FailScenario::setup());
        if let Ok(points) = std::env::var("FAILPOINTS") {
            tracing::warn!(%points, "fail points armed: this build is for crash tests only");
        }
    }
}

/// Dies here, at once, when the point `name` is armed with `return`.
/// Without the `failpoints` feature, nothing.
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        tracing::warn!(failpoint = name, "fail point reached: aborting the process");
        std::process::abort()
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Holds the calling task here for `MS` milliseconds when the point `name`
/// is armed with `return(MS)` (see the module doc). Without the
/// `failpoints` feature, nothing.
pub async fn stall_point(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let stall = fail::eval(name, |arg| arg.and_then(|ms| ms.trim().parse::<u64>().ok()));
        if let Some(Some(ms)) = stall {
            tracing::warn!(
                failpoint = name,
                stall_ms = ms,
                "stall point reached: holding this task"
            );
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
