//! `healthz-prober` against real engines (Docker), Redis and PostgreSQL.
//!
//! Engines are started through the real start service and steered over HTTP
//! (`POST /control?health=...`, `GET /hits`) at their bridge address, which the
//! host reaches. In-process probers use `container_ip` mode for the same
//! reason; `hostname` mode is tested with the real static binary in a scratch
//! container on the test network (image built by `scripts/build-job-image
//! healthz-prober`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use healthz_prober::target::{Target, TargetState, Verdict};
use shared::adapters::redis::streaks::streak_key;
use shared::adapters::redis::LeaseStore;
use shared::domain::{GameId, RuntimeRecord};
use system_tests::contract::Contract;
use system_tests::{docker, inspect, TestEnv};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod prober;

use prober::*;

const INTERVAL: Duration = Duration::from_millis(300);

/// Polls the streak counter until `until` holds for the events; returns the
/// largest counter seen (each value lasts an interval; polled far faster).
async fn track_streak_until(
    env: &TestEnv,
    game: &GameId,
    deadline: Duration,
    mut until: impl FnMut(i64, &[HashMap<String, String>]) -> bool,
) -> i64 {
    let end = Instant::now() + deadline;
    let mut max_seen = 0;
    loop {
        if let Some(streak) = env.redis().read_streak(game).await.expect("streak") {
            max_seen = max_seen.max(streak.consecutive_failures);
        }
        let events = probe_events(env, game).await;
        if until(max_seen, &events) {
            return max_seen;
        }
        assert!(
            Instant::now() < end,
            "timed out; streak max {max_seen}, events {:?}",
            event_types(&events)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn record(env: &TestEnv, game: &GameId) -> RuntimeRecord {
    env.db().get_record(game).await.unwrap().expect("record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_then_hanging_engine_is_reported_once_and_recovers_once() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "flaky").await;
    let hung = Engine::start(&env, "hung").await;
    let prober = RunningProber::spawn(env.config.clone(), &env);

    env.eventually("healthy probes", Duration::from_secs(5), || async {
        (engine.hits().await >= 2 && hung.hits().await >= 2).then_some(())
    })
    .await;
    assert!(probe_events(&env, &engine.game).await.is_empty());

    // 500s: one probe_failed exactly at the threshold, with the status.
    engine.set_health("fail").await;
    hung.set_health("timeout").await;
    let failed = wait_for_event(&env, &engine.game, "probe_failed", Duration::from_secs(10)).await;
    let details = assert_published(&env, &failed).await;
    assert_eq!(
        details,
        serde_json::json!({"consecutive_failures": 3, "last_status": 500, "last_error": "status 500"})
    );
    assert_eq!(failed["container_id"], engine.container_id);
    // A hung engine: no response at all, so last_status 0.
    let hung_failed =
        wait_for_event(&env, &hung.game, "probe_failed", Duration::from_secs(10)).await;
    assert_eq!(
        assert_published(&env, &hung_failed).await,
        serde_json::json!({"consecutive_failures": 3, "last_status": 0, "last_error": "timeout after 200ms"})
    );

    // Then hanging: the streak goes on, nothing is repeated.
    engine.set_health("timeout").await;
    track_streak_until(&env, &engine.game, Duration::from_secs(10), |max, _| {
        max >= 6
    })
    .await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed"]
    );

    // Healthy again: one probe_recovered with the whole streak.
    engine.set_health("ok").await;
    hung.set_health("ok").await;
    let streak = track_streak_until(&env, &engine.game, Duration::from_secs(10), |_, events| {
        events.len() == 2
    })
    .await;
    let events = probe_events(&env, &engine.game).await;
    assert_eq!(event_types(&events), ["probe_failed", "probe_recovered"]);
    let details = assert_published(&env, &events[1]).await;
    assert!(streak >= 6, "streak {streak}");
    assert_eq!(details, serde_json::json!({"prior_failure_count": streak}));
    let hung_recovered =
        wait_for_event(&env, &hung.game, "probe_recovered", Duration::from_secs(10)).await;
    assert_published(&env, &hung_recovered).await;

    // Healthy rounds publish nothing more.
    let hits = engine.hits().await;
    env.eventually("more healthy probes", Duration::from_secs(5), || async {
        (engine.hits().await >= hits + 3).then_some(())
    })
    .await;
    prober.stop().await;
    assert_eq!(probe_events(&env, &engine.game).await.len(), 2);
    assert_eq!(probe_events(&env, &hung.game).await.len(), 2);
    forget_streaks(&env, &[&engine.game, &hung.game]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_restarted_mid_streak_still_recovers_once() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "restart").await;
    let first = RunningProber::spawn(env.config.clone(), &env);
    engine.set_health("fail").await;
    let failed = wait_for_event(&env, &engine.game, "probe_failed", Duration::from_secs(10)).await;
    assert_published(&env, &failed).await;
    first.stop().await;

    let streak = env
        .redis()
        .read_streak(&engine.game)
        .await
        .unwrap()
        .expect("streak kept in Redis");
    assert!(streak.failed_published);
    assert_eq!(streak.container_id, engine.container_id);

    // A new prober picks the streak up: it keeps counting, never repeats.
    let second = RunningProber::spawn(env.config.clone(), &env);
    let before = streak.consecutive_failures;
    track_streak_until(&env, &engine.game, Duration::from_secs(10), |max, _| {
        max >= before + 2
    })
    .await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed"]
    );

    engine.set_health("ok").await;
    let total = track_streak_until(&env, &engine.game, Duration::from_secs(10), |_, events| {
        events.len() == 2
    })
    .await;
    second.stop().await;
    let events = probe_events(&env, &engine.game).await;
    assert_eq!(event_types(&events), ["probe_failed", "probe_recovered"]);
    assert_eq!(
        assert_published(&env, &events[1]).await,
        serde_json::json!({"prior_failure_count": total})
    );
    forget_streaks(&env, &[&engine.game]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_probe_each_game_exactly_once_per_round() {
    let env = fast_env(&[
        ("RTMANAGER_SHARD_COUNT", "2"),
        ("RTMANAGER_SHARD_INDEX", "0"),
    ])
    .await;
    let mut shard1 = env.config.clone();
    shard1.probe.shard_index = 1;
    let settings0 = healthz_prober::prober(&(&env.config).into(), &env.infra)
        .unwrap()
        .settings()
        .clone();
    let settings1 = healthz_prober::prober(&(&shard1).into(), &env.infra)
        .unwrap()
        .settings()
        .clone();

    // Two games in each shard.
    let (mut in0, mut in1) = (Vec::new(), Vec::new());
    for i in 0.. {
        if in0.len() == 2 && in1.len() == 2 {
            break;
        }
        let game = GameId::parse(&format!("shard{i}-{}", env.id)).unwrap();
        // Each game is claimed by exactly one of the two probers.
        assert!(settings0.owns(&game) != settings1.owns(&game), "{game}");
        let bucket = if settings0.owns(&game) {
            &mut in0
        } else {
            &mut in1
        };
        if bucket.len() < 2 {
            bucket.push(env.game(&format!("shard{i}")));
        }
    }
    let mut engines = Vec::new();
    for game in in0.into_iter().chain(in1) {
        engines.push(Engine::start_game(&env, game).await);
    }

    let window = Instant::now();
    let zero = RunningProber::spawn(env.config.clone(), &env);
    let one = RunningProber::spawn(shard1, &env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    zero.stop().await;
    one.stop().await;
    let window = window.elapsed();

    // Each prober probes a game at most once per slot; both probing the same
    // game would double the count.
    let slots = (window.as_millis() / INTERVAL.as_millis()) as u64 + 1;
    for engine in &engines {
        let hits = engine.hits().await;
        assert!(
            hits <= slots && hits >= slots / 2,
            "{}: {hits} hits in {slots} slots ({window:?})",
            engine.game
        );
    }
    let games: Vec<&GameId> = engines.iter().map(|e| &e.game).collect();
    forget_streaks(&env, &games).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_leased_games_are_not_probed() {
    let env = fast_env(&[]).await;
    let leased = Engine::start(&env, "leased").await;
    let stopped = Engine::start(&env, "stopped").await;
    let control = Engine::start(&env, "control").await;
    let prober = RunningProber::spawn(env.config.clone(), &env);
    env.eventually("every game probed", Duration::from_secs(5), || async {
        (leased.hits().await >= 2 && stopped.hits().await >= 2 && control.hits().await >= 2)
            .then_some(())
    })
    .await;

    // An operation holds the lease; the record of the other game is stopped
    // (its container keeps running and answering).
    let leases = LeaseStore::new(env.redis().clone(), Duration::from_secs(60));
    let lease = leases
        .try_acquire(&leased.game)
        .await
        .unwrap()
        .expect("lease");
    sqlx::query(
        "UPDATE runtime_records SET status = 'stopped', stopped_at = now() WHERE game_id = $1",
    )
    .bind(stopped.game.as_str())
    .execute(env.db().pool())
    .await
    .unwrap();
    // Let an in-flight probe and one target refresh pass.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (leased_hits, stopped_hits, control_hits) = (
        leased.hits().await,
        stopped.hits().await,
        control.hits().await,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(leased.hits().await, leased_hits, "leased game probed");
    assert_eq!(stopped.hits().await, stopped_hits, "stopped game probed");
    assert!(
        control.hits().await >= control_hits + 4,
        "control game not probed"
    );

    // Once the operation is over, probing resumes.
    lease.release().await;
    env.eventually("probes after the lease", Duration::from_secs(5), || async {
        (leased.hits().await > leased_hits).then_some(())
    })
    .await;
    prober.stop().await;
    for engine in [&leased, &stopped, &control] {
        assert!(probe_events(&env, &engine.game).await.is_empty());
        let streak = env.redis().read_streak(&engine.game).await.unwrap();
        assert_eq!(streak.map_or(0, |s| s.consecutive_failures), 0);
    }
    forget_streaks(&env, &[&leased.game, &stopped.game, &control.game]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_is_not_probed_during_its_initial_grace() {
    let env = fast_env(&[("RTMANAGER_PROBE_INITIAL_GRACE", "2s")]).await;
    let engine = Engine::start(&env, "grace").await;
    let started_at = record(&env, &engine.game)
        .await
        .started_at
        .expect("started_at");
    let prober = RunningProber::spawn(env.config.clone(), &env);
    let young_until = started_at + chrono::Duration::milliseconds(1700);
    tokio::time::sleep(
        (young_until - chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(engine.hits().await, 0, "probed during the grace");
    env.eventually("probes after the grace", Duration::from_secs(5), || async {
        (engine.hits().await >= 2).then_some(())
    })
    .await;
    prober.stop().await;
    forget_streaks(&env, &[&engine.game]).await;
}

/// PostgreSQL refusing the event: the prober retries, and when stopped first
/// it leaves the transition pending with the streak, so the next prober
/// publishes it (with the count and time it was decided with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_event_that_cannot_be_committed_stays_pending_until_it_is() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "nocommit").await;
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    sqlx::query(sqlx::AssertSqlSafe(rename("outbox", "outbox_away")))
        .execute(env.db().pool())
        .await
        .unwrap();
    engine.set_health("fail").await;
    let prober = RunningProber::spawn(env.config.clone(), &env);
    env.eventually("the threshold crossed", Duration::from_secs(10), || async {
        env.redis()
            .read_streak(&engine.game)
            .await
            .unwrap()
            .filter(|s| s.failed_published)
    })
    .await;
    prober.stop().await;
    let streak = env
        .redis()
        .read_streak(&engine.game)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (streak.failed_published, streak.consecutive_failures),
        (true, 3),
        "the transition kept, not given back: {streak:?}"
    );
    let pending = streak.pending.expect("the transition pending");
    assert_eq!(pending.event.event_type().as_str(), "probe_failed");

    sqlx::query(sqlx::AssertSqlSafe(rename("outbox_away", "outbox")))
        .execute(env.db().pool())
        .await
        .unwrap();
    let prober = RunningProber::spawn(env.config.clone(), &env);
    let failed = wait_for_event(&env, &engine.game, "probe_failed", Duration::from_secs(10)).await;
    assert_eq!(
        assert_published(&env, &failed).await,
        serde_json::json!({"consecutive_failures": 3, "last_status": 500, "last_error": "status 500"})
    );
    engine.set_health("ok").await;
    wait_for_event(
        &env,
        &engine.game,
        "probe_recovered",
        Duration::from_secs(10),
    )
    .await;
    prober.stop().await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed", "probe_recovered"]
    );
    forget_streaks(&env, &[&engine.game]).await;
}

/// Two probers overlapping on one game (a reshard): each round counts once,
/// and each transition is published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_overlapping_probers_count_each_round_once_and_publish_once() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "overlap").await;
    let target = Target::from_record(&record(&env, &engine.game).await).expect("target");
    let a = healthz_prober::prober(&(&env.config).into(), &env.infra).unwrap();
    let b = healthz_prober::prober(&(&env.config).into(), &env.infra).unwrap();
    let stop = CancellationToken::new();
    let mut verdicts = Vec::new();
    engine.set_health("fail").await;
    for round in 1..=6 {
        if round == 6 {
            engine.set_health("ok").await;
        }
        let (mut sa, mut sb) = (TargetState::default(), TargetState::default());
        let (va, vb) = tokio::join!(
            a.probe(&target, round, &mut sa, &stop),
            b.probe(&target, round, &mut sb, &stop)
        );
        assert!(
            [&va, &vb]
                .iter()
                .filter(|v| ***v == Verdict::Duplicate)
                .count()
                == 1,
            "round {round}: {va:?} / {vb:?}"
        );
        verdicts.extend([va, vb].into_iter().filter(|v| *v != Verdict::Duplicate));
    }
    assert_eq!(
        verdicts,
        [
            Verdict::Failing {
                consecutive_failures: 1
            },
            Verdict::Failing {
                consecutive_failures: 2
            },
            Verdict::Failed {
                consecutive_failures: 3
            },
            Verdict::Failing {
                consecutive_failures: 4
            },
            Verdict::Failing {
                consecutive_failures: 5
            },
            Verdict::Recovered {
                prior_failure_count: 5
            },
        ]
    );
    let events = probe_events(&env, &engine.game).await;
    assert_eq!(event_types(&events), ["probe_failed", "probe_recovered"]);
    forget_streaks(&env, &[&engine.game]).await;
}

/// The documented container-change rule: a new container starts a new streak,
/// and an open `probe_failed` of the old one is still closed by a recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_container_starts_a_new_streak_but_an_open_probe_failed_still_recovers() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "newc").await;
    let target = Target::from_record(&record(&env, &engine.game).await).expect("target");
    let prober = healthz_prober::prober(&(&env.config).into(), &env.infra).unwrap();
    let stop = CancellationToken::new();
    let mut conn = env.redis().manager();
    let seed_old_failure = || {
        redis::cmd("HSET")
            .arg(streak_key(&engine.game))
            .arg(&[
                ("container_id", "old-container"),
                ("consecutive_failures", "4"),
                ("failed_published", "1"),
                ("failed_container", "old-container"),
                ("last_slot", "0"),
            ])
            .clone()
    };

    // The new container answers at once: the old probe_failed is closed.
    let _: i64 = seed_old_failure().query_async(&mut conn).await.unwrap();
    let mut state = TargetState::default();
    assert_eq!(
        prober.probe(&target, 1, &mut state, &stop).await,
        Verdict::Recovered {
            prior_failure_count: 4
        }
    );
    let recovered = probe_events(&env, &engine.game).await;
    assert_eq!(event_types(&recovered), ["probe_recovered"]);
    assert_published(&env, &recovered[0]).await;
    assert_eq!(recovered[0]["container_id"], engine.container_id);

    // The new container fails instead: counted from one, and reported on its
    // own at the threshold; one recovery closes it.
    let _: i64 = redis::cmd("DEL")
        .arg(streak_key(&engine.game))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = seed_old_failure().query_async(&mut conn).await.unwrap();
    engine.set_health("fail").await;
    let mut verdicts = Vec::new();
    for round in 1..=3 {
        verdicts.push(prober.probe(&target, round, &mut state, &stop).await);
    }
    engine.set_health("ok").await;
    verdicts.push(prober.probe(&target, 4, &mut state, &stop).await);
    assert_eq!(
        verdicts,
        [
            Verdict::Failing {
                consecutive_failures: 1
            },
            Verdict::Failing {
                consecutive_failures: 2
            },
            Verdict::Failed {
                consecutive_failures: 3
            },
            Verdict::Recovered {
                prior_failure_count: 3
            },
        ]
    );
    let events = probe_events(&env, &engine.game).await;
    assert_eq!(
        event_types(&events),
        ["probe_recovered", "probe_failed", "probe_recovered"]
    );
    for event in &events[1..] {
        assert_eq!(event["container_id"], engine.container_id);
        Contract::load("runtime-health.asyncapi.yaml")
            .assert_valid("RuntimeHealthEventPayload", event);
    }
    forget_streaks(&env, &[&engine.game]).await;
}

// ---------------------------------------------------------------------------
// hostname mode: the real binary in a scratch container on the test network
// ---------------------------------------------------------------------------

const PROBER_IMAGE: &str = "rtmanager/healthz-prober:test";

/// Forwards TCP from `listen` to `upstream` until dropped: the prober
/// container (on the test network) reaches Redis and PostgreSQL, which listen
/// on the host's 127.0.0.1 only, through the network's gateway address.
struct Forward {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Forward {
    async fn start(listen: IpAddr, upstream: String) -> Self {
        let listener = TcpListener::bind((listen, 0))
            .await
            .expect("bind the forwarder on the network gateway");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes the prober container when the test ends, however it ends.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// `host:port` of a `postgres://[user@]host:port/...` DSN.
fn dsn_host_port(dsn: &str) -> &str {
    let rest = dsn.split_once("://").map_or(dsn, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_prober_in_a_scratch_container_probes_engines_by_hostname() {
    let image = std::process::Command::new("docker")
        .args(["image", "inspect", PROBER_IMAGE])
        .output()
        .expect("docker CLI");
    assert!(
        image.status.success(),
        "image {PROBER_IMAGE} is missing: run scripts/build-job-image healthz-prober (scripts/test does)"
    );
    let env = fast_env(&[("RTMANAGER_PROBE_ADDRESS_MODE", "hostname")]).await;
    let engine = Engine::start(&env, "byname").await;
    assert_eq!(
        record(&env, &engine.game).await.engine_endpoint,
        format!("http://galaxy-game-{}:8080", engine.game)
    );

    let gateway: IpAddr = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &env.network,
    ])
    .parse()
    .expect("gateway address");
    let pg_upstream = dsn_host_port(&env.dsn).to_owned();
    let pg = Forward::start(gateway, pg_upstream.clone()).await;
    let redis = Forward::start(gateway, env.config.common.redis.addr.clone()).await;
    let dsn = env.dsn.replacen(&pg_upstream, &pg.addr.to_string(), 1);

    let name = format!("rtm-prober-{}", env.id);
    let guard = ContainerGuard(name.clone());
    let vars: Vec<(String, String)> = [
        ("RTMANAGER_POSTGRES_PRIMARY_DSN", dsn.as_str()),
        ("RTMANAGER_REDIS_MASTER_ADDR", &redis.addr.to_string()),
        ("RTMANAGER_DOCKER_NETWORK", env.network.as_str()),
        (
            "RTMANAGER_HEALTH_EVENTS_STREAM",
            &env.config.common.streams.health_events,
        ),
        (
            "RTMANAGER_JOB_RESULTS_STREAM",
            &env.config.common.streams.job_results,
        ),
        (
            "RTMANAGER_NOTIFICATION_INTENTS_STREAM",
            &env.config.common.streams.notification_intents,
        ),
        ("RTMANAGER_METRICS_ADDR", "0.0.0.0:9464"),
        ("RTMANAGER_SHUTDOWN_TIMEOUT", "5s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain(FAST.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    .chain([(
        "RTMANAGER_PROBE_ADDRESS_MODE".to_owned(),
        "hostname".to_owned(),
    )])
    .collect();
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &env.network,
        // No Docker socket: hostname mode starts and probes without it, as
        // compose runs it (the only service on galaxy-net).
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (k, v) in &vars {
        args.extend(["-e".to_owned(), format!("{k}={v}")]);
    }
    args.push(PROBER_IMAGE.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args);

    let logs = || docker(&["logs", &name]);
    env.eventually("the prober to start", Duration::from_secs(15), || async {
        logs().contains("healthz prober started").then_some(())
    })
    .await;
    assert!(
        logs().contains(r#""address_mode":"Hostname""#),
        "{}",
        logs()
    );
    env.eventually(
        "probes from the container",
        Duration::from_secs(15),
        || async { (engine.hits().await >= 2).then_some(()) },
    )
    .await;
    engine.set_health("fail").await;
    let failed = env
        .eventually(
            "probe_failed from the container",
            Duration::from_secs(10),
            || async {
                probe_events(&env, &engine.game)
                    .await
                    .into_iter()
                    .find(|f| f["event_type"] == "probe_failed")
            },
        )
        .await;
    assert_eq!(
        assert_published(&env, &failed).await,
        serde_json::json!({"consecutive_failures": 3, "last_status": 500, "last_error": "status 500"}),
        "{}",
        logs()
    );
    engine.set_health("ok").await;
    let recovered = wait_for_event(
        &env,
        &engine.game,
        "probe_recovered",
        Duration::from_secs(10),
    )
    .await;
    assert_published(&env, &recovered).await;

    // SIGTERM: a clean stop with exit code 0.
    docker(&["stop", "-t", "10", &name]);
    let state = &inspect(&name).expect("prober container")["State"];
    assert_eq!(state["ExitCode"], 0, "{}", logs());
    assert!(logs().contains("healthz-prober stopped"), "{}", logs());
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed", "probe_recovered"]
    );
    drop(guard);
    forget_streaks(&env, &[&engine.game]).await;
}
