//! Rolling upgrades: the previous release's start-job, stop-job and
//! rest-gateway (built from git history, the commit in
//! `tests/upgrade-baseline`) run against the schema of this release's
//! migrations, through a start, a stop and a gateway read. Slow (a debug
//! build of three binaries the first time; reused from
//! `.local/upgrade-baseline/` after), so behind `#[ignore]`: `scripts/test
//! --long` runs it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use system_tests::job_process::JobProcess;
use system_tests::{free_port, TestEnv, ENGINE};

const TOKEN: &str = "upgrade-side-by-side-test-token-0123456789";
const JOBS: [&str; 3] = ["start-job", "stop-job", "rest-gateway"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The baseline commit: the first line of `tests/upgrade-baseline`.
fn baseline() -> String {
    let text = std::fs::read_to_string(root().join("tests/upgrade-baseline")).unwrap();
    let commit = text.lines().next().unwrap().trim().to_owned();
    assert!(commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()));
    commit
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The baseline's sources (a detached git worktree) and its debug build of
/// [`JOBS`], both kept under `.local/upgrade-baseline/` for the next run.
fn build_baseline(commit: &str) -> (PathBuf, PathBuf) {
    let base = root().join(".local/upgrade-baseline");
    let src = base.join(format!("src-{}", &commit[..12]));
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&base).unwrap();
        let _ = Command::new("git")
            .current_dir(root())
            .args(["worktree", "prune"])
            .output();
        run(
            Command::new("git")
                .current_dir(root())
                .args(["worktree", "add", "--detach"])
                .arg(&src)
                .arg(commit),
            "git worktree add of the baseline",
        );
    }
    let target = base.join("target");
    let mut build = Command::new("cargo");
    build
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--locked"]);
    for job in JOBS {
        build.args(["-p", job]);
    }
    let started = std::time::Instant::now();
    run(&mut build, "cargo build of the baseline's jobs");
    eprintln!("baseline {commit} built in {:?}", started.elapsed());
    (src, target.join("debug"))
}

fn migrations(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect()
}

async fn results_for(env: &TestEnv, game: &str) -> Vec<HashMap<String, String>> {
    env.read_stream(&env.config.common.streams.job_results)
        .await
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f["game_id"] == game)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds the previous release from git history: scripts/test --long"]
async fn the_previous_release_runs_against_the_new_schema() {
    let commit = baseline();
    let (src, bin) = tokio::task::spawn_blocking(move || build_baseline(&commit))
        .await
        .unwrap();
    let new_only: Vec<String> = migrations(&root())
        .difference(&migrations(&src))
        .cloned()
        .collect();
    assert!(
        !new_only.is_empty(),
        "the baseline has every migration: the test would prove nothing"
    );
    // The env migrates with this release's migrations.
    let env = TestEnv::with(&[("RTMANAGER_API_TOKENS", TOKEN)]).await;
    let http_addr = format!("127.0.0.1:{}", free_port());
    let mut old = Vec::new();
    for job in JOBS {
        let extra = [("RTMANAGER_INTERNAL_HTTP_ADDR", http_addr.clone())];
        let process = JobProcess::spawn_binary(job, &bin.join(job), &env.vars, &extra, &[]);
        old.push(JobProcess::until_healthy(&env, process).await);
    }
    let game = env.game("upgrade");
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("image_ref", ENGINE),
            ("requested_at_ms", "1775121700000"),
        ],
    )
    .await;
    let started = env
        .eventually("the start result", Duration::from_secs(60), || async {
            results_for(&env, game.as_str()).await.into_iter().next()
        })
        .await;
    assert_eq!(started["outcome"], "success", "{started:?}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let shown = http
        .get(format!(
            "http://{http_addr}/api/v1/internal/runtimes/{game}"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    env.xadd(
        &env.config.stop_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("reason", "cancelled"),
            ("requested_at_ms", "1775121700001"),
        ],
    )
    .await;
    let stopped = env
        .eventually("the stop result", Duration::from_secs(60), || async {
            results_for(&env, game.as_str()).await.get(1).cloned()
        })
        .await;
    assert_eq!(stopped["outcome"], "success", "{stopped:?}");
    for process in old {
        let job = process.job.clone();
        let (status, output) = process.stop_with_output().await;
        assert!(status.success(), "old {job}: {status:?}\n{output}");
    }
}
