//! A binary runs against a schema a newer release migrated: a migration it
//! does not know is applied (`_sqlx_migrations` holds a later version), and
//! it starts anyway, in `auto` and in `off`, saying so in its log. sqlx
//! refuses such a schema by default (`VersionMissing`), which would stop the
//! previous release during a rolling upgrade.

use system_tests::job_process::JobProcess;
use system_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_from_a_newer_release_is_accepted_in_auto_and_off() {
    let env = TestEnv::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000001, 'from a newer release', true, '\\x00', 1)",
    )
    .execute(env.db().pool())
    .await
    .unwrap();
    for (job, mode) in [("start-job", "auto"), ("stop-job", "off")] {
        let process = JobProcess::ready(
            &env,
            job,
            &[],
            &[("RTMANAGER_POSTGRES_MIGRATIONS", mode.to_owned())],
        )
        .await;
        let (status, output) = process.stop_with_output().await;
        assert!(status.success(), "{job} ({mode}): {output}");
        assert!(
            output.contains("the schema is newer than this binary")
                && output.contains("29991231000001"),
            "{job} ({mode}): {output}"
        );
    }
}
