//! Long suite (`scripts/test --long`): start-job scaled out under load, with
//! one consumer killed mid-way.

use std::collections::HashMap;
use std::time::Duration;

use system_tests::{TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

const GAMES: usize = 40;

#[tokio::test]
#[ignore = "long: run with scripts/test --long"]
async fn three_consumers_answer_every_job_once_even_when_one_dies() {
    let env = TestEnv::with(&[("RTMANAGER_JOB_RECLAIM_IDLE", "3s")]).await;
    let games: Vec<_> = (0..GAMES).map(|i| env.game(&format!("scale{i}"))).collect();
    let mut consumers = Vec::new();
    for i in 0..3 {
        let mut config = env.config.clone();
        config.common.process.instance = format!("consumer-{i}");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(start_job::run(
            (&config).into(),
            env.infra.clone(),
            stop.clone(),
        ));
        consumers.push((stop, handle));
    }
    for g in &games {
        env.xadd(
            &env.config.start_jobs.stream,
            &[("game_id", g.as_str()), ("image_ref", ENGINE)],
        )
        .await;
    }
    // Kill one consumer abruptly once work is under way: its entries in
    // flight must be reclaimed by the others and answered once.
    env.eventually("some results", Duration::from_secs(120), || async {
        (env.read_stream(&env.config.common.streams.job_results)
            .await
            .len()
            >= 3)
            .then_some(())
    })
    .await;
    let (_, victim) = consumers.remove(0);
    victim.abort();

    let results = env
        .eventually("every result", Duration::from_secs(300), || async {
            let r = env
                .read_stream(&env.config.common.streams.job_results)
                .await;
            (r.len() >= GAMES).then_some(r)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let results = env
        .read_stream(&env.config.common.streams.job_results)
        .await
        .len()
        .max(results.len());
    assert_eq!(results, GAMES, "one result per job, none twice");
    let mut per_game: HashMap<String, usize> = HashMap::new();
    for (_, f) in env
        .read_stream(&env.config.common.streams.job_results)
        .await
    {
        assert_eq!(f["outcome"], "success", "{f:?}");
        *per_game.entry(f["game_id"].clone()).or_default() += 1;
    }
    assert_eq!(per_game.len(), GAMES);
    for g in &games {
        let c = system_tests::inspect(&g.container_name()).expect("container");
        assert_eq!(c["State"]["Status"], "running");
    }
    for (stop, handle) in consumers {
        stop.cancel();
        handle.await.unwrap().unwrap();
    }
}
