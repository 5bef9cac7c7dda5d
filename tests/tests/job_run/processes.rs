//! The job binaries, run as production runs them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use system_tests::TestEnv;

/// Long-running job binaries, each a child process with the env's settings
/// and its log in the env's state root.
pub struct Processes {
    children: Vec<(String, Child, PathBuf)>,
}

impl Processes {
    pub fn spawn(env: &TestEnv, jobs: &[&str]) -> Self {
        let children = jobs
            .iter()
            .map(|job| {
                let log_path = env.state_root.join(format!("{job}.log"));
                let log = std::fs::File::create(&log_path).expect("job log");
                let child = Command::new(system_tests::job_binary(job))
                    .env_clear()
                    .envs(env.vars.clone())
                    .stdout(Stdio::from(log.try_clone().expect("log handle")))
                    .stderr(Stdio::from(log))
                    .spawn()
                    .unwrap_or_else(|e| panic!("spawn {job}: {e}"));
                ((*job).to_owned(), child, log_path)
            })
            .collect();
        Self { children }
    }

    /// None has exited: an outage is ridden out, never a reason to quit.
    pub fn assert_running(&mut self) {
        for (job, child, log) in &mut self.children {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("{job} exited ({status}); its log:\n{}", tail(log));
            }
        }
    }

    /// SIGTERM to each, and each exits 0 (after its relay's last pass).
    pub async fn stop(mut self) {
        for (job, mut child, log) in std::mem::take(&mut self.children) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = tokio::task::spawn_blocking(move || child.wait())
                .await
                .expect("wait task")
                .expect("wait");
            assert!(
                status.success(),
                "{job}: {status}; its log:\n{}",
                tail(&log)
            );
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(log: &PathBuf) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One pass of the `inspect-cron` binary (inspect and reconcile), which
/// exits 0.
pub async fn inspect_pass(env: &TestEnv) {
    let mut cmd = Command::new(system_tests::job_binary("inspect-cron"));
    cmd.env_clear().envs(env.vars.clone());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("inspect-cron task")
        .expect("inspect-cron");
    assert!(
        out.status.success(),
        "inspect-cron: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
