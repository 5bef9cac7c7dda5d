//! Bad input is a clear error, never a panic or a wrong code (issue 10), on
//! real PostgreSQL, Redis and Docker.

use shared::domain::{ErrorCode, OpSource, Outcome};
use shared::operations::StartRequest;
use system_tests::{docker, inspect, TestEnv, ENGINE};

/// A tagless image ref runs the image's `latest`, as the Docker CLI would
/// (the API would pull every tag of the repository for a pull without one),
/// while the record, the label and the replay keep the ref as written.
#[tokio::test]
async fn a_tagless_image_ref_runs_latest_and_is_kept_as_written() {
    let env = TestEnv::new().await;
    let repository = format!("galaxy-test/tagless-{}", env.id);
    docker(&["tag", ENGINE, &format!("{repository}:latest")]);
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("tagless");
    let request = StartRequest {
        game_id: game.clone(),
        image_ref: repository.clone(),
        op_source: OpSource::AdminRest,
        source_ref: "tagless".into(),
    };
    let started = operations.start(&request).await;
    let replayed = operations.start(&request).await;
    docker(&["rmi", "--no-prune", &format!("{repository}:latest")]);

    assert_eq!(started.outcome, Outcome::Success, "{started:?}");
    let record = started.record.unwrap();
    assert_eq!(
        record.current_image_ref.as_deref(),
        Some(repository.as_str())
    );
    let container = inspect(&record.current_container_id.unwrap()).unwrap();
    assert_eq!(container["Config"]["Image"], format!("{repository}:latest"));
    assert_eq!(
        container["Config"]["Labels"]["com.galaxy.engine_image_ref"],
        repository.as_str()
    );
    assert_eq!(
        (replayed.outcome, replayed.error_code),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
}

/// The pull error as bollard hands it over, straight from the daemon.
async fn pull_error(image: &str) -> bollard::errors::Error {
    use futures_util::TryStreamExt;
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    docker
        .create_image(Some(options), None, None)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect_err("the fake registry fails every pull")
}

/// A start whose pull the registry fails answers `image_pull_failed` with
/// its admin intent, both when the daemon refuses the pull request itself
/// and when the error comes inside the pull's progress stream; only a
/// daemon that cannot be reached is `docker_unavailable`.
#[tokio::test]
async fn a_pull_the_registry_fails_is_image_pull_failed_with_its_intent() {
    use system_tests::fake_registry::{Failure, FakeRegistry};
    let env = TestEnv::new().await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    for (failure, in_stream) in [
        (Failure::ManifestUnknown, false),
        (Failure::ConfigBlobMissing, true),
    ] {
        let registry = FakeRegistry::start(failure);
        let image = registry.image(&format!("galaxy/pull-{}", env.id), "1.0.0");
        let error = pull_error(&image).await;
        assert_eq!(
            matches!(error, bollard::errors::Error::DockerStreamError { .. }),
            in_stream,
            "{failure:?} reproduces its kind of failure: {error:?}"
        );

        let game = env.game(&format!("pull{}", in_stream as u8));
        let outcome = operations
            .start(&StartRequest {
                game_id: game.clone(),
                image_ref: image.clone(),
                op_source: OpSource::LobbyStream,
                source_ref: format!("pull-{failure:?}"),
            })
            .await;
        assert_eq!(
            (outcome.outcome, outcome.error_code),
            (Outcome::Failure, Some(ErrorCode::ImagePullFailed)),
            "{failure:?}: {outcome:?}"
        );
        assert!(
            !outcome.error_message.contains("127.0.0.1"),
            "the daemon's text stays in the log: {:?}",
            outcome.error_message
        );
        let intents = env.admin_intents(&game).await;
        assert_eq!(intents.len(), 1, "{failure:?}: {intents:?}");
        assert!(intents[0]["payload"].contains("image_pull_failed"));
        let made = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.galaxy.game_id={game}"),
        ]);
        assert_eq!(made.trim(), "", "{failure:?}: no container is made");
    }
}

/// A setting too large for the time arithmetic it reaches stops the
/// process at start-up with an error naming it: no panic, no half start.
#[tokio::test]
async fn a_huge_setting_stops_the_process_naming_it_without_a_panic() {
    let env = TestEnv::new().await;
    for (job, var, value) in [
        (
            "cleanup-cron",
            "RTMANAGER_CONTAINER_RETENTION_DAYS",
            "99999999999",
        ),
        (
            "healthz-prober",
            "RTMANAGER_PROBE_INTERVAL",
            "500000000years",
        ),
        ("inspect-cron", "RTMANAGER_INSPECT_TIMEOUT", "1000000000d"),
        (
            "start-job",
            "RTMANAGER_GAME_LEASE_TTL_SECONDS",
            "18446744073709551615",
        ),
        ("rest-gateway", "RTMANAGER_HTTP_REQUEST_TIMEOUT", "0s"),
    ] {
        let out = std::process::Command::new(system_tests::job_binary(job))
            .env_clear()
            .envs(env.vars.clone())
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{job} {var}={value}: {stderr}");
        assert!(stderr.contains(var), "{job} {var}={value}: {stderr}");
        assert!(
            stderr.contains("out of range"),
            "{job} {var}={value}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "{job} {var}={value}: {stderr}"
        );
    }
}
