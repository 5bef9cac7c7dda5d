//! Every message type, published through the real publishers, lands in Redis
//! in the shape the contract files describe.

use shared::domain::{
    AdminIntent, ErrorCode, EventType, HealthDetails, HealthEvent, HealthSource, JobResult,
    NotificationType, Outcome,
};
use system_tests::contract::Contract;
use system_tests::TestEnv;

fn all_health_details() -> Vec<HealthDetails> {
    vec![
        HealthDetails::ContainerStarted {
            image_ref: "galaxy/game:1.4.7".into(),
        },
        HealthDetails::ContainerExited {
            exit_code: 137,
            oom: false,
        },
        HealthDetails::ContainerOom { exit_code: 137 },
        HealthDetails::ContainerDisappeared,
        HealthDetails::InspectUnhealthy {
            restart_count: 2,
            state: "restarting".into(),
            health: "unhealthy".into(),
        },
        HealthDetails::ProbeFailed {
            consecutive_failures: 3,
            last_status: 0,
            last_error: "timeout".into(),
        },
        HealthDetails::ProbeRecovered {
            prior_failure_count: 3,
        },
    ]
}

#[tokio::test]
async fn every_health_event_type_matches_the_contract_and_its_snapshot() {
    let env = TestEnv::new().await;
    let contract = Contract::load("runtime-health.asyncapi.yaml");
    let game = env.game("contract");
    let details = all_health_details();
    for (i, d) in details.iter().enumerate() {
        let event = HealthEvent {
            game_id: game.clone(),
            container_id: format!("c{i}"),
            occurred_at_ms: 1_775_121_700_000 + i as i64,
            details: d.clone(),
        };
        // The source that stages each type in production.
        let source = match event.event_type() {
            EventType::ContainerStarted => HealthSource::Start,
            EventType::ContainerExited | EventType::ContainerOom => HealthSource::DockerEvents,
            EventType::ContainerDisappeared | EventType::InspectUnhealthy => {
                HealthSource::InspectCron
            }
            EventType::ProbeFailed | EventType::ProbeRecovered => HealthSource::HealthzProber,
        };
        let outbox = &env.infra.outbox;
        outbox
            .publish(&[outbox.health(source, &event)])
            .await
            .expect("emit");
    }
    env.flush_outbox().await;
    let entries = env
        .read_stream(&env.config.common.streams.health_events)
        .await;
    assert_eq!(entries.len(), details.len());
    for ((_, fields), d) in entries.iter().zip(&details) {
        contract.assert_valid("RuntimeHealthEventPayload", fields);
        assert_eq!(fields["event_type"], d.event_type().as_str());
    }
    let (status, event_type, container_id, snapshot_details) =
        env.snapshot(&game).await.expect("snapshot");
    assert_eq!(
        (status.as_str(), event_type.as_str(), container_id.as_str()),
        ("healthy", "probe_recovered", "c6")
    );
    assert_eq!(
        snapshot_details,
        serde_json::json!({"prior_failure_count": 3})
    );
}

#[tokio::test]
async fn the_validator_rejects_what_the_contract_forbids() {
    let contract = Contract::load("runtime-health.asyncapi.yaml");
    let mut fields: std::collections::HashMap<String, String> = [
        ("game_id", "g"),
        ("container_id", "c"),
        ("event_type", "container_oom"),
        ("occurred_at_ms", "1"),
        ("details", r#"{"exit_code":137,"oom":true}"#),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert!(!contract
        .errors("RuntimeHealthEventPayload", &fields)
        .is_empty());
    fields.insert("details".into(), r#"{"exit_code":137}"#.into());
    assert!(contract
        .errors("RuntimeHealthEventPayload", &fields)
        .is_empty());
    fields.insert("extra".into(), "x".into());
    assert!(!contract
        .errors("RuntimeHealthEventPayload", &fields)
        .is_empty());
}

#[tokio::test]
async fn job_results_and_admin_intents_match_their_contracts() {
    let env = TestEnv::new().await;
    let jobs = Contract::load("runtime-jobs.asyncapi.yaml");
    let intents = Contract::load("notification-intents.asyncapi.yaml");
    let game = env.game("contract");
    let publisher = &env.infra.outbox;
    let results = [
        JobResult {
            game_id: game.to_string(),
            outcome: Outcome::Success,
            container_id: "abc".into(),
            engine_endpoint: game.engine_endpoint(),
            error_code: None,
            error_message: String::new(),
        },
        JobResult {
            game_id: game.to_string(),
            outcome: Outcome::Success,
            container_id: "abc".into(),
            engine_endpoint: game.engine_endpoint(),
            error_code: Some(ErrorCode::ReplayNoOp),
            error_message: String::new(),
        },
        JobResult::malformed("../x", "game_id is invalid"),
    ];
    let mut messages: Vec<_> = results
        .iter()
        .enumerate()
        .map(|(i, r)| publisher.job_result(r, &format!("job-{i}")))
        .collect();
    for (i, t) in [
        NotificationType::ImagePullFailed,
        NotificationType::ContainerStartFailed,
        NotificationType::StartConfigInvalid,
    ]
    .into_iter()
    .enumerate()
    {
        let code = match t {
            NotificationType::ImagePullFailed => ErrorCode::ImagePullFailed,
            NotificationType::ContainerStartFailed => ErrorCode::ContainerStartFailed,
            NotificationType::StartConfigInvalid => ErrorCode::StartConfigInvalid,
        };
        messages.push(publisher.intent(&AdminIntent {
            notification_type: t,
            game_id: game.clone(),
            image_ref: "galaxy/game:1.4.7".into(),
            error_code: code,
            error_message: "boom".into(),
            attempted_at_ms: 1_775_121_700_000 + i as i64,
        }));
    }
    publisher.publish(&messages).await.expect("publish");
    // A repeated result for the same job key is absorbed, not published twice.
    let again = publisher
        .publish(&messages[..1])
        .await
        .expect("publish again");
    assert_eq!(again, [false]);
    env.flush_outbox().await;

    let published = env
        .read_stream(&env.config.common.streams.job_results)
        .await;
    assert_eq!(published.len(), 3);
    for (_, fields) in &published {
        jobs.assert_valid("RuntimeJobResult", fields);
    }
    assert_eq!(published[2].1["error_code"], "invalid_request");
    let published = env
        .read_stream(&env.config.common.streams.notification_intents)
        .await;
    assert_eq!(published.len(), 3);
    for (_, fields) in &published {
        intents.assert_valid("NotificationIntentEnvelope", fields);
    }
}
