//! `<job> healthcheck`, the container health check of compose (a scratch
//! image has no shell or curl, so the binary checks itself): each real
//! binary exits 0 against its own running process's `/healthz` and 1, with
//! one line naming the failure, when nothing listens there.

use std::process::{Command, Output};

use system_tests::{free_port, job_binary, TestEnv};

mod observed;

use observed::*;

/// `<job> healthcheck` with only `RTMANAGER_METRICS_ADDR` set, as a
/// container's environment would hold it among the others.
fn healthcheck(job: &str, metrics_addr: &str) -> Output {
    Command::new(job_binary(job))
        .arg("healthcheck")
        .env_clear()
        .env("RTMANAGER_METRICS_ADDR", metrics_addr)
        .output()
        .unwrap_or_else(|e| panic!("run {job} healthcheck: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_s_healthcheck_passes_against_its_running_process_and_fails_against_nothing() {
    let env = TestEnv::with(&settings(&[])).await;
    let mut fleet = Fleet::all(&env, &[]).await;
    for process in &fleet.jobs {
        let job = process.job.as_str();
        let out = healthcheck(job, &process.metrics_addr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{job} healthcheck against {}: {}{}",
            process.metrics_addr,
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with("healthy: GET http://"),
            "{job}: {}",
            text(&out.stdout)
        );
        // An unspecified listen address is checked on the loopback: the
        // shape every compose service uses (0.0.0.0:9464).
        let port = process.metrics_addr.rsplit(':').next().unwrap();
        let out = healthcheck(job, &format!("0.0.0.0:{port}"));
        assert_eq!(out.status.code(), Some(0), "{job}: {}", text(&out.stderr));

        let nothing = format!("127.0.0.1:{}", free_port());
        let out = healthcheck(job, &nothing);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{job} against {nothing}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{job}: {stderr}");
        assert!(
            stderr.contains("unhealthy") && stderr.contains("connection refused"),
            "{job}: {stderr}"
        );
    }
    // A process that serves no /healthz cannot be healthy.
    let out = healthcheck("start-job", "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("RTMANAGER_METRICS_ADDR is empty"),
        "{}",
        text(&out.stderr)
    );
    fleet.assert_running();
}
