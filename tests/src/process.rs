//! A job binary run as a process of its own, with the test's settings and a
//! `/healthz` of its own: started and waited for, stopped by SIGTERM within
//! a bound, or left to die at a fail point. Killed on drop.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{job_binary, TestEnv};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A job binary with the test's settings, serving `/healthz` on its own port.
pub struct Process {
    child: Child,
    health: String,
}

impl Process {
    pub async fn spawn(
        env: &TestEnv,
        api_token: &str,
        job: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> Self {
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(job_binary(job))
            .args(args)
            .env_clear()
            .envs(env.vars.clone())
            .env("RTMANAGER_METRICS_ADDR", &metrics)
            .env("RTMANAGER_API_TOKENS", api_token)
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {job}: {e}"));
        let process = Self {
            child,
            health: format!("http://{metrics}/healthz"),
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        env.eventually(&format!("{job} up"), Duration::from_secs(60), || async {
            let answer = http.get(&process.health).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        process
    }

    /// SIGTERM, then the exit status, which must come within `bound`.
    pub async fn terminate_within(mut self, bound: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let waited = tokio::time::timeout(bound, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match waited {
            Ok(status) => status,
            Err(_) => {
                let _ = self.child.kill();
                panic!("no exit within {bound:?} of SIGTERM (pid {pid})");
            }
        }
    }
}

impl Process {
    /// Waits for the process to end by itself (a fail point aborting it),
    /// within `bound`.
    pub async fn dies_within(mut self, bound: Duration) -> ExitStatus {
        let waited = tokio::time::timeout(bound, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("the process did not die within {bound:?}"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
