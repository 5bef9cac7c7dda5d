//! Property tests of every parser that input from outside reaches: the job
//! stream decoders, the game id, image ref and resource-limit parsers, and
//! the settings. None may panic, and every rejection carries its stable
//! answer (`invalid_request` for a job entry, the variable's name for a
//! setting).
//!
//! Deterministic in CI: a fixed seed and case count (`PROPTEST_RNG_SEED`
//! and `PROPTEST_CASES` override them for a longer run, see the README's
//! "Property tests"). No failure files are written.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use shared::config::ranges::RANGES;
use shared::domain::limits::{CpuQuota, MemoryLimit, PidsLimit};
use shared::domain::{ErrorCode, GameId, ImageRef, MalformedJob, StartJob, StopJob};
use shared::stream_consumer::JobDisposition;

/// 512 cases from seed 10 unless the environment asks for more.
fn config() -> Config {
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(10);
    }
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    config
}

/// Any text, weighted towards what the parsers look at: ASCII punctuation,
/// digits, separators, multi-byte characters and long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_./:@-]{0,80}",
        "[0-9.]{0,12}[bkmgtpiBKMGTPI ]{0,3}",
        "[\\PC]{0,40}",
        "[a-z0-9]{1,200}",
    ]
}

/// A job entry's fields: the contract's names and stray ones, any values.
fn fields() -> impl Strategy<Value = HashMap<String, String>> {
    let name = prop_oneof![
        Just("game_id".to_owned()),
        Just("image_ref".to_owned()),
        Just("reason".to_owned()),
        Just("requested_at_ms".to_owned()),
        Just("requested_at".to_owned()),
        text(),
    ];
    let value = prop_oneof![
        text(),
        "-?[0-9]{1,25}",
        Just("orphan_cleanup".to_owned()),
        Just("game-1".to_owned()),
        Just("galaxy/game:1.2.3".to_owned()),
    ];
    proptest::collection::hash_map(name, value, 0..6)
}

/// A rejected entry is dead-lettered, and answered `invalid_request` under
/// the game id it carries, as sent (even an invalid one: Lobby matches
/// results by it; only a valid one ever reaches a name, path or row key).
fn assert_rejected_as_invalid(malformed: MalformedJob, fields: &HashMap<String, String>) {
    let game_id = malformed.game_id.clone();
    match &game_id {
        Some(id) => assert_eq!(fields.get("game_id"), Some(id)),
        None => assert!(fields.get("game_id").is_none_or(String::is_empty)),
    }
    match JobDisposition::from(malformed) {
        JobDisposition::Malformed { reason, result } => {
            assert!(!reason.is_empty());
            assert_eq!(result.is_some(), game_id.is_some());
            if let Some(r) = result {
                assert_eq!(r.error_code, Some(ErrorCode::InvalidRequest));
            }
        }
        other => panic!("a malformed entry became {other:?}"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn start_job_entries_decode_or_are_rejected_as_invalid(fields in fields()) {
        match StartJob::decode(&fields) {
            Ok(job) => {
                prop_assert_eq!(Some(job.game_id.as_str()), fields.get("game_id").map(String::as_str));
                prop_assert_eq!(Some(&job.image_ref), fields.get("image_ref"));
            }
            Err(malformed) => assert_rejected_as_invalid(malformed, &fields),
        }
    }

    #[test]
    fn stop_job_entries_decode_or_are_rejected_as_invalid(fields in fields()) {
        match StopJob::decode(&fields) {
            Ok(job) => {
                prop_assert_eq!(Some(job.game_id.as_str()), fields.get("game_id").map(String::as_str));
            }
            Err(malformed) => assert_rejected_as_invalid(malformed, &fields),
        }
    }

    #[test]
    fn game_ids_parse_to_themselves_or_are_refused(raw in text()) {
        if let Ok(id) = GameId::parse(&raw) {
            prop_assert_eq!(id.as_str(), raw.as_str());
            // What a valid id reaches: a container name and a path segment.
            prop_assert!(!id.container_name().contains(['/', ' ']));
            prop_assert!(!raw.contains(".."));
        }
    }

    #[test]
    fn image_refs_parse_or_are_refused_and_docker_gets_a_tag(raw in text()) {
        if let Ok(image) = ImageRef::parse(&raw) {
            let for_docker = image.for_docker();
            prop_assert!(for_docker.contains(':') || for_docker.contains('@'), "{}", for_docker);
        }
    }

    #[test]
    fn resource_limits_parse_in_range_or_are_refused(raw in text()) {
        if let Ok(memory) = MemoryLimit::parse(&raw) {
            prop_assert!(memory.bytes() >= 6 * 1024 * 1024);
        }
        if let Ok(cpu) = CpuQuota::parse(&raw) {
            prop_assert!((10_000_000..=1_024_000_000_000).contains(&cpu.nano_cpus()));
        }
        if let Ok(pids) = PidsLimit::parse(&raw) {
            prop_assert!(pids.get() > 0);
        }
    }

    /// Any value of any setting: a configuration, or an error naming a
    /// variable; never a panic, never the password.
    #[test]
    fn settings_parse_or_name_the_variable(
        picks in proptest::collection::vec((0..RANGES.len() + STRINGS.len(), text()), 1..4)
    ) {
        let mut vars = vec![
            ("RTMANAGER_POSTGRES_PRIMARY_DSN".to_owned(), "postgres://u:hunter2@h/db".to_owned()),
            ("RTMANAGER_REDIS_MASTER_ADDR".to_owned(), "127.0.0.1:6379".to_owned()),
        ];
        for (index, value) in picks {
            let name = RANGES
                .get(index)
                .map(|(var, _)| *var)
                .unwrap_or_else(|| STRINGS[index - RANGES.len()]);
            vars.push((format!("RTMANAGER_{name}"), value));
        }
        if let Err(e) = shared::config::Config::from_vars(vars) {
            let message = e.to_string();
            prop_assert!(message.contains("RTMANAGER_"), "{}", message);
            prop_assert!(!message.contains("hunter2"), "{}", message);
        }
    }
}

/// The settings parsed from text by rules of their own.
const STRINGS: &[&str] = &[
    "DEFAULT_MEMORY",
    "DEFAULT_CPU_QUOTA",
    "DEFAULT_PIDS_LIMIT",
    "GAME_STATE_DIR_MODE",
    "GAME_STATE_ROOT",
    "IMAGE_PULL_POLICY",
    "DOCKER_LOG_OPTS",
    "PROBE_ADDRESS_MODE",
    "SHARD_INDEX",
    "INTERNAL_HTTP_ADDR",
    "API_AUTH",
    "REDIS_SENTINEL_ADDRS",
    "REDIS_MASTER_ADDR",
    "REDIS_USERNAME",
    "ENGINE_STATE_ENV_NAME",
    "STREAM_MIN_AGE",
    "START_JOBS_GROUP_START_ID",
];
