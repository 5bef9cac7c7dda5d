//! Scale model (issue 14, item 8): no measurement of its own. It reads the
//! per-unit costs the other benchmarks of the same run printed as
//! `SCALE <key> <value> <unit>` lines (stdin: `scripts/bench` pipes them in),
//! takes the settings' defaults from the configuration code, and prints what
//! one instance of each process sustains and what a platform of 10,000 and
//! 100,000 concurrent games needs. A cost the run did not measure leaves its
//! rows saying so rather than guessing.
//!
//! Run with `scripts/bench` (all benchmarks, then this).

use std::collections::BTreeMap;
use std::io::Read;

use shared::config::Config;

/// Ports of one Linux bridge (`BR_MAX_PORTS`, 1 << 10): every container on
/// the engines' network takes one, so one network holds at most 1,023
/// games beside the bridge's own port.
const BRIDGE_PORTS: f64 = 1023.0;
/// Memory of a Docker host kept for the OS, Docker and the processes of
/// its deployment, not for games.
const HOST_RESERVE_GIB: f64 = 2.0;
/// The platforms the issue asks about.
const PLATFORMS: [f64; 2] = [10_000.0, 100_000.0];
/// A deployment's processes with one prober shard, each with its own pool.
const DEPLOYMENT_PROCESSES: f64 = 9.0;
/// PostgreSQL's default `max_connections`.
const PG_DEFAULT_MAX_CONNECTIONS: f64 = 100.0;

struct Costs(BTreeMap<String, f64>);

impl Costs {
    fn read(text: &str) -> Self {
        let mut costs = BTreeMap::new();
        for line in text.lines() {
            let mut cols = line.split_whitespace();
            if cols.next() != Some("SCALE") {
                continue;
            }
            if let (Some(key), Some(Ok(value))) = (cols.next(), cols.next().map(str::parse::<f64>))
            {
                if value.is_finite() && value > 0.0 {
                    costs.insert(key.to_owned(), value);
                }
            }
        }
        Self(costs)
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }
}

/// The defaults the model sizes with, read from the configuration code.
struct Defaults {
    probe_interval_s: f64,
    inspect_interval_s: f64,
    start_concurrency: f64,
    pool: f64,
    memory_mib: f64,
}

fn defaults() -> Defaults {
    let vars = [
        (
            "RTMANAGER_POSTGRES_PRIMARY_DSN",
            "postgres://model@localhost/model",
        ),
        ("RTMANAGER_REDIS_MASTER_ADDR", "localhost:6379"),
        ("RTMANAGER_DOCKER_NETWORK", "model"),
        ("RTMANAGER_GAME_STATE_ROOT", "/model"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::from_vars(vars).expect("the defaults form a valid configuration");
    Defaults {
        probe_interval_s: config.probe.interval.as_secs_f64(),
        inspect_interval_s: config.inspect.interval.as_secs_f64(),
        start_concurrency: config.start_jobs.concurrency as f64,
        pool: f64::from(config.common.postgres.max_connections),
        memory_mib: config.lifecycle.default_limits.memory.bytes() as f64 / 1048576.0,
    }
}

fn host_memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1048576.0)
}

fn count(v: f64) -> String {
    let v = v.round() as i64;
    let digits = v.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

const UNMEASURED: &str = "not measured in this run";

fn main() {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .expect("read SCALE lines");
    let costs = Costs::read(&text);
    let d = defaults();
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let host_gib = host_memory_gib();

    println!("## 8. Scale model\n");
    println!(
        "Computed from the per-unit costs the benchmarks above measured in this run (each \
         printed as a `SCALE` line; the inputs table lists them) and the settings' defaults \
         read from the configuration code. A projection, not a measurement: where a cost is \
         bound by something this machine cannot show (a second Docker host, a larger \
         PostgreSQL), the row says what it assumes.\n"
    );
    println!("| input | value |\n|---|---|");
    for (key, value) in &costs.0 {
        println!("| `{key}` | {value:.3} |");
    }
    println!(
        "| defaults | probe interval {} s, inspect interval {} s, start concurrency {}, pool \
         {} connections per process, engine memory limit {} MiB |",
        d.probe_interval_s, d.inspect_interval_s, d.start_concurrency, d.pool, d.memory_mib
    );
    println!("| this machine | {cores} cores, {host_gib:.1} GiB |\n");

    // One instance of each process.
    println!("### What one instance sustains\n");
    println!("| process | sustains | bound by |\n|---|---|---|");
    let shard_games = match (
        costs.get("prober_probes_per_s_warm"),
        costs.get("prober_cpu_us_per_probe_warm"),
    ) {
        (Some(rate), Some(cpu_us)) => {
            let by_cpu = 1e6 / cpu_us;
            let probes_per_s = rate.min(by_cpu);
            let games = probes_per_s * d.probe_interval_s;
            println!(
                "| healthz-prober (one shard) | {} games at a {} s interval ({} probes/s) | {} |",
                count(games),
                d.probe_interval_s,
                count(probes_per_s),
                if rate <= by_cpu {
                    format!(
                        "the measured round rate at concurrency 256 (one core's CPU would allow {} probes/s, Redis counted)",
                        count(by_cpu)
                    )
                } else {
                    "one core's CPU per probe, Redis counted".to_owned()
                }
            );
            Some(games)
        }
        _ => {
            println!("| healthz-prober (one shard) | {UNMEASURED} | — |");
            None
        }
    };
    let starts_per_s = costs.get("starts_per_s_8_at_once");
    match (starts_per_s, costs.get("start_job_cpu_ms_per_start")) {
        (Some(docker_rate), cpu) => {
            let by_cpu = cpu.map(|ms| 1000.0 / ms);
            println!(
                "| start-job | {:.1} starts/s per Docker host | the Docker daemon: starts 8 at once through the real start path (section 4's set-up){} |",
                by_cpu.map_or(docker_rate, |c| docker_rate.min(c)),
                by_cpu.map_or(String::new(), |c| format!(
                    "; start-job's own CPU would allow {c:.0} starts/s on one core"
                ))
            );
        }
        (None, _) => println!("| start-job | {UNMEASURED} | — |"),
    }
    // The batch of section 2 measures how fast Docker kills (the events
    // arrive as fast as the kills return), so the CPU per event bounds
    // what one docker-events sustains; the batch rate is a floor.
    match (
        costs.get("events_cpu_us_per_event"),
        costs.get("events_per_s"),
    ) {
        (Some(us), batch) => println!(
            "| docker-events | {} events/s on one core | its CPU per event ({us:.0} µs); the mass death of section 2 reached {} events/s, the rate Docker's kills came at |",
            count(1e6 / us),
            batch.map_or(UNMEASURED.to_owned(), count)
        ),
        (None, _) => println!("| docker-events | {UNMEASURED} | — |"),
    }
    match costs.get("inspect_ms_per_container") {
        Some(ms) => println!(
            "| inspect-cron | {} games per {} s pass | Docker's inspect answers at concurrency 16 ({ms:.2} ms a container) |",
            count(d.inspect_interval_s * 1000.0 / ms),
            d.inspect_interval_s
        ),
        None => println!("| inspect-cron | {UNMEASURED} | — |"),
    }
    match costs.get("gateway_get_per_s") {
        Some(rate) => println!(
            "| rest-gateway | {} `GET runtimes/{{id}}`/s | PostgreSQL round trips, sharing the cores with it (section 5) |",
            count(rate)
        ),
        None => println!("| rest-gateway | {UNMEASURED} | — |"),
    }
    match costs.get("outbox_events_per_s_16") {
        Some(rate) => println!(
            "| the outbox (every writer of one PostgreSQL) | {} events/s at 16 writers | a synchronous commit per event (section 6) |",
            count(rate)
        ),
        None => println!("| the outbox | {UNMEASURED} | — |"),
    }
    println!();

    // Games per Docker host.
    let docker_mib = costs.get("docker_mib_per_container");
    let per_game_mib = d.memory_mib + docker_mib.unwrap_or(0.0);
    let by_memory = ((host_gib - HOST_RESERVE_GIB).max(0.0) * 1024.0 / per_game_mib).floor();
    let per_host_at_limit = by_memory.min(BRIDGE_PORTS);
    println!("### Games per Docker host\n");
    println!(
        "- **By memory**: a host like this one ({host_gib:.1} GiB, {HOST_RESERVE_GIB} GiB kept \
         for the OS, Docker and the deployment's processes) holds {} games if each engine \
         uses its default limit of {} MiB, plus Docker's own {} a container. The engines' \
         real use is the game's, not ours: the `FROM scratch` test engine is a stand-in.",
        count(by_memory),
        d.memory_mib,
        docker_mib.map_or(format!("({UNMEASURED})"), |m| format!("{m:.2} MiB"))
    );
    println!(
        "- **By the network**: the engines share one Docker network, one Linux bridge of \
         1,024 ports: at most {} games per host, however small the engines.",
        count(BRIDGE_PORTS)
    );
    println!(
        "- **By CPU**: the default quota of 1 CPU per game is a cap, not a reservation; how \
         many games share a core is the games' business.\n"
    );

    // Platforms.
    println!("### A platform of 10,000 and 100,000 concurrent games\n");
    println!(
        "One Docker host per deployment (a schema's records live on one daemon, see the \
         README's known limits); a deployment runs start-job, stop-job, docker-events (and a \
         standby), inspect-cron, its prober shards, cleanup-cron and rest-gateway (two for \
         availability): nine processes with one shard. Two cases: engines using their {} MiB default limit \
         ({} games per host), and small engines filling the bridge ({} per host).\n",
        d.memory_mib,
        count(per_host_at_limit),
        count(BRIDGE_PORTS)
    );
    println!(
        "| | 10,000 at {0} MiB | 10,000, bridge-bound | 100,000 at {0} MiB | 100,000, bridge-bound |",
        d.memory_mib
    );
    println!("|---|---|---|---|---|");
    let cases: Vec<(f64, f64)> = PLATFORMS
        .iter()
        .flat_map(|&games| [(games, per_host_at_limit), (games, BRIDGE_PORTS)])
        .collect();
    let row = |name: &str, cell: &dyn Fn(f64, f64) -> String| {
        let cells: Vec<String> = cases
            .iter()
            .map(|&(games, per_host)| {
                if per_host < 1.0 {
                    "—".to_owned()
                } else {
                    cell(games, per_host)
                }
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let hosts = |games: f64, per_host: f64| (games / per_host).ceil();
    row("Docker hosts = deployments", &|g, p| count(hosts(g, p)));
    row("healthz-prober shards per deployment", &|g, p| {
        let per_host_games = (g / hosts(g, p)).ceil();
        shard_games.map_or(UNMEASURED.to_owned(), |s| {
            count((per_host_games / s).ceil().max(1.0))
        })
    });
    // Nine processes with one shard, each with its own pool.
    let processes = |g: f64, p: f64| {
        let per_host_games = (g / hosts(g, p)).ceil();
        let shards = shard_games.map_or(1.0, |s| (per_host_games / s).ceil().max(1.0));
        hosts(g, p) * (8.0 + shards)
    };
    row("processes in all", &|g, p| count(processes(g, p)));
    row("PostgreSQL connections (every pool full)", &|g, p| {
        count(processes(g, p) * d.pool)
    });
    row("probes/s (Redis)", &|g, _| {
        let rate = g / d.probe_interval_s;
        match costs.get("redis_cpu_us_per_probe") {
            Some(us) => format!("{} ({:.2} of a Redis core)", count(rate), rate * us / 1e6),
            None => count(rate),
        }
    });
    row("restarting one host's games after its loss", &|g, p| {
        let per_host_games = (g / hosts(g, p)).ceil();
        match starts_per_s {
            Some(rate) => format!("{:.0} s at {rate:.1} starts/s", per_host_games / rate),
            None => UNMEASURED.to_owned(),
        }
    });
    println!();

    let small = processes(PLATFORMS[0], BRIDGE_PORTS) * d.pool;
    println!("### What runs out first\n");
    println!(
        "1. **A Docker host's memory**, at the default limit: {} games a host, well before \
         the bridge's {}. Small engines reach the bridge's ports first.",
        count(per_host_at_limit),
        count(BRIDGE_PORTS)
    );
    println!(
        "2. **PostgreSQL connections**, as deployments multiply: each deployment's nine \
         pools hold up to {} connections, so even the bridge-bound 10,000 games need {} \
         (PostgreSQL's default `max_connections` is {}). Lower `RTMANAGER_POSTGRES_MAX_CONNECTIONS`, \
        run a transaction pooler in \
         front, or give groups of deployments their own server.",
        count(DEPLOYMENT_PROCESSES * d.pool),
        count(small),
        count(PG_DEFAULT_MAX_CONNECTIONS)
    );
    println!(
        "3. Far behind: the prober (one shard covers {} games), Redis (a fraction of a \
         core at 100,000 games) and the health-event write rate of one PostgreSQL server \
         (the outbox row above) are not what limits a platform of this size; start \
         throughput is per Docker host, so it grows with the hosts.\n",
        shard_games.map_or(UNMEASURED.to_owned(), count)
    );
    println!("Reproduce: `scripts/bench` (the model needs the other sections' lines)\n");
}
