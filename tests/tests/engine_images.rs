//! cleanup-cron removes engine images left behind by patches once unused for
//! `RTMANAGER_IMAGE_RETENTION`, and never the current image nor one another
//! container (rtmanager's or not) is made from. On real Docker, with images
//! of their own (built `FROM` the scratch test engine, each with a label of
//! its own so each has its own id).

use std::time::Duration;

use shared::domain::{GameId, OpSource, Outcome};
use shared::operations::{OperationRequest, Operations, StartRequest};
use system_tests::job_process::JobProcess;
use system_tests::{docker, TestEnv, ENGINE};

/// Images and a container the test made, removed on drop.
struct Made {
    images: Vec<String>,
    containers: Vec<String>,
}

impl Made {
    fn image(&mut self, image: &str) -> String {
        let dockerfile = format!("FROM {ENGINE}\nLABEL rtm.test.image={image}\n");
        let built = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s' \"$DF\" | docker build -q -t {image} -"
            ))
            .env("DF", dockerfile)
            .output()
            .expect("docker build");
        assert!(
            built.status.success(),
            "docker build {image}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        self.images.push(image.to_owned());
        image.to_owned()
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", c])
                .output();
        }
        for i in &self.images {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", i])
                .output();
        }
    }
}

fn image_exists(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn start_then_patch(svc: &Operations, game: &GameId, from: &str, to: &str) {
    let started = svc
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: from.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "start".into(),
        })
        .await;
    assert_eq!(started.outcome, Outcome::Success, "{started:?}");
    let request = OperationRequest {
        game_id: game.clone(),
        op_source: OpSource::GmRest,
        source_ref: "patch".into(),
    };
    let patched = svc.patch(&request, to).await;
    assert_eq!(patched.outcome, Outcome::Success, "{patched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patched_away_image_goes_after_the_retention_and_used_ones_stay() {
    let env = TestEnv::with(&[("RTMANAGER_IMAGE_RETENTION", "1m")]).await;
    let svc = system_tests::operations(&env.config, &env.infra).unwrap();
    let mut made = Made {
        images: Vec::new(),
        containers: Vec::new(),
    };
    let old = made.image(&format!("galaxy-test/img-{}:1.0.0", env.id));
    let current = made.image(&format!("galaxy-test/img-{}:1.0.1", env.id));
    let shared_old = made.image(&format!("galaxy-test/img2-{}:1.0.0", env.id));
    let shared_new = made.image(&format!("galaxy-test/img2-{}:1.0.1", env.id));
    start_then_patch(&svc, &env.game("patched"), &old, &current).await;
    start_then_patch(&svc, &env.game("other"), &shared_old, &shared_new).await;
    // A container rtmanager does not manage, never started, made from the
    // second game's old image.
    let bystander = format!("rtm-bystander-{}", env.id);
    docker(&["create", "--name", &bystander, &shared_old]);
    made.containers.push(bystander);

    // The first pass notes the left-behind image unused; it stays for now.
    let config = (&env.config).into();
    let report = cleanup_cron::pass(&svc, &env.infra, &config).await.unwrap();
    assert_eq!(report.images_removed, Vec::<String>::new());
    let noted: Vec<String> =
        sqlx::query_scalar("SELECT image_ref FROM unused_engine_images ORDER BY 1")
            .fetch_all(env.db().pool())
            .await
            .unwrap();
    assert_eq!(noted, vec![old.clone()]);
    let report = cleanup_cron::pass(&svc, &env.infra, &config).await.unwrap();
    assert_eq!(
        report.images_removed,
        Vec::<String>::new(),
        "before the retention"
    );
    assert!(image_exists(&old));

    // Past the retention (the recorded time moved back, not the test
    // waiting a minute): the cleanup-cron binary removes it, with its
    // metric and log line; the rest stay.
    sqlx::query("UPDATE unused_engine_images SET unused_since = now() - interval '2 minutes'")
        .execute(env.db().pool())
        .await
        .unwrap();
    let cron = JobProcess::ready(&env, "cleanup-cron", &["--every", "1s"], &[]).await;
    env.eventually("the image removed", Duration::from_secs(30), || async {
        let metrics = cron.metrics().await?;
        metrics
            .lines()
            .any(|l| l == "rtmanager_cleanup_images_removed_total 1")
            .then_some(())
    })
    .await;
    let (status, output) = cron.stop_with_output().await;
    assert!(status.success(), "{output}");
    assert!(
        output
            .lines()
            .any(|l| l.contains("engine image removed") && l.contains(&old)),
        "{output}"
    );
    assert!(!image_exists(&old), "{old} still there");
    for kept in [&current, &shared_old, &shared_new] {
        assert!(image_exists(kept), "{kept} was removed");
    }
    let noted: i64 = sqlx::query_scalar("SELECT count(*) FROM unused_engine_images")
        .fetch_one(env.db().pool())
        .await
        .unwrap();
    assert_eq!(noted, 0);
}
