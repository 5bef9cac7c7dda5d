//! Every source at once, as processes: start-job, stop-job, docker-events,
//! inspect-cron (`--every 1s`, reconciling every 2 s), healthz-prober and
//! rest-gateway, over a scripted run of 50 games with kills, OOMs, removals
//! behind rtmanager's back, requested stops, restarts and patches; start-job,
//! stop-job and docker-events are each restarted during the run, and a few
//! kills and removals happen while docker-events is down for its restart
//! (its catch-up, or inspect-cron, reports them). An oracle says, for each
//! action, which events the health stream must hold for the game, in commit
//! order, each exactly once.
//!
//! Where two sources report the same fact, the oracle says which events
//! may follow, that each comes at most once, and that at least one comes: a
//! non-zero exit, say, is reported by docker-events (`container_exited`)
//! and by inspect-cron (`inspect_unhealthy`), at least one of them and each
//! at most once. Both appear only when inspect-cron saw the exited container
//! before docker-events stopped the record; whichever stops the record first
//! makes the other quiet. So the "each once" does not hold by
//! design: it is "at least one, each at most once".

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use system_tests::job_process::JobProcess;
use system_tests::{docker, inspect, TestEnv, ENGINE};

const TOKEN: &str = "every-source-token-0123456789abcdef01234";
const GAMES: usize = 50;
/// The first this many Kill and Remove games die while docker-events is
/// down for its restart: its catch-up (or inspect-cron) reports them.
const DIE_DURING_RESTART: usize = 2;
const PATCHED: &str = "galaxy-test/engine:1.0.1";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Run,
    Kill,
    Stop,
    Remove,
    Restart,
    Patch,
    Oom,
}

const ACTIONS: [Action; 7] = [
    Action::Run,
    Action::Kill,
    Action::Stop,
    Action::Remove,
    Action::Restart,
    Action::Patch,
    Action::Oom,
];

/// What the stream must hold for a game after `action`: `first`, exactly and
/// in this order, then each of `then` at most once, in any order (who of two
/// sources commits first is a race), and at least one of them when
/// `then_needed`.
struct Expect {
    first: Vec<&'static str>,
    then: Vec<&'static str>,
    then_needed: bool,
}

impl Expect {
    fn holds(&self, seen: &[String]) -> bool {
        if seen.len() < self.first.len() || seen[..self.first.len()] != self.first[..] {
            return false;
        }
        let rest = &seen[self.first.len()..];
        let mut distinct: Vec<&String> = rest.iter().collect();
        distinct.sort();
        distinct.dedup();
        distinct.len() == rest.len()
            && rest.iter().all(|e| self.then.contains(&e.as_str()))
            && (!self.then_needed || !rest.is_empty())
    }
}

fn oracle(action: Action) -> Expect {
    const S: &str = "container_started";
    const EXITED: &str = "container_exited";
    const GONE: &str = "container_disappeared";
    const UNHEALTHY: &str = "inspect_unhealthy";
    const OOM: &str = "container_oom";
    let (first, then): (Vec<&str>, Vec<&str>) = match action {
        // A requested stop is reported by no one.
        Action::Run | Action::Stop => (vec![S], vec![]),
        // The inner stop is rtmanager's own; the new container is started.
        Action::Restart | Action::Patch => (vec![S, S], vec![]),
        // The designed double report of a non-zero exit: docker-events'
        // `container_exited` and inspect-cron's `inspect_unhealthy`, each
        // once, either or both (a source that finds the record already
        // stopped by the other stays quiet).
        Action::Kill => (vec![S], vec![EXITED, UNHEALTHY]),
        Action::Oom => (vec![S], vec![OOM, EXITED, UNHEALTHY]),
        // `rm -f` kills, then removes: the exit's reports, and the
        // disappearance unless a source had stopped the record by then.
        Action::Remove => (vec![S], vec![EXITED, UNHEALTHY, GONE]),
    };
    let then_needed = !then.is_empty();
    Expect {
        first,
        then,
        then_needed,
    }
}

/// Kills, removes or OOMs the game's engine behind rtmanager's back, as
/// `action` says; nothing for the others.
async fn deal_death(
    env: &TestEnv,
    http: &reqwest::Client,
    game: &shared::domain::GameId,
    action: Action,
) {
    let name = game.container_name();
    match action {
        Action::Kill => {
            docker(&["kill", &name]);
        }
        Action::Remove => {
            docker(&["rm", "-f", &name]);
        }
        Action::Oom => {
            let ip = engine_ip(env, &name);
            let _ = http
                .post(format!("http://{ip}:8080/control?oom=1"))
                .send()
                .await;
        }
        _ => {}
    }
}

fn engine_ip(env: &TestEnv, container: &str) -> String {
    let c = inspect(container).expect("engine container");
    c["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("engine IP")
        .to_owned()
}

async fn events_by_game(env: &TestEnv) -> HashMap<String, Vec<String>> {
    let mut by_game: HashMap<String, Vec<String>> = HashMap::new();
    for (_, f) in env
        .read_stream(&env.config.common.streams.health_events)
        .await
    {
        by_game
            .entry(f["game_id"].clone())
            .or_default()
            .push(f["event_type"].clone());
    }
    by_game
}

async fn results_by_game(env: &TestEnv) -> HashMap<String, Vec<String>> {
    let mut by_game: HashMap<String, Vec<String>> = HashMap::new();
    for (_, f) in env
        .read_stream(&env.config.common.streams.job_results)
        .await
    {
        by_game
            .entry(f["game_id"].clone())
            .or_default()
            .push(format!("{}/{}", f["outcome"], f["error_code"]));
    }
    by_game
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_source_at_once_publishes_exactly_what_the_oracle_says() {
    let env = TestEnv::with(&[
        ("RTMANAGER_API_TOKENS", TOKEN),
        ("RTMANAGER_START_JOBS_CONCURRENCY", "8"),
        ("RTMANAGER_RECONCILE_INTERVAL", "2s"),
        ("RTMANAGER_PROBE_INTERVAL", "1s"),
        ("RTMANAGER_PROBE_REFRESH_INTERVAL", "1s"),
        ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip"),
    ])
    .await;
    let gateway_addr = format!("127.0.0.1:{}", system_tests::free_port());
    let spawn = |job: &'static str, args: &'static [&'static str]| {
        let env = &env;
        let extra = vec![("RTMANAGER_INTERNAL_HTTP_ADDR", gateway_addr.clone())];
        async move { JobProcess::ready(env, job, args, &extra).await }
    };
    let mut start_job = spawn("start-job", &[]).await;
    let stop_job = spawn("stop-job", &[]).await;
    let docker_events = spawn("docker-events", &[]).await;
    let inspect_cron = spawn("inspect-cron", &["--every", "1s"]).await;
    let prober = spawn("healthz-prober", &[]).await;
    let gateway = spawn("rest-gateway", &[]).await;
    let bound = env.config.common.process.shutdown_timeout + Duration::from_secs(10);

    let games: Vec<_> = (0..GAMES)
        .map(|i| (env.game(&format!("o{i}")), ACTIONS[i % ACTIONS.len()]))
        .collect();
    let early: Vec<_> = [Action::Kill, Action::Remove]
        .into_iter()
        .flat_map(|a| {
            games
                .iter()
                .filter(move |(_, b)| *b == a)
                .take(DIE_DURING_RESTART)
                .map(|(g, _)| g.clone())
        })
        .collect();
    let died_during_restart = |game: &shared::domain::GameId, _: Action| early.contains(game);

    // Phase 1: every game started through the stream; start-job restarted
    // half-way.
    for (i, (game, _)) in games.iter().enumerate() {
        env.xadd(
            &env.config.start_jobs.stream,
            &[("game_id", game.as_str()), ("image_ref", ENGINE)],
        )
        .await;
        if i == GAMES / 2 {
            assert!(start_job.terminate_within(bound).await.success());
            start_job = spawn("start-job", &[]).await;
        }
    }
    env.eventually("every start answered", Duration::from_secs(180), || async {
        let results = results_by_game(&env).await;
        games
            .iter()
            .all(|(g, _)| results.get(g.as_str()).is_some_and(|r| !r.is_empty()))
            .then_some(())
    })
    .await;

    // Phase 2: requested stops, restarts and patches; stop-job and
    // docker-events restarted meanwhile.
    let now = chrono::Utc::now().timestamp_millis().to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut calls = Vec::new();
    for (game, action) in &games {
        match action {
            Action::Stop => {
                env.xadd(
                    &env.config.stop_jobs.stream,
                    &[
                        ("game_id", game.as_str()),
                        ("reason", "cancelled"),
                        ("requested_at_ms", &now),
                    ],
                )
                .await;
            }
            Action::Restart | Action::Patch => {
                let (call, body) = match action {
                    Action::Patch => (
                        "patch",
                        serde_json::json!({"image_ref": PATCHED}).to_string(),
                    ),
                    _ => ("restart", String::new()),
                };
                calls.push(
                    http.post(format!(
                        "http://{gateway_addr}/api/v1/internal/runtimes/{game}/{call}"
                    ))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(),
                );
            }
            _ => {}
        }
    }
    let restarts = async {
        assert!(stop_job.terminate_within(bound).await.success());
        let stop_job = spawn("stop-job", &[]).await;
        assert!(docker_events.terminate_within(bound).await.success());
        // Deaths while no listener runs: the new instance's catch-up (by
        // inspection, after it subscribed) or inspect-cron reports them.
        for (game, action) in &games {
            if died_during_restart(game, *action) {
                deal_death(&env, &http, game, *action).await;
            }
        }
        (stop_job, spawn("docker-events", &[]).await)
    };
    let (answers, (stop_job, docker_events)) = tokio::join!(join_all(calls), restarts);
    for answer in answers {
        let answer = answer.expect("the gateway answers");
        assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text().await);
    }

    // Phase 3: the other deaths behind rtmanager's back, with every process
    // up.
    for (game, action) in &games {
        if !died_during_restart(game, *action) {
            deal_death(&env, &http, game, *action).await;
        }
    }

    // The stream settles on one of the oracle's outcomes for every game...
    let mismatches = |events: &HashMap<String, Vec<String>>| -> Vec<String> {
        games
            .iter()
            .filter_map(|(game, action)| {
                let seen = events.get(game.as_str()).cloned().unwrap_or_default();
                let want = oracle(*action);
                (!want.holds(&seen)).then(|| {
                    format!(
                        "{game} ({action:?}): {seen:?}, want {:?} then at most once each of {:?}",
                        want.first, want.then
                    )
                })
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let settled = loop {
        let events = events_by_game(&env).await;
        let wrong = mismatches(&events);
        if wrong.is_empty() {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream does not match the oracle:\n{}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // ...and stays there: two more reconciling passes and probe rounds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = events_by_game(&env).await;
    for (game, action) in &games {
        assert_eq!(
            after.get(game.as_str()),
            settled.get(game.as_str()),
            "{game} ({action:?}): nothing after it settled"
        );
    }
    // Every job answered exactly once.
    let results = results_by_game(&env).await;
    for (game, action) in &games {
        let want = if *action == Action::Stop { 2 } else { 1 };
        let got = results.get(game.as_str()).cloned().unwrap_or_default();
        assert_eq!(got.len(), want, "{game} ({action:?}): {got:?}");
        assert!(
            got.iter().all(|r| r.starts_with("success/")),
            "{game}: {got:?}"
        );
    }
    for process in [
        start_job,
        stop_job,
        docker_events,
        inspect_cron,
        prober,
        gateway,
    ] {
        assert!(process.terminate_within(bound).await.success());
    }
}
