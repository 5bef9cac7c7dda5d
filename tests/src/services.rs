//! Private Redis, PostgreSQL and Docker daemons that a test may stop, kill
//! and restart: the shared test services serve every other test running at
//! the same time, so an outage is staged on a private copy. Each runs on a
//! free port (or its own socket) with its own directory under the system
//! temp dir, and is stopped and removed on drop.
//!
//! Point a [`TestEnv`](crate::TestEnv) at them with
//! [`Services`](crate::Services).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a private service may take to answer after a (re)start.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh directory `/tmp/rtm-{kind}-{random}`; short, because unix socket
/// paths inside it are limited to about 100 bytes.
fn fresh_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtm-{kind}-{}", crate::random_suffix()));
    std::fs::create_dir_all(&dir).expect("private service directory");
    dir
}

fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_DEADLINE;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("service log file")
}

/// Whether to keep data across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persistence {
    /// `--appendonly no`: a restart comes back empty (a failover to an empty
    /// replica, a restart of a cache-style deployment).
    None,
    /// `--appendonly yes --appendfsync always`, as production runs it: every
    /// acknowledged write survives a restart, even a `SIGKILL`.
    AppendOnly,
}

/// A private `redis-server` (a child of the test process).
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    /// TLS only (`--port 0 --tls-port`): the server's certificate and key,
    /// and the CA that signed them (for `redis-cli`).
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Without persistence: a restart loses everything.
    pub fn start() -> Self {
        Self::launch_new(Persistence::None)
    }

    /// With the append-only file fsynced on every write.
    pub fn with_aof() -> Self {
        Self::launch_new(Persistence::AppendOnly)
    }

    /// Serving TLS only, with `ca`'s server certificate; clients are not
    /// asked for one (`--tls-auth-clients no`).
    pub fn with_tls(ca: &crate::tls::TestCa) -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: fresh_dir("redis"),
            persistence: Persistence::None,
            tls: Some((ca.server_cert(), ca.server_key(), ca.ca_cert())),
            child: None,
        };
        redis.start_again();
        redis
    }

    fn launch_new(persistence: Persistence) -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: fresh_dir("redis"),
            persistence,
            tls: None,
            child: None,
        };
        redis.start_again();
        redis
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again on the same port and directory (with the
    /// append-only file, on the same data). Waits until it answers `PING`:
    /// while it loads its file it answers `LOADING`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "private redis is already running");
        let appendonly = match self.persistence {
            Persistence::None => ["--appendonly", "no"],
            Persistence::AppendOnly => ["--appendonly", "yes"],
        };
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => drop(cmd.args(["--port", &self.port.to_string()])),
            Some((cert, key, _)) => drop(
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .args(["--tls-auth-clients", "no"]),
            ),
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(appendonly)
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/test)");
        self.child = Some(child);
        wait_until("private redis", &self.dir.join("redis.log"), || {
            self.cli(&["ping"]) == "PONG"
        });
    }

    /// `SHUTDOWN NOSAVE` (no RDB snapshot; the append-only file, when on, is
    /// already complete) and waits for the process to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.cli(&["shutdown", "nosave"]);
        let _ = child.wait();
    }

    /// `SIGKILL`: a crash, nothing flushed beyond what fsync already wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop, then start on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// `redis-cli` against this server; its output, trimmed (errors too).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((_, _, ca)) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        cmd.args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster (initdb into a temp dir, trust auth unless
/// started [`with_password`](Self::with_password)), run as user `postgres`
/// when the tests run as root (PostgreSQL refuses root).
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    password: Option<String>,
    /// `ssl=on` with these certificate and key files (copies the server
    /// owns, in its directory).
    tls: Option<(PathBuf, PathBuf)>,
    /// PostgreSQL's default durability (`fsync` on, synchronous commit) and
    /// `pg_stat_statements` loaded, for the benchmarks; the tests' clusters
    /// run with `fsync=off`.
    durable: bool,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::launch(None, None, false)
    }

    /// A cluster with PostgreSQL's default durability (`fsync` on,
    /// `synchronous_commit` on: every commit waits for its WAL flush) and
    /// `pg_stat_statements` preloaded: what a benchmark of the write path
    /// measures against.
    pub fn durable() -> Self {
        Self::launch(None, None, true)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// TCP connections must authenticate (SCRAM) as `postgres` with
    /// `password`, as in production; [`url`](Self::url) carries it.
    pub fn with_password(password: &str) -> Self {
        Self::launch(Some(password), None, false)
    }

    /// `ssl=on` with `ca`'s server certificate (plain connections are still
    /// accepted: the client's `sslmode` decides).
    pub fn with_tls(ca: &crate::tls::TestCa) -> Self {
        Self::launch(None, Some(ca), false)
    }

    fn launch(password: Option<&str>, ca: Option<&crate::tls::TestCa>, durable: bool) -> Self {
        let dir = fresh_dir("pg");
        let tls = ca.map(|ca| {
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::copy(ca.server_cert(), &cert).expect("copy the server certificate");
            std::fs::copy(ca.server_key(), &key).expect("copy the server key");
            // PostgreSQL refuses a key others can read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the server key");
            (cert, key)
        });
        let pg = Self {
            port: free_port(),
            dir,
            bin: pg_bindir(),
            password: password.map(str::to_owned),
            tls,
            durable,
        };
        if running_as_root() {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(chowned, "chown {} to postgres", pg.dir.display());
        }
        let data = pg.data();
        let mut initdb = pg.as_owner("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C"]);
        let pwfile = pg.dir.join("pwfile");
        match password {
            None => drop(initdb.args(["-A", "trust"])),
            Some(pw) => {
                // The superuser's password, read by initdb (as postgres).
                std::fs::write(&pwfile, pw).expect("password file");
                initdb
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
        }
        let initdb = initdb.output().expect("initdb");
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A command of the cluster's bin directory, as the cluster's owner.
    fn as_owner(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if running_as_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The owner must be able to enter the working directory.
        cmd.current_dir("/");
        cmd
    }

    /// The URL of its `postgres` database (with the password, if any).
    pub fn url(&self) -> String {
        let user = match &self.password {
            Some(pw) => format!("postgres:{pw}"),
            None => "postgres".to_owned(),
        };
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster (again), on the same port and data.
    pub fn start_again(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        options.push_str(if self.durable {
            " -c shared_preload_libraries=pg_stat_statements"
        } else {
            " -c fsync=off"
        });
        if let Some((cert, key)) = &self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        self.pg_ctl(&[
            "-l",
            &self.log().display().to_string(),
            "-o",
            &options,
            "start",
        ]);
        let ready = || {
            Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        };
        wait_until("private postgres", &self.log(), ready);
    }

    /// A fast shutdown: open sessions are terminated, as in a failover or a
    /// restart for maintenance.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60"])
            .args(args)
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/proc/self` belongs to the process's effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an `initdb`, as
/// `rtm_pg_bindir` in scripts/lib.sh.
fn pg_bindir() -> PathBuf {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL under /usr/lib/postgresql/*/bin (scripts/lib.sh ensure_packages)")
}

/// A private `dockerd` with its own root, socket and containerd, started and
/// restarted by the test (never the machine's daemon). `--live-restore`
/// keeps its containers running while it is down, so a container can die
/// while nobody is listening.
pub struct PrivateDockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    pub fn start() -> Self {
        let dir = fresh_dir("dockerd");
        // An empty config file: the machine's /etc/docker/daemon.json would
        // clash with --data-root.
        std::fs::write(dir.join("daemon.json"), "{}").expect("daemon.json");
        let mut daemon = Self { dir, child: None };
        daemon.start_again();
        daemon
    }

    /// Its socket, as `RTMANAGER_DOCKER_HOST` and `docker -H` take it.
    pub fn host(&self) -> String {
        format!("unix://{}/sock", self.dir.display())
    }

    /// Starts the daemon (again) on the same root: it reattaches to the
    /// containers that kept running.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "private dockerd is already running");
        let d = self.dir.display();
        let log = append_log(&self.dir.join("log"));
        let child = Command::new("dockerd")
            .args([
                &format!("--config-file={d}/daemon.json"),
                &format!("--data-root={d}/data"),
                &format!("--exec-root={d}/exec"),
                &format!("--pidfile={d}/pid"),
                &format!("--host=unix://{d}/sock"),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--live-restore",
            ])
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("dockerd (the docker.io package)");
        self.child = Some(child);
        wait_until("private dockerd", &self.dir.join("log"), || {
            self.cli_ok(&["version"])
        });
    }

    /// SIGTERM and wait: with live-restore its containers keep running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Copies `image` from the machine's daemon (no registry here).
    pub fn load_image(&self, image: &str) {
        let loaded = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {image} | docker -H {} load",
                self.host()
            ))
            .output()
            .expect("sh");
        assert!(
            loaded.status.success(),
            "load {image}: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
    }

    pub fn cli_ok(&self, args: &[&str]) -> bool {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// A docker CLI command against this daemon; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        crate::docker(&all)
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = Command::new("docker")
                .args(["-H", &self.host(), "ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                self.cli_ok(&["rm", "-f", id]);
            }
            self.cli_ok(&["network", "prune", "-f"]);
        }
        self.stop();
        // Its containerd and shims outlive it (live-restore), and a shim
        // whose container died while the daemon was down is never told to
        // exit: end every process still working under this directory.
        for pid in processes_under(&self.dir) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        // dockerd leaves its data root bind-mounted on itself.
        let prefix = self.dir.display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = Command::new("umount").args(["-l", &mount]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ids of the processes whose command line names `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&dir)
                .then_some(pid)
        })
        .collect()
}
