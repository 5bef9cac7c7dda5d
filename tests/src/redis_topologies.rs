//! Redis as production runs it, on loopback ports of the test's own:
//! [`RedisNode`] (one `redis-server`), [`SentinelSet`] (a master, a replica
//! and three `redis-sentinel`s) and [`RedisCluster`] (three masters joined by
//! `redis-cli --cluster create`). Every process is stopped by its pid on
//! drop, and its directory removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on now (nor on `port + offset`, for a
/// Cluster's bus port).
fn free_port(offset: u16) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Some(other) = port.checked_add(offset) else {
            continue;
        };
        if offset == 0 || std::net::TcpListener::bind(("127.0.0.1", other)).is_ok() {
            return port;
        }
    }
}

fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `redis-cli` against `127.0.0.1:port`, its reply as text.
pub fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(pw) = password {
        cmd.args(["--no-auth-warning", "-a", pw]);
    }
    let out = cmd
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli (installed by scripts/test)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One `redis-server` (or `redis-sentinel`) process, stopped on drop.
pub struct RedisNode {
    pub port: u16,
    dir: PathBuf,
    pid_file: PathBuf,
    password: Option<String>,
}

impl RedisNode {
    /// A server with `args` (config directives as `--name value`), no
    /// persistence unless `args` asks for it.
    pub fn server(password: Option<&str>, args: &[&str]) -> Self {
        Self::server_on(free_port(0), password, args)
    }

    fn server_on(port: u16, password: Option<&str>, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("rtm-redis-node-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("redis.pid");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(&pid_file)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if let Some(pw) = password {
            cmd.args(["--requirepass", pw, "--masterauth", pw]);
        }
        let status = cmd
            .args(args)
            .status()
            .expect("redis-server (installed by scripts/test)");
        assert!(status.success(), "redis-server on {port} did not start");
        let node = Self {
            port,
            dir,
            pid_file,
            password: password.map(str::to_owned),
        };
        node.wait_answering();
        node
    }

    /// A sentinel on `config` (written to its directory: sentinels rewrite it).
    fn sentinel(password: &str, config: &str) -> Self {
        let port = free_port(0);
        let dir = std::env::temp_dir().join(format!("rtm-redis-sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("sentinel.pid");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize yes\ndir {}\npidfile {}\nlogfile {}\nrequirepass {password}\n{config}",
                dir.display(),
                pid_file.display(),
                dir.join("sentinel.log").display(),
            ),
        )
        .unwrap();
        let status = Command::new("redis-sentinel")
            .arg(&conf)
            .status()
            .expect("redis-sentinel (installed by scripts/test)");
        assert!(status.success(), "redis-sentinel on {port} did not start");
        let node = Self {
            port,
            dir,
            pid_file,
            password: Some(password.to_owned()),
        };
        node.wait_answering();
        node
    }

    fn wait_answering(&self) {
        wait_until(
            &format!("redis on {} to answer", self.port),
            Duration::from_secs(10),
            || self.cli(&["PING"]) == "PONG",
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, self.password.as_deref(), args)
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
    }

    /// Sends `signal` to the process and waits until its port is closed.
    pub fn kill(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .stderr(Stdio::null())
                .status();
        }
        wait_until(
            &format!("redis on {} to stop", self.port),
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
        );
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            self.kill("TERM");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, a replica and three sentinels (quorum 2) that fail over within
/// about [`SentinelSet::FAILOVER_TIME`]. The data nodes and the sentinels
/// have passwords of their own.
pub struct SentinelSet {
    pub master: RedisNode,
    pub replica: RedisNode,
    pub sentinels: Vec<RedisNode>,
    pub name: String,
}

impl SentinelSet {
    pub const PASSWORD: &'static str = "data-node-pw";
    pub const SENTINEL_PASSWORD: &'static str = "sentinel-pw";
    /// `down-after-milliseconds` 1000, then the election and the promotion.
    pub const FAILOVER_TIME: Duration = Duration::from_secs(5);

    pub fn start() -> Self {
        let name = "rtm-test-master".to_owned();
        let master = RedisNode::server(Some(Self::PASSWORD), &[]);
        let replica = RedisNode::server(
            Some(Self::PASSWORD),
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
        );
        wait_until("the replica to sync", Duration::from_secs(20), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let monitor = format!(
            "sentinel monitor {name} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n\
             sentinel auth-pass {name} {}\n",
            master.port,
            Self::PASSWORD
        );
        let sentinels: Vec<RedisNode> = (0..3)
            .map(|_| RedisNode::sentinel(Self::SENTINEL_PASSWORD, &monitor))
            .collect();
        // A failover needs the sentinels to know each other and the replica.
        wait_until(
            "the sentinels to find each other and the replica",
            Duration::from_secs(30),
            || {
                sentinels.iter().all(|s| {
                    let info = s.cli(&["SENTINEL", "master", &name]);
                    let field = |f: &str| {
                        let mut lines = info.lines();
                        lines.find(|l| *l == f)?;
                        lines.next().map(str::to_owned)
                    };
                    field("num-other-sentinels").as_deref() == Some("2")
                        && field("num-slaves").as_deref() == Some("1")
                })
            },
        );
        Self {
            master,
            replica,
            sentinels,
            name,
        }
    }

    /// `RTMANAGER_REDIS_SENTINEL_ADDRS`.
    pub fn sentinel_addrs(&self) -> String {
        self.sentinels
            .iter()
            .map(RedisNode::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The settings that point a process at the sentinels.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RTMANAGER_REDIS_MASTER_ADDR", String::new()),
            ("RTMANAGER_REDIS_SENTINEL_ADDRS", self.sentinel_addrs()),
            ("RTMANAGER_REDIS_SENTINEL_MASTER", self.name.clone()),
            (
                "RTMANAGER_REDIS_SENTINEL_PASSWORD",
                Self::SENTINEL_PASSWORD.to_owned(),
            ),
            ("RTMANAGER_REDIS_PASSWORD", Self::PASSWORD.to_owned()),
        ]
    }

    /// The master's address as every sentinel names it, once they agree.
    pub fn named_master(&self) -> Option<String> {
        let named: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| {
                s.cli(&["SENTINEL", "get-master-addr-by-name", &self.name])
                    .replace('\n', ":")
            })
            .collect();
        named
            .iter()
            .all(|n| n == &named[0])
            .then(|| named[0].clone())
    }

    /// Kills the master (SIGKILL: a crash, nothing flushed).
    pub fn kill_master(&self) {
        self.master.kill("KILL");
    }
}

/// Three masters, no replicas, all 16384 slots covered.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisNode> = (0..3)
            .map(|_| {
                let port = free_port(10_000);
                RedisNode::server_on(
                    port,
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(node.addr());
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        wait_until("the cluster to be ok", Duration::from_secs(30), || {
            nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        Self { nodes }
    }

    /// The slot of `key`, as the Cluster computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT")
    }
}
