//! The `rest-gateway` binary's TLS on real sockets, against real Redis,
//! PostgreSQL and Docker, with certificates a test CA makes: HTTPS only when
//! both files are set (200 with a token, 401 without, plain HTTP refused, an
//! untrusted CA refused), the certificate reloaded on a real SIGHUP and a bad
//! reload keeping it, one file without the other or a bad file stopping the
//! process naming the variables, and plain HTTP with a warning and
//! `rtmanager_api_tls_disabled 1` when neither is set. The metrics listener
//! stays plain HTTP either way.

use std::path::PathBuf;
use std::time::Duration;

use system_tests::https::{self, TestCa};
use system_tests::job_process::JobProcess;
use system_tests::TestEnv;

const TOKEN: &str = "tls-test-token-0123456789abcdef0123456789";
const CERT_VAR: &str = "RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE";
const KEY_VAR: &str = "RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE";
const ROUTE: &str = "/api/v1/internal/runtimes";
const DEADLINE: Duration = Duration::from_secs(30);

fn tls_dir(env: &TestEnv) -> PathBuf {
    let dir = env.state_root.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The gateway's own settings: the API on a free port, a token, and `more`.
fn gateway_vars(addr: &str, more: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("RTMANAGER_INTERNAL_HTTP_ADDR", addr.to_owned()),
        ("RTMANAGER_API_TOKENS", TOKEN.to_owned()),
    ];
    vars.extend(more.iter().cloned());
    vars
}

/// A sample of the process's `/metrics` (plain HTTP, its metrics port).
async fn metric(gateway: &JobProcess, series: &str) -> Option<String> {
    let text = gateway.metrics().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_api_is_https_only_and_sighup_serves_a_new_one() {
    let env = TestEnv::with(&[]).await;
    let dir = tls_dir(&env);
    let ca = TestCa::new("gateway");
    let first = ca.issue(&dir, "first");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let addr = format!("127.0.0.1:{}", system_tests::free_port());
    let vars = gateway_vars(
        &addr,
        &[
            (CERT_VAR, cert.display().to_string()),
            (KEY_VAR, key.display().to_string()),
        ],
    );
    let gateway = JobProcess::ready(&env, "rest-gateway", &[], &vars).await;

    // A client that trusts the CA: 200 with the token, 401 without.
    let with_token = https::get(&addr, &ca.pem(), ROUTE, Some(TOKEN))
        .await
        .expect("HTTPS answers");
    assert_eq!(with_token.status, 200, "{with_token:?}");
    assert_eq!(with_token.server_cert, first.der);
    let without = https::get(&addr, &ca.pem(), ROUTE, None).await.unwrap();
    assert_eq!(without.status, 401, "{without:?}");
    // The open probes are HTTPS on the API port too.
    let health = https::get(&addr, &ca.pem(), "/healthz", None)
        .await
        .unwrap();
    assert_eq!(health.status, 200, "{health:?}");

    // Plain HTTP to the TLS port gets no HTTP answer, and a client that
    // trusts another CA does not get through the handshake.
    let plain = https::plain_http_get(&addr, ROUTE)
        .await
        .unwrap_or_default();
    assert!(
        !plain.starts_with(b"HTTP/"),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&plain)
    );
    let stranger = TestCa::new("stranger");
    let refused = https::get(&addr, &stranger.pem(), ROUTE, Some(TOKEN)).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("handshake")),
        "{refused:?}"
    );

    assert_eq!(
        metric(&gateway, "rtmanager_api_tls_disabled")
            .await
            .as_deref(),
        Some("0")
    );
    assert!(!gateway.output().contains("serves plain HTTP"));

    // Rotation: new files in place (renamed over, as a secret volume does),
    // then SIGHUP; new handshakes get the new certificate.
    let second = ca.issue(&dir, "second");
    std::fs::rename(&second.cert, &cert).unwrap();
    std::fs::rename(&second.key, &key).unwrap();
    gateway.signal("HUP");
    let served = env
        .eventually("the new certificate served", DEADLINE, || async {
            let answer = https::get(&addr, &ca.pem(), ROUTE, Some(TOKEN))
                .await
                .ok()?;
            (answer.server_cert == second.der).then_some(answer)
        })
        .await;
    assert_eq!(served.status, 200, "{served:?}");

    // A bad key at SIGHUP: logged and counted; the certificate in force
    // stays.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    gateway.signal("HUP");
    env.eventually("the failed reload counted", DEADLINE, || async {
        let failures = metric(&gateway, "rtmanager_api_tls_reload_failures_total").await?;
        (failures == "1").then_some(())
    })
    .await;
    let after = https::get(&addr, &ca.pem(), ROUTE, Some(TOKEN))
        .await
        .unwrap();
    assert_eq!((after.status, &after.server_cert), (200, &second.der));
    let (status, output) = gateway.stop_with_output().await;
    assert!(status.success(), "{status:?}\n{output}");
    assert!(
        output.contains("API TLS reload failed") && output.contains(KEY_VAR),
        "{output}"
    );
    assert!(!output.contains("bm90IGEga2V5"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tls_file_without_the_other_or_a_bad_file_stops_the_gateway_naming_it() {
    let env = TestEnv::with(&[]).await;
    let dir = tls_dir(&env);
    let pair = TestCa::new("start-up").issue(&dir, "server");
    let addr = format!("127.0.0.1:{}", system_tests::free_port());
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let missing = dir.join("missing.crt").display().to_string();
    let other_key = TestCa::new("other").issue(&dir, "other").key;
    for (more, names) in [
        (vec![(CERT_VAR, cert.clone())], vec![CERT_VAR, KEY_VAR]),
        (vec![(KEY_VAR, key.clone())], vec![CERT_VAR, KEY_VAR]),
        (
            vec![(CERT_VAR, missing.clone()), (KEY_VAR, key.clone())],
            vec![CERT_VAR, &missing],
        ),
        (
            vec![(CERT_VAR, key.clone()), (KEY_VAR, key.clone())],
            vec![CERT_VAR],
        ),
        (
            vec![
                (CERT_VAR, cert.clone()),
                (KEY_VAR, other_key.display().to_string()),
            ],
            vec![KEY_VAR, "does not match"],
        ),
    ] {
        let gateway =
            JobProcess::spawn("rest-gateway", &env.vars, &gateway_vars(&addr, &more), &[]);
        let (status, output) = gateway.exits_within(DEADLINE).await;
        assert!(!status.success(), "{more:?}: {status:?}\n{output}");
        for name in &names {
            assert!(output.contains(name), "{more:?}: no {name} in\n{output}");
        }
        assert!(!output.contains("PRIVATE KEY"), "{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_files_the_api_is_plain_http_with_a_warning_and_a_metric() {
    let env = TestEnv::with(&[]).await;
    let addr = format!("127.0.0.1:{}", system_tests::free_port());
    let gateway = JobProcess::ready(&env, "rest-gateway", &[], &gateway_vars(&addr, &[])).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = http
        .get(format!("http://{addr}{ROUTE}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("plain HTTP answers");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        metric(&gateway, "rtmanager_api_tls_disabled")
            .await
            .as_deref(),
        Some("1")
    );
    let (status, output) = gateway.stop_with_output().await;
    assert!(status.success(), "{status:?}\n{output}");
    let warning = output
        .lines()
        .find(|l| l.contains("the API serves plain HTTP"))
        .unwrap_or_else(|| panic!("no warning in\n{output}"));
    assert!(warning.contains("\"WARN\""), "{warning}");
    assert!(
        warning.contains(CERT_VAR) && warning.contains(KEY_VAR),
        "{warning}"
    );
}
