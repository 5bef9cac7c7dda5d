//! Inspect pass (issue 14, item 4): one inspect pass of `inspect-cron`
//! (inspect-only, as between reconciles) over N managed containers started
//! through the real start service, against a bare loop doing the same
//! Docker calls (list by the owner label, inspect each, same concurrency),
//! alternating, medians reported; and what the passes write to PostgreSQL
//! when nothing changed (WAL bytes between before and after, on this
//! benchmark's private server).
//!
//! Run with `scripts/bench --only inspect`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use shared::domain::{OpSource, Outcome};
use shared::operations::StartRequest;
use system_tests::bench::{self, Figure};
use system_tests::{TestEnv, ENGINE};

async fn wal_lsn(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        .fetch_one(env.db().pool())
        .await
        .expect("WAL position")
}

async fn bare_pass(docker: &Docker, suffix: &str, concurrency: usize) -> usize {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec!["com.galaxy.owner=rtmanager".to_owned()],
    )]);
    let listed = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list");
    let ours: Vec<String> = listed
        .into_iter()
        .filter(|c| c.names.iter().flatten().any(|n| n.ends_with(suffix)))
        .filter_map(|c| c.id)
        .collect();
    futures_util::stream::iter(ours)
        .map(|id| async move { docker.inspect_container(&id, None).await.is_ok() })
        .buffer_unordered(concurrency)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let containers = bench::rounds(1000, 50);
    let repetitions = bench::rounds(5, 3);
    let env = TestEnv::new().await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let service = system_tests::operations(&env.config, &env.infra).expect("start service");
    let docker_rss_before = bench::docker_daemons_rss();
    let started_at = Instant::now();
    let failures = futures_util::stream::iter(0..containers)
        .map(|i| {
            let (service, game) = (&service, env.game(&format!("i{i}")));
            async move {
                let outcome = service
                    .start(&StartRequest {
                        game_id: game,
                        image_ref: ENGINE.to_owned(),
                        op_source: OpSource::AdminRest,
                        source_ref: "bench".into(),
                    })
                    .await;
                outcome.outcome == Outcome::Success
            }
        })
        .buffer_unordered(8)
        .filter(|ok| std::future::ready(!*ok))
        .count()
        .await;
    assert_eq!(failures, 0, "every start succeeds");
    // Starts through the real start service, 8 at once: what one Docker
    // host takes (its daemon serialises much of a create), for the scale model.
    bench::scale(
        "starts_per_s_8_at_once",
        containers as f64 / started_at.elapsed().as_secs_f64(),
        "starts/s",
    );
    eprintln!(
        "{containers} containers started in {:?}",
        started_at.elapsed()
    );
    env.flush_outbox().await;
    // Settled: the shims and the daemon's per-container state are made.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let docker_rss_after = bench::docker_daemons_rss();
    let docker_per_container =
        docker_rss_after.saturating_sub(docker_rss_before) as f64 / containers as f64;

    let inspector = inspect_cron::inspector(&(&env.config).into(), &env.infra);
    let concurrency = env.config.inspect.concurrency;
    // Warm-up: the first pass records what it observed.
    let first = inspector.pass(false).await.expect("inspect pass");
    assert_eq!(first.inspected.len(), containers, "{first:?}");
    let suffix = format!("-{}", env.id);
    bare_pass(&docker, &suffix, concurrency).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    let wal_before = wal_lsn(&env).await;
    let mut inspected = 0;
    for _ in 0..repetitions {
        let t = Instant::now();
        let report = inspector.pass(false).await.expect("inspect pass");
        ours.push(t.elapsed());
        inspected = report.inspected.len();
        let t = Instant::now();
        let n = bare_pass(&docker, &suffix, concurrency).await;
        peer.push(t.elapsed());
        assert_eq!(n, containers, "the bare loop inspects them all");
    }
    let wal_after = wal_lsn(&env).await;
    let (m_ours, m_peer) = (bench::median(&ours), bench::median(&peer));
    let mut figures = vec![
        Figure::at_most(
            &format!("inspect pass over {containers} containers, median"),
            bench::ms(m_ours),
            bench::ms(m_peer),
            m_ours.as_secs_f64() / m_peer.as_secs_f64(),
            1.2,
        ),
        Figure {
            name: format!("PostgreSQL WAL written by {repetitions} passes (nothing changed)"),
            ours: format!("{} bytes", wal_after - wal_before),
            peer: "0 bytes".to_owned(),
            ratio: 0.0,
            target: "0 writes".to_owned(),
            met: Some(wal_after - wal_before == 0),
        },
    ];
    figures.push(Figure::info(
        "Docker's own memory per container (dockerd, containerd, shims)",
        format!("{:.2} MiB", docker_per_container / 1048576.0),
        format!(
            "{:.1} MiB before the {containers}",
            docker_rss_before as f64 / 1048576.0
        ),
        docker_per_container / docker_rss_before.max(1) as f64,
    ));
    bench::scale(
        "inspect_ms_per_container",
        m_ours.as_secs_f64() * 1e3 / containers as f64,
        "ms",
    );
    bench::scale(
        "docker_mib_per_container",
        docker_per_container / 1048576.0,
        "MiB",
    );
    let notes = vec![format!(
        "{containers} containers of the `FROM scratch` test engine started through the real \
         start service (8 at once, {:?}); {repetitions} alternating inspect-only passes \
         (`Inspector::pass(false)`, concurrency {concurrency}, {inspected} inspected each) \
         and bare loops (bollard list by the owner label + `inspect_container` of each, \
         same concurrency), after one warm-up of each. The WAL delta covers only the measured \
         passes and bare loops (nothing else uses this benchmark's PostgreSQL server; a \
         checkpoint or autovacuum in the window would add bytes). The ratio column of the WAL \
         row is not meaningful. Docker's memory per container: the resident memory of \
         `dockerd`, `containerd` and the `containerd-shim` processes after the {containers} \
         started and settled, less before, per container (the engines' own memory is not \
         in it); its ratio column is that share of the daemons' memory before.",
        started_at.elapsed()
    )];
    bench::print_section(
        "4. Inspect pass",
        "An inspect-only pass of `inspect-cron` against a bare list + inspect loop over the same containers.",
        &figures,
        &notes,
        "scripts/bench --only inspect",
    );
}
