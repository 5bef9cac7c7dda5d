//! Shared pieces of the benchmark binaries (`tests/src/bin/bench-*.rs`):
//! the quick switch, order statistics, per-process CPU and memory read from
//! `/proc`, and the Markdown section each benchmark prints to stdout for
//! `scripts/bench` to collect into `docs/benchmarks.md`. Progress goes to
//! stderr. No figure here is ever asserted: benchmarks report, tests check.

use std::path::PathBuf;
use std::time::Duration;

/// `BENCH_QUICK=1` (set by `scripts/bench --quick`): fewer rounds and units.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// `full` rounds, or `quick` of them under `--quick`.
pub fn rounds(full: usize, quick_rounds: usize) -> usize {
    if quick() {
        quick_rounds
    } else {
        full
    }
}

/// A sibling binary of the running one (the benchmarks run from
/// `target/release`, next to the job binaries `scripts/bench` builds).
pub fn sibling_binary(name: &str) -> PathBuf {
    let bin = std::env::current_exe()
        .expect("benchmark executable path")
        .parent()
        .expect("target directory")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: scripts/bench builds it (cargo build --release --bins)",
        bin.display()
    );
    bin
}

/// The `q`-quantile (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn median(samples: &[Duration]) -> Duration {
    quantile(samples, 0.5)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// User + system CPU time of process `pid` so far (`/proc/<pid>/stat`
/// fields 14 and 15), or `None` when it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / clock_ticks()))
}

/// CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`): a
/// bare loop on a thread of its own (a current-thread runtime) counts
/// exactly its own work.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory of Docker itself (`dockerd`, `containerd` and every
/// `containerd-shim*`), summed over its processes: what the engine costs
/// per container, apart from the container's own processes.
pub fn docker_daemons_rss() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| {
                let comm = comm.trim();
                comm == "dockerd" || comm == "containerd" || comm.starts_with("containerd-shim")
            })
        })
        .filter_map(process_rss)
        .sum()
}

/// The pid of the process listening on TCP `port` (from `/proc/net/tcp*`
/// and the `/proc/<pid>/fd` links), used to find the Redis server.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            let Some(local) = cols.get(1) else { continue };
            let listening = cols.get(3) == Some(&"0A");
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                if let Some(inode) = cols.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The Redis server of `TEST_REDIS_ADDR` (`host:port`), when local.
pub fn redis_server_pid() -> Option<u32> {
    let addr = std::env::var("TEST_REDIS_ADDR").ok()?;
    let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
    pid_listening_on(port)
}

/// One row of a benchmark's table: our figure against its peer's, measured
/// in the same run, the target and whether it is met.
pub struct Figure {
    pub name: String,
    pub ours: String,
    pub peer: String,
    /// ours / peer, as measured.
    pub ratio: f64,
    pub target: String,
    /// `None` when the figure has no target (reported only).
    pub met: Option<bool>,
}

impl Figure {
    /// A figure whose target is a maximum ratio.
    pub fn at_most(name: &str, ours: String, peer: String, ratio: f64, max: f64) -> Self {
        Self {
            name: name.to_owned(),
            ours,
            peer,
            ratio,
            target: format!("≤ {max}x"),
            met: Some(ratio <= max),
        }
    }

    /// A figure whose target is a minimum ratio (a throughput).
    pub fn at_least(name: &str, ours: String, peer: String, ratio: f64, min: f64) -> Self {
        Self {
            name: name.to_owned(),
            ours,
            peer,
            ratio,
            target: format!("≥ {min}x"),
            met: Some(ratio >= min),
        }
    }

    /// A figure reported without a target.
    pub fn info(name: &str, ours: String, peer: String, ratio: f64) -> Self {
        Self {
            name: name.to_owned(),
            ours,
            peer,
            ratio,
            target: "—".to_owned(),
            met: None,
        }
    }
}

/// Prints one benchmark's Markdown section: a heading, what was measured
/// (`about`), the table of figures, free `notes`, and the command.
pub fn print_section(title: &str, about: &str, figures: &[Figure], notes: &[String], cmd: &str) {
    println!("## {title}\n");
    println!("{about}\n");
    println!("| figure | ours | peer | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for f in figures {
        let met = match f.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "—",
        };
        println!(
            "| {} | {} | {} | {:.2}x | {} | {met} |",
            f.name, f.ours, f.peer, f.ratio, f.target
        );
    }
    println!();
    for note in notes {
        println!("{note}\n");
    }
    println!("Reproduce: `{cmd}`\n");
}

/// One per-unit cost for the scale model (`bench-scale`, section 8): a line
/// `SCALE <key> <value> <unit>` on stderr, which `scripts/bench` collects
/// from every benchmark of the run.
pub fn scale(key: &str, value: f64, unit: &str) {
    eprintln!("SCALE {key} {value:.3} {unit}");
}

/// Logs to stderr, warnings and up, before a [`crate::TestEnv`] would set up
/// its own subscriber (which writes to stdout, where the report goes).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .try_init();
}

/// The processes whose parent is `parent` (`/proc/<pid>/stat` field 4).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// The port of a `postgres://…@host:port/db` URL.
pub fn url_port(url: &str) -> Option<u16> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// The PostgreSQL server listening on `port`, when local: its postmaster and
/// every process it started (backends, WAL writer, checkpointer, ...), as
/// they are now.
pub fn postgres_pids(port: u16) -> Vec<u32> {
    let Some(postmaster) = pid_listening_on(port) else {
        return Vec::new();
    };
    let mut pids = vec![postmaster];
    pids.extend(children_of(postmaster));
    pids
}

/// CPU time so far of the processes of `pids` still there, each with the
/// CPU of its children it has reaped (`/proc/<pid>/stat` fields 14 to 17):
/// a PostgreSQL backend that exits moves into its postmaster's count
/// instead of leaving the sum, which so only grows (a fall panicked a
/// subtraction), and backends that came and went since the list was made
/// are counted once reaped.
pub fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|p| process_cpu_and_reaped(*p)).sum()
}

fn process_cpu_and_reaped(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3: utime, stime, cutime, cstime are 14 to 17.
    let ticks: f64 = (11..15)
        .map(|i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum::<Option<f64>>()?;
    Some(Duration::from_secs_f64(ticks / clock_ticks()))
}

/// User + system CPU time of the child processes this one has waited for
/// (`getrusage(RUSAGE_CHILDREN)`): wrk's and pgbench's, around a run.
pub fn waited_children_cpu() -> Duration {
    #[allow(unsafe_code)]
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A `perf record` (software `cpu-clock` event, which works in VMs without
/// hardware counters) of some processes, for a profile of where their CPU
/// goes. `None` when `perf` is missing or refuses.
pub struct Profile {
    child: std::process::Child,
    data: PathBuf,
}

/// What [`Profile::finish`] read: self-time shares (percent of all samples)
/// by command name, and the top symbols (`command dso symbol`).
pub struct ProfileReport {
    pub by_command: Vec<(String, f64)>,
    pub top: Vec<(String, f64)>,
}

impl Profile {
    pub fn start(pids: &[u32], data: PathBuf) -> Option<Self> {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let child = std::process::Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "997", "-p"])
            .arg(list.join(","))
            .arg("-o")
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // perf attaches within a few milliseconds.
        std::thread::sleep(Duration::from_millis(300));
        Some(Self { child, data })
    }

    /// Stops the recording (SIGINT, as perf expects) and reads its report.
    pub fn finish(mut self) -> Option<ProfileReport> {
        #[allow(unsafe_code)]
        // SAFETY: signalling our own child, not yet waited for.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().ok()?;
        let report = |sort: &str| -> Option<Vec<(String, f64)>> {
            let out = std::process::Command::new("perf")
                .args(["report", "-q", "--stdio", "--no-children", "--sort", sort])
                .arg("-i")
                .arg(&self.data)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            Some(
                text.lines()
                    .filter_map(|l| {
                        let l = l.trim();
                        let (pct, rest) = l.split_once('%')?;
                        let pct: f64 = pct.trim().parse().ok()?;
                        let name = rest.split_whitespace().collect::<Vec<_>>().join(" ");
                        Some((name, pct))
                    })
                    .collect(),
            )
        };
        let by_command = report("comm")?;
        let top = report("comm,dso,sym")?;
        let _ = std::fs::remove_file(&self.data);
        if by_command.is_empty() {
            return None;
        }
        Some(ProfileReport { by_command, top })
    }
}

impl ProfileReport {
    /// `comm a% · comm b% …` and the top `n` symbols, as Markdown lines.
    pub fn markdown(&self, n: usize) -> String {
        let commands: Vec<String> = self
            .by_command
            .iter()
            .filter(|(_, p)| *p >= 1.0)
            .map(|(c, p)| format!("`{c}` {p:.0}%"))
            .collect();
        let top: Vec<String> = self
            .top
            .iter()
            .take(n)
            .map(|(s, p)| format!("{p:.1}% `{s}`"))
            .collect();
        format!(
            "CPU samples by process: {}. Top self-time symbols: {}.",
            commands.join(", "),
            top.join("; ")
        )
    }
}
