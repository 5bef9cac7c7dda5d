//! A job binary running as a process of its own, as in production: its own
//! Redis connections, its own metrics listener, its output kept in a file
//! for the test to read. Killed (by its pid) on drop.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct JobProcess {
    pub job: String,
    pub metrics_addr: String,
    child: Option<Child>,
    log: PathBuf,
}

impl JobProcess {
    /// Starts `job` with `vars` (a test environment's), then `extra` on top,
    /// and a metrics listener on a free loopback port.
    pub fn spawn(
        job: &str,
        vars: &[(String, String)],
        extra: &[(&str, String)],
        args: &[&str],
    ) -> Self {
        Self::spawn_binary(job, &crate::job_binary(job), vars, extra, args)
    }

    /// [`Self::spawn`] of the binary at `binary` (another build of `job`:
    /// the upgrade test runs the previous release's).
    pub fn spawn_binary(
        job: &str,
        binary: &std::path::Path,
        vars: &[(String, String)],
        extra: &[(&str, String)],
        args: &[&str],
    ) -> Self {
        let port = crate::free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("rtm-{job}-{port}.log"));
        let out = std::fs::File::create(&log).expect("job log file");
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(vars.iter().cloned())
            .env("RTMANAGER_METRICS_ADDR", &metrics_addr)
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {job}: {e}"));
        Self {
            job: job.to_owned(),
            metrics_addr,
            child: Some(child),
            log,
        }
    }

    /// `GET /metrics`; `None` while the listener is not up.
    pub async fn metrics(&self) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(&self.metrics_addr)
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.starts_with("HTTP/1.1 200").then(|| {
            text.split_once("\r\n\r\n")
                .map_or(String::new(), |(_, b)| b.to_owned())
        })
    }

    /// The Redis master the process reports (`rtmanager_redis_master_info`).
    pub async fn redis_master(&self) -> Option<String> {
        let metrics = self.metrics().await?;
        metrics
            .lines()
            .filter(|l| l.starts_with("rtmanager_redis_master_info{") && l.ends_with(" 1"))
            .find_map(|l| {
                let addr = l.split("addr=\"").nth(1)?;
                Some(addr.split('"').next()?.to_owned())
            })
    }

    /// The process id, while it runs (for its CPU time in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends `signal` (a `kill` name: `HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running child");
        let sent = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {}", self.job);
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running child");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
    }

    /// SIGTERM, the exit, and everything the process wrote, its shutdown
    /// included.
    pub async fn stop_with_output(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running child");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        (status, self.output())
    }

    /// [`Self::spawn`] with a test environment's settings, returning once
    /// `/healthz` answers (start-up done: migrations, Redis, Docker).
    pub async fn ready(
        env: &crate::TestEnv,
        job: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> Self {
        Self::until_healthy(env, Self::spawn(job, &env.vars, extra, args)).await
    }

    /// Returns `process` once its `/healthz` answers.
    pub async fn until_healthy(env: &crate::TestEnv, process: Self) -> Self {
        let job = process.job.clone();
        let health = format!("http://{}/healthz", process.metrics_addr);
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        env.eventually(&format!("{job} up"), Duration::from_secs(60), || async {
            let answer = http.get(&health).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        process
    }

    /// SIGTERM, then the exit status, which must come within `bound`.
    pub async fn terminate_within(self, bound: Duration) -> ExitStatus {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        self.dies_within(bound).await
    }

    /// Waits for the process to end (by itself: a fail point aborting it;
    /// or after a signal) within `bound`; killed if it does not.
    pub async fn dies_within(self, bound: Duration) -> ExitStatus {
        self.exits_within(bound).await.0
    }

    /// [`Self::dies_within`], with everything the process wrote.
    pub async fn exits_within(mut self, bound: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running child");
        let waited = tokio::time::timeout(bound, async {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match waited {
            Ok(status) => (status, self.output()),
            Err(_) => {
                let _ = child.kill();
                panic!("{}: did not die within {bound:?}", self.job)
            }
        }
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A child process that is killed and reaped when dropped: a test that fails
/// before it stops its child leaves no process behind. Derefs to the
/// [`Child`], so it waits and signals as one.
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Spawns `cmd`, panicking with `what` if it cannot start.
    pub fn spawn(cmd: &mut Command, what: &str) -> Self {
        Self(cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}")))
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A child already waited for is not signalled again (std keeps its
        // status), so a reused pid is never hit.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
