//! The processes that do not use Docker start without it: a `hostname`-mode
//! prober (compose runs it on galaxy-net with no socket mounted) and
//! `rest-gateway sync-file-sd`, each the real binary with
//! `RTMANAGER_DOCKER_HOST` naming a socket that does not exist. A
//! `container_ip` prober, which does use Docker, refuses to start that way
//! (the contrast that shows the socket really is missing).

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use system_tests::job_process::JobProcess;
use system_tests::{job_binary, TestEnv};

mod observed;

use observed::*;

/// `unix://` of a socket path that does not exist.
fn missing_socket(env: &TestEnv) -> String {
    let path = env.state_root.join("no-docker").join("docker.sock");
    assert!(!path.exists());
    format!("unix://{}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostname_prober_starts_and_is_ready_without_a_docker_socket() {
    let env = TestEnv::with(&settings(&[])).await;
    let host = missing_socket(&env);
    let prober = JobProcess::ready(
        &env,
        "healthz-prober",
        &[],
        &[
            ("RTMANAGER_DOCKER_HOST", host.clone()),
            ("RTMANAGER_PROBE_ADDRESS_MODE", "hostname".to_owned()),
        ],
    )
    .await;
    let (status, body) = readyz(&prober).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}})
        ),
        "{}",
        tail(&prober)
    );
    let (status, _) = healthz(&prober).await;
    assert_eq!(status, 200);

    // container_ip mode inspects engines: without the socket it stops at
    // start-up, naming the setting.
    let ip_prober = JobProcess::spawn(
        "healthz-prober",
        &env.vars,
        &[
            ("RTMANAGER_DOCKER_HOST", host),
            ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip".to_owned()),
        ],
        &[],
    );
    let output = {
        let out = &ip_prober;
        env.eventually(
            "the container_ip prober to give up",
            Duration::from_secs(30),
            || async {
                let text = out.output();
                text.contains("RTMANAGER_DOCKER_HOST").then_some(text)
            },
        )
        .await
    };
    let status = ip_prober.dies_within(Duration::from_secs(10)).await;
    assert!(!status.success(), "{output}");
    prober.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_file_sd_writes_the_inventory_without_a_docker_socket() {
    let env = TestEnv::new().await;
    let out = env.state_root.join("targets.json");
    let run = Command::new(job_binary("rest-gateway"))
        .args(["sync-file-sd", "--out", out.to_str().unwrap()])
        .env_clear()
        .envs(env.vars.iter().cloned())
        .env("RTMANAGER_DOCKER_HOST", missing_socket(&env))
        .output()
        .expect("run rest-gateway sync-file-sd");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the file_sd file")).unwrap();
    assert_eq!(written, json!([]));
}
