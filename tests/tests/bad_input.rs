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
