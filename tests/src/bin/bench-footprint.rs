//! Footprint (issue 14, item 7): binary size, cold start to ready (`/healthz`
//! answers 200) and idle RSS (`VmRSS` from `/proc` a few seconds after
//! ready) of each of the seven release binaries, against a bare tokio+hyper
//! binary built in the same run (`bench-bare-hyper`), started alternately
//! with each of them.
//!
//! Run with `scripts/bench --only footprint`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use system_tests::bench::{self, Figure};
use system_tests::job_process::KillOnDrop;
use system_tests::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "bench-footprint-token-0123456789abcdef0123";
const IDLE: Duration = Duration::from_secs(3);

/// Whether `GET /healthz` on `addr` answers 200.
async fn healthy(addr: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head)).await,
        Ok(Ok(_))
    ) && head.starts_with(b"HTTP/1.1 200")
}

#[derive(Clone, Copy)]
struct Sample {
    ready: Duration,
    rss: u64,
    anon: u64,
    threads: u64,
    /// Resident bytes of the binary's own mappings, by kind, and of the
    /// other files (libc, the loader), from `/proc/<pid>/smaps`.
    text: u64,
    rodata: u64,
    data: u64,
    libs: u64,
    /// Proportional set size: the file pages shared with other processes
    /// of the same binary count once among them.
    pss: u64,
}

/// What `/proc/<pid>/smaps` says is resident: the binary's executable,
/// read-only and writable mappings, the other files, and the PSS total.
fn smaps(pid: u32) -> (u64, u64, u64, u64, u64) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let exe = exe.to_string_lossy().into_owned();
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut code, mut rodata, mut data, mut libs, mut pss) = (0, 0, 0, 0, 0);
    // The mapping each Rss line belongs to: 0 own code, 1 own read-only,
    // 2 own writable, 3 another file, 4 anonymous.
    let mut kind = 4;
    let kib = |line: &str| -> u64 {
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let first = cols.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let perms = cols.next().unwrap_or("");
            let path = cols.nth(3).unwrap_or("");
            kind = if path == exe {
                if perms.contains('x') {
                    0
                } else if perms.contains('w') {
                    2
                } else {
                    1
                }
            } else if path.starts_with('/') {
                3
            } else {
                4
            };
        } else if first == "Rss:" {
            let v = kib(line);
            match kind {
                0 => code += v,
                1 => rodata += v,
                2 => data += v,
                3 => libs += v,
                _ => {}
            }
        } else if first == "Pss:" {
            pss += kib(line);
        }
    }
    (code, rodata, data, libs, pss)
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Spawns `cmd`, times it to a healthy `/healthz` on `addr`, idles, reads /proc.
async fn sample(mut cmd: Command, addr: &str, what: &str) -> Sample {
    let started = Instant::now();
    let child = KillOnDrop::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        what,
    );
    while !healthy(addr).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready = started.elapsed();
    tokio::time::sleep(IDLE).await;
    let pid = child.id();
    let (text, rodata, data, libs, pss) = smaps(pid);
    Sample {
        text,
        rodata,
        data,
        libs,
        pss,
        ready,
        rss: bench::process_rss(pid).expect("rss"),
        anon: status_field(pid, "RssAnon:") * 1024,
        threads: status_field(pid, "Threads:"),
    }
}

/// One line of the where-the-bytes-are table: medians of `samples`.
fn row(name: &str, samples: &[Sample]) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        mib(median_by(samples, |s| s.rss)),
        mib(median_by(samples, |s| s.pss)),
        mib(median_by(samples, |s| s.anon)),
        mib(median_by(samples, |s| s.text)),
        mib(median_by(samples, |s| s.rodata)),
        mib(median_by(samples, |s| s.data)),
        mib(median_by(samples, |s| s.libs)),
        median_by(samples, |s| s.threads)
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn median_by<T: Copy + Ord>(samples: &[Sample], f: impl Fn(&Sample) -> T) -> T {
    let mut v: Vec<T> = samples.iter().map(f).collect();
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let rounds = bench::rounds(3, 1);
    let env = TestEnv::new().await;
    let jobs: [(&str, &[&str]); 7] = [
        ("start-job", &[]),
        ("stop-job", &[]),
        ("docker-events", &[]),
        ("inspect-cron", &["--every", "1h"]),
        ("healthz-prober", &[]),
        ("cleanup-cron", &["--every", "1h"]),
        ("rest-gateway", &[]),
    ];
    let peer_bin = bench::sibling_binary("bench-bare-hyper");
    let size = |p: &Path| std::fs::metadata(p).expect("binary").len();
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let mut peer_all: Vec<Sample> = Vec::new();
    let mut rows: Vec<(&str, u64, Vec<Sample>, Vec<Sample>)> = Vec::new();
    for (job, args) in jobs {
        let bin = bench::sibling_binary(job);
        let (mut ours, mut peer) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let metrics = format!("127.0.0.1:{}", system_tests::free_port());
            let api = format!("127.0.0.1:{}", system_tests::free_port());
            let mut cmd = Command::new(&bin);
            cmd.args(args)
                .env_clear()
                .envs(env.vars.iter().cloned())
                .env("RTMANAGER_METRICS_ADDR", &metrics)
                .env("RTMANAGER_INTERNAL_HTTP_ADDR", &api)
                .env("RTMANAGER_API_TOKENS", TOKEN);
            ours.push(sample(cmd, &metrics, job).await);
            let addr = format!("127.0.0.1:{}", system_tests::free_port());
            let mut cmd = Command::new(&peer_bin);
            cmd.arg(&addr).env_clear();
            peer.push(sample(cmd, &addr, "bench-bare-hyper").await);
            eprintln!(
                "{job}: ready {:?} rss {}; bare ready {:?} rss {}",
                ours.last().unwrap().ready,
                mib(ours.last().unwrap().rss),
                peer.last().unwrap().ready,
                mib(peer.last().unwrap().rss)
            );
        }
        rows.push((job, size(&bin), ours, peer));
    }
    let peer_size = size(&peer_bin);
    let mut breakdown = String::from(
        "| process | RSS | PSS | anonymous | binary: code | binary: read-only | binary: writable | other files (libc, loader) | threads |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (job, bin_size, ours, peer) in &rows {
        let (rss, peer_rss) = (median_by(ours, |s| s.rss), median_by(peer, |s| s.rss));
        figures.push(Figure {
            name: format!("{job} idle RSS"),
            ours: mib(rss),
            peer: mib(peer_rss),
            ratio: rss as f64 / peer_rss as f64,
            target: "≤ 6 MiB".to_owned(),
            met: Some(rss <= 6 * 1048576),
        });
        let (ready, peer_ready) = (median_by(ours, |s| s.ready), median_by(peer, |s| s.ready));
        figures.push(Figure::info(
            &format!("{job} cold start to ready"),
            bench::ms(ready),
            bench::ms(peer_ready),
            ready.as_secs_f64() / peer_ready.as_secs_f64(),
        ));
        figures.push(Figure::info(
            &format!("{job} binary size"),
            mib(*bin_size),
            mib(peer_size),
            *bin_size as f64 / peer_size as f64,
        ));
        breakdown.push_str(&row(job, ours));
        peer_all.extend(peer.iter().copied());
    }
    breakdown.push_str(&row("bench-bare-hyper (peer)", &peer_all));
    let idle_all: u64 = rows
        .iter()
        .map(|(_, _, ours, _)| median_by(ours, |s| s.rss))
        .sum();
    bench::scale("idle_rss_mib_all_seven", idle_all as f64 / 1048576.0, "MiB");
    notes.push(format!(
        "Median of {rounds} start(s) each, every start of a job followed by one of the peer. \
         Ready = `/healthz` answers 200 (for the jobs: after migrations check, Redis, \
         PostgreSQL and Docker are reached); idle RSS read {} s after ready. The crons run \
         with `--every 1h`. Where the bytes are (`/proc/<pid>/status` and `smaps`; the \
         binary's columns are its own mappings' resident pages, PSS counts a page shared \
         with another process by its share):\n\n{breakdown}",
        IDLE.as_secs()
    ));
    bench::print_section(
        "7. Footprint",
        "Each of the seven release binaries against a bare tokio+hyper binary \
         (`tests/src/bin/bench-bare-hyper.rs`) built in the same run.",
        &figures,
        &notes,
        "scripts/bench --only footprint",
    );
}
