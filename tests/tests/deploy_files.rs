//! The wiring of the deployment files, `compose/docker-compose.yml` and
//! `k8s/`, checked against the code (their schemas are checked by
//! `scripts/test`: `docker-compose config` and `kubernetes-validate`):
//!
//! - every process's settings, exactly as the file gives them, pass that
//!   job's own configuration parser (`<Job>Config::from_env`; the gateway's
//!   tokens through `Auth::from_config`), files a secret would mount stood
//!   in by valid ones: so every setting a process requires is provided;
//! - the images are the project's, one per job;
//! - the health checks run `/job healthcheck` (compose), the probes point at
//!   `/healthz` and `/readyz` (Kubernetes);
//! - the Docker socket is mounted exactly where the job uses Docker (the
//!   prober asked through its settings: `hostname` mode does not);
//! - least privilege: all capabilities dropped (CHOWN and FOWNER added back
//!   only where game directories are chowned), no privilege escalation, a
//!   read-only root, non-root where no directory is chowned;
//! - only healthz-prober is on `galaxy-net`, the gateway on `rtmanager-api`;
//! - the prober's shard count equals its replicas;
//! - secrets carry placeholders only.
//!
//! Needs no service; `docker-compose` must be installed (scripts/test does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;
use shared::config::{Env, JobConfig, PostgresConfig, ProcessConfig};

/// The jobs, in the order the files list them.
const JOBS: &[&str] = &[
    "start-job",
    "stop-job",
    "docker-events",
    "inspect-cron",
    "cleanup-cron",
    "healthz-prober",
    "rest-gateway",
];

/// The jobs that chown game directories (start, restart, patch): root, with
/// CHOWN and FOWNER added back.
const CHOWNS: &[&str] = &["start-job", "rest-gateway"];

/// A token that passes the gateway's checks (32+ characters, no placeholder).
const STRONG_TOKEN: &str = "0f3c9a7e51d24b8a9c6e0d1f2a3b4c5d6e7f8091a2b3c4d5";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|seq| seq.iter().map(|x| s(x).to_owned()).collect())
        .unwrap_or_default()
}

/// Files standing in for what a secret mounts, valid for the parsers.
struct Stand {
    dir: PathBuf,
}

impl Stand {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rtm-deploy-files-{}",
            system_tests::random_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A real pair: the gateway's TLS loader reads it as the settings name it.
        system_tests::https::TestCa::new("deploy-files").issue(&dir, "tls");
        write_private(&dir.join("tokens"), &format!("{STRONG_TOKEN}\n"));
        write_private(&dir.join("password"), "a-redis-password\n");
        Self { dir }
    }

    /// The stand-in for the file variable `var`.
    fn file_for(&self, var: &str) -> Option<String> {
        let name = if var.ends_with("_TOKENS_FILE") {
            "tokens"
        } else if var.ends_with("_TLS_CERT_FILE") {
            "tls.crt"
        } else if var.ends_with("_TLS_KEY_FILE") {
            "tls.key"
        } else if var.ends_with("_PASSWORD_FILE") {
            "password"
        } else {
            return None;
        };
        Some(self.dir.join(name).to_string_lossy().into_owned())
    }

    /// `vars` with every secret file variable pointed at its stand-in.
    fn env(&self, vars: &BTreeMap<String, String>) -> Env {
        Env::from_vars(vars.iter().map(|(k, v)| {
            let v = match self.file_for(k) {
                Some(file) if !v.is_empty() => file,
                _ => v.clone(),
            };
            (k.clone(), v)
        }))
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The job's own parser on `env`; the error names the variable. Returns
/// whether the job uses Docker with these settings.
fn parse_settings(job: &str, env: &Env, args: &[String]) -> Result<bool, String> {
    fn parsed<C: JobConfig>(env: &Env) -> Result<C, String> {
        C::from_env(env).map_err(|e| e.to_string())
    }
    if args.first().map(String::as_str) == Some("migrate") {
        env.section::<ProcessConfig>().map_err(|e| e.to_string())?;
        env.section::<PostgresConfig>().map_err(|e| e.to_string())?;
        return Ok(false);
    }
    Ok(match job {
        "start-job" => parsed::<start_job::StartJobConfig>(env)?.uses_docker(),
        "stop-job" => parsed::<stop_job::StopJobConfig>(env)?.uses_docker(),
        "docker-events" => parsed::<docker_events::DockerEventsConfig>(env)?.uses_docker(),
        "inspect-cron" => parsed::<inspect_cron::InspectCronConfig>(env)?.uses_docker(),
        "cleanup-cron" => parsed::<cleanup_cron::CleanupCronConfig>(env)?.uses_docker(),
        "healthz-prober" => parsed::<healthz_prober::HealthzProberConfig>(env)?.uses_docker(),
        "rest-gateway" => {
            let config = parsed::<rest_gateway::settings::RestGatewayConfig>(env)?;
            rest_gateway::auth::Auth::from_config(&config.gateway)
                .map_err(|e| format!("API authentication: {e}"))?;
            config.uses_docker()
        }
        other => panic!("no job {other}"),
    })
}

/// The job an image is of: `<registry>/rtmanager/<job>:<tag>`.
fn image_job(image: &str) -> Option<&str> {
    let (path, tag) = image.rsplit_once(':')?;
    let job = path
        .strip_prefix("registry.example.com/rtmanager/")
        .or_else(|| path.rsplit_once("/rtmanager/").map(|(_, job)| job))?;
    (!tag.is_empty() && JOBS.contains(&job)).then_some(job)
}

// ---------------------------------------------------------------------------
// compose
// ---------------------------------------------------------------------------

/// `docker-compose config` of the file with every profile and dummy values:
/// the model compose itself resolves (anchors, merges, interpolation).
fn compose_model() -> Value {
    let compose = repo().join("compose/docker-compose.yml");
    let out = Command::new("docker-compose")
        .args([
            "-f",
            compose.to_str().unwrap(),
            "--profile",
            "sentinel",
            "--profile",
            "monitoring",
            "config",
        ])
        .env("POSTGRES_PASSWORD", "CHANGE-ME-superuser")
        .env("POSTGRES_OWNER_PASSWORD", "CHANGE-ME-owner")
        .env("POSTGRES_SERVICE_PASSWORD", "CHANGE-ME-service")
        .env("DOCKER_GID", "998")
        .output()
        .expect("docker-compose (scripts/test installs it)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::from_slice(&out.stdout).expect("docker-compose config prints YAML")
}

fn compose_env(service: &Value) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    if let Some(map) = service["environment"].as_mapping() {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
            };
            vars.insert(s(k).to_owned(), v);
        }
    }
    vars
}

fn mounts_socket(volumes: &Value) -> bool {
    volumes.as_sequence().into_iter().flatten().any(|v| {
        let target = v["target"].as_str().map(str::to_owned).or_else(|| {
            v.as_str()
                .and_then(|x| x.split(':').nth(1))
                .map(str::to_owned)
        });
        target.as_deref() == Some("/var/run/docker.sock")
    })
}

fn service_networks(service: &Value) -> BTreeSet<String> {
    match &service["networks"] {
        Value::Mapping(m) => m.keys().map(|k| s(k).to_owned()).collect(),
        Value::Sequence(seq) => seq.iter().map(|k| s(k).to_owned()).collect(),
        _ => BTreeSet::new(),
    }
}

#[test]
fn every_compose_job_is_wired_as_its_code_reads_it_with_least_privilege() {
    let model = compose_model();
    let stand = Stand::new();
    let services = model["services"].as_mapping().expect("services");
    let mut seen = BTreeSet::new();
    for (name, service) in services {
        let name = s(name);
        let image = s(&service["image"]);
        let Some(job) = image_job(image) else {
            // Redis, PostgreSQL and the monitoring profile: not ours.
            assert!(
                !JOBS.contains(&name),
                "{name}: image {image:?} is not the project's"
            );
            assert!(
                !service_networks(service).contains("galaxy-net"),
                "{name} is on galaxy-net"
            );
            continue;
        };
        let args = strings(&service["command"]);
        let one_shot = args.first().map(String::as_str) == Some("migrate");
        if !one_shot {
            assert_eq!(job, name, "{name}: runs the image of {job}");
            seen.insert(job);
        } else {
            assert_eq!(job, "rest-gateway", "{name}: `migrate` is rest-gateway's");
        }
        assert_eq!(
            s(&service["build"]["args"]["JOB"]),
            job,
            "{name}: builds another job's binary"
        );

        let vars = compose_env(service);
        let uses_docker = parse_settings(job, &stand.env(&vars), &args)
            .unwrap_or_else(|e| panic!("{name}: its settings do not start it: {e}"));
        assert_eq!(
            mounts_socket(&service["volumes"]),
            uses_docker,
            "{name}: the Docker socket is mounted where it is {}used",
            if uses_docker { "" } else { "not " }
        );
        if !one_shot {
            assert_eq!(
                strings(&service["healthcheck"]["test"]),
                ["CMD", "/job", "healthcheck"],
                "{name}: the health check runs the binary"
            );
            assert_eq!(
                vars.get("RTMANAGER_POSTGRES_MIGRATIONS")
                    .map(String::as_str),
                Some("off"),
                "{name}: the jobs leave migrations to `migrate`"
            );
            assert!(
                vars["RTMANAGER_POSTGRES_PRIMARY_DSN"].starts_with("postgres://rtmanagerservice:"),
                "{name}: the jobs connect as rtmanagerservice"
            );
            assert_eq!(
                service["depends_on"]["migrate"]["condition"].as_str(),
                Some("service_completed_successfully"),
                "{name}: starts after the migrations"
            );
            assert!(
                vars.contains_key("RTMANAGER_REDIS_PASSWORD_FILE")
                    && !vars.contains_key("RTMANAGER_REDIS_PASSWORD"),
                "{name}: the Redis password comes from the secret file"
            );
        } else {
            assert!(
                vars["RTMANAGER_POSTGRES_PRIMARY_DSN"].starts_with("postgres://rtmanager_owner:"),
                "{name}: migrations run as the owner"
            );
        }

        assert_eq!(strings(&service["cap_drop"]), ["ALL"], "{name}: cap_drop");
        let added: BTreeSet<String> = strings(&service["cap_add"]).into_iter().collect();
        let user = s(&service["user"]);
        assert!(!user.is_empty(), "{name}: no user: set");
        if CHOWNS.contains(&job) && !one_shot {
            assert_eq!(
                added,
                BTreeSet::from(["CHOWN".into(), "FOWNER".into()]),
                "{name}"
            );
            assert_eq!(user, "0:0", "{name}: chowns game directories as root");
        } else {
            assert!(added.is_empty(), "{name}: adds {added:?}");
            assert!(
                !user.starts_with("0:") && user != "0",
                "{name}: root without need"
            );
            if uses_docker {
                assert!(
                    !strings(&service["group_add"]).is_empty(),
                    "{name}: non-root with the socket needs its group"
                );
            }
        }
        assert!(
            strings(&service["security_opt"]).contains(&"no-new-privileges:true".to_owned()),
            "{name}: no-new-privileges"
        );
        assert_eq!(
            service["read_only"].as_bool(),
            Some(true),
            "{name}: read_only"
        );

        let networks = service_networks(service);
        assert_eq!(
            networks.contains("galaxy-net"),
            name == "healthz-prober",
            "{name}: only the prober joins galaxy-net ({networks:?})"
        );
        if name == "rest-gateway" {
            assert!(networks.contains("rtmanager-api"), "{networks:?}");
            for var in [
                "RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE",
                "RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE",
                "RTMANAGER_API_TOKENS_FILE",
            ] {
                assert!(
                    vars.get(var)
                        .is_some_and(|v| v.starts_with("/run/secrets/")),
                    "{var}"
                );
            }
        } else {
            assert!(!networks.contains("rtmanager-api"), "{name}: {networks:?}");
        }
        if name == "healthz-prober" {
            assert_eq!(vars["RTMANAGER_SHARD_COUNT"], "1");
            assert_eq!(service["deploy"]["replicas"].as_u64().unwrap_or(1), 1);
        }
    }
    assert_eq!(
        seen,
        JOBS.iter().copied().collect(),
        "every job is a service"
    );
    assert!(
        model["networks"]["galaxy-net"]["external"].as_bool() == Some(true),
        "galaxy-net is the operator's"
    );
    assert!(services.contains_key("prometheus") && services.contains_key("grafana"));
    for (name, service) in services {
        if let Some(profiles) = service["profiles"].as_sequence() {
            let profiles: Vec<&str> = profiles.iter().map(s).collect();
            assert!(
                profiles == ["sentinel"] || profiles == ["monitoring"],
                "{}: {profiles:?}",
                s(name)
            );
        }
    }
}

#[test]
fn compose_secrets_are_files_and_no_password_is_on_a_command_line() {
    let model = compose_model();
    for (name, service) in model["services"].as_mapping().unwrap() {
        let command = serde_yaml_ng::to_string(&service["command"]).unwrap();
        let entry = serde_yaml_ng::to_string(&service["entrypoint"]).unwrap();
        for text in [&command, &entry] {
            assert!(
                !text.contains("CHANGE-ME") && !text.contains("--requirepass"),
                "{}: a secret on the command line: {text}",
                s(name)
            );
        }
        for (k, v) in compose_env(service) {
            assert!(
                !(k.ends_with("PASSWORD") && k.starts_with("RTMANAGER_")) || v.is_empty(),
                "{}: {k} in the environment",
                s(name)
            );
        }
    }
    for (name, secret) in model["secrets"].as_mapping().expect("secrets") {
        assert!(secret["file"].as_str().is_some(), "{}: a file", s(name));
    }
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

fn k8s_documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value =
                serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                docs.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    docs
}

fn kind(doc: &Value) -> &str {
    s(&doc["kind"])
}

fn name_of(doc: &Value) -> &str {
    s(&doc["metadata"]["name"])
}

/// The pod template of a workload.
fn pod_template(doc: &Value) -> Option<&Value> {
    match kind(doc) {
        "Deployment" | "StatefulSet" | "Job" => Some(&doc["spec"]["template"]),
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

/// Every string in a Secret or ConfigMap.
fn data_of(doc: &Value) -> BTreeMap<String, String> {
    let data = if kind(doc) == "Secret" {
        &doc["stringData"]
    } else {
        &doc["data"]
    };
    data.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (s(k).to_owned(), s(v).to_owned()))
        .collect()
}

#[test]
fn every_kubernetes_workload_is_wired_as_its_code_reads_it_with_least_privilege() {
    let docs = k8s_documents();
    let stand = Stand::new();
    let sources: BTreeMap<(String, String), BTreeMap<String, String>> = docs
        .iter()
        .filter(|(_, d)| matches!(kind(d), "ConfigMap" | "Secret"))
        .map(|(_, d)| ((kind(d).to_owned(), name_of(d).to_owned()), data_of(d)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut disrupted = BTreeSet::new();
    for (_, doc) in &docs {
        if kind(doc) == "PodDisruptionBudget" {
            disrupted.insert(
                s(&doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]).to_owned(),
            );
        }
    }
    for (file, doc) in &docs {
        let Some(template) = pod_template(doc) else {
            continue;
        };
        let workload = name_of(doc);
        let pod = &template["spec"];
        assert_eq!(
            s(&pod["securityContext"]["seccompProfile"]["type"]),
            "RuntimeDefault",
            "{file}: seccomp"
        );
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{file}"
        );
        let socket_volumes: BTreeSet<String> = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter(|v| s(&v["hostPath"]["path"]) == "/var/run/docker.sock")
            .map(|v| s(&v["name"]).to_owned())
            .collect();
        let containers = pod["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{file}: one container");
        let container = &containers[0];
        let image = s(&container["image"]);
        let job = image_job(image)
            .unwrap_or_else(|| panic!("{file}: image {image:?} is not the project's"));
        let args = strings(&container["args"]);
        let one_shot = args.first().map(String::as_str) == Some("migrate");
        if one_shot {
            assert_eq!(job, "rest-gateway", "{file}");
        } else {
            assert_eq!(job, workload, "{file}: runs the image of {job}");
            seen.insert(job);
        }

        // The environment as the kubelet makes it.
        let mut vars = BTreeMap::new();
        for from in container["envFrom"].as_sequence().into_iter().flatten() {
            let (source, name) = if from["configMapRef"].is_mapping() {
                ("ConfigMap", s(&from["configMapRef"]["name"]))
            } else {
                ("Secret", s(&from["secretRef"]["name"]))
            };
            let data = sources
                .get(&(source.to_owned(), name.to_owned()))
                .unwrap_or_else(|| panic!("{file}: {source} {name} is not in k8s/"));
            vars.extend(data.clone());
        }
        let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1);
        for entry in container["env"].as_sequence().into_iter().flatten() {
            let var = s(&entry["name"]).to_owned();
            let value = if let Some(v) = entry["value"].as_str() {
                v.to_owned()
            } else if s(&entry["valueFrom"]["fieldRef"]["fieldPath"]) == "metadata.name" {
                // The last pod's name: a StatefulSet's ordinal is its shard.
                if kind(doc) == "StatefulSet" {
                    format!("{workload}-{}", replicas - 1)
                } else {
                    format!("{workload}-5d8f7c9b4-x2k7q")
                }
            } else if entry["valueFrom"]["secretKeyRef"].is_mapping() {
                let r = &entry["valueFrom"]["secretKeyRef"];
                sources
                    .get(&("Secret".to_owned(), s(&r["name"]).to_owned()))
                    .and_then(|d| d.get(s(&r["key"])))
                    .unwrap_or_else(|| panic!("{file}: {var} names a missing secret key"))
                    .clone()
            } else {
                panic!("{file}: {var} has a value this test cannot read")
            };
            vars.insert(var, value);
        }
        if kind(doc) == "StatefulSet" && !vars.contains_key("RTMANAGER_SHARD_INDEX") {
            // Unset, the shard is the ordinal of the pod's host name, which
            // this test's process cannot take: the last pod's, as given.
            vars.insert("RTMANAGER_SHARD_INDEX".into(), (replicas - 1).to_string());
        }
        let uses_docker = parse_settings(job, &stand.env(&vars), &args)
            .unwrap_or_else(|e| panic!("{file}: its settings do not start it: {e}"));
        let mounts: Vec<&Value> = container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .collect();
        let mounts_socket = mounts
            .iter()
            .any(|m| socket_volumes.contains(s(&m["name"])));
        assert_eq!(
            mounts_socket, uses_docker,
            "{file}: the socket is mounted where it is used"
        );
        assert_eq!(
            socket_volumes.is_empty(),
            !uses_docker,
            "{file}: a socket volume nobody uses"
        );
        // Every file a setting names is mounted.
        for (var, value) in &vars {
            if stand.file_for(var).is_some() && !value.is_empty() {
                assert!(
                    mounts.iter().any(|m| value.starts_with(s(&m["mountPath"]))),
                    "{file}: {var}={value} is not on a mounted volume"
                );
            }
        }

        let security = &container["securityContext"];
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "{file}"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{file}"
        );
        assert_eq!(
            security["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{file}"
        );
        let added: BTreeSet<String> = strings(&security["capabilities"]["add"])
            .into_iter()
            .collect();
        if CHOWNS.contains(&job) && !one_shot {
            assert_eq!(
                added,
                BTreeSet::from(["CHOWN".into(), "FOWNER".into()]),
                "{file}"
            );
            assert_eq!(security["runAsUser"].as_u64(), Some(0), "{file}");
        } else {
            assert!(added.is_empty(), "{file}: adds {added:?}");
            assert_eq!(
                security["runAsNonRoot"].as_bool(),
                Some(true),
                "{file}: runAsNonRoot"
            );
            assert!(
                security["runAsUser"].as_u64().is_some_and(|u| u != 0),
                "{file}"
            );
            if uses_docker {
                assert!(
                    !strings(&pod["securityContext"]["supplementalGroups"]).is_empty()
                        || pod["securityContext"]["supplementalGroups"]
                            .as_sequence()
                            .is_some_and(|g| !g.is_empty()),
                    "{file}: non-root with the socket needs its group"
                );
            }
        }

        if one_shot {
            assert!(
                vars["RTMANAGER_POSTGRES_PRIMARY_DSN"].starts_with("postgres://rtmanager_owner:"),
                "{file}: migrations run as the owner"
            );
            continue;
        }
        assert_eq!(
            vars.get("RTMANAGER_POSTGRES_MIGRATIONS")
                .map(String::as_str),
            Some("off"),
            "{file}"
        );
        assert!(
            vars["RTMANAGER_POSTGRES_PRIMARY_DSN"].starts_with("postgres://rtmanagerservice:"),
            "{file}: the jobs connect as rtmanagerservice"
        );
        if kind(doc) == "CronJob" {
            continue;
        }
        // Long-running: probes, scrape annotations, a disruption budget.
        let ports: BTreeMap<String, u64> = container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    s(&p["name"]).to_owned(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{file}: {probe}");
            let port = s(&get["port"]);
            assert!(
                ports.contains_key(port),
                "{file}: {probe} names port {port:?}"
            );
            if job == "rest-gateway" {
                assert_eq!(
                    s(&get["scheme"]),
                    "HTTPS",
                    "{file}: the API port is TLS only"
                );
            }
        }
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(s(&annotations["prometheus.io/scrape"]), "true", "{file}");
        assert_eq!(s(&annotations["prometheus.io/port"]), "9464", "{file}");
        assert!(
            ports.values().any(|p| *p == 9464),
            "{file}: the metrics port"
        );
        assert!(
            disrupted.contains(workload),
            "{file}: no PodDisruptionBudget"
        );
        if job == "healthz-prober" {
            assert_eq!(
                vars["RTMANAGER_SHARD_COUNT"],
                replicas.to_string(),
                "{file}: shards = replicas"
            );
        }
        if job == "rest-gateway" {
            for var in [
                "RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE",
                "RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE",
            ] {
                assert!(vars.contains_key(var), "{file}: TLS on ({var})");
            }
        }
    }
    assert_eq!(
        seen,
        JOBS.iter().copied().collect(),
        "every job has a workload"
    );
}

#[test]
fn kubernetes_lets_traffic_in_only_to_the_gateway_from_its_callers_and_to_metrics_from_prometheus()
{
    let docs = k8s_documents();
    let policies: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| kind(d) == "NetworkPolicy")
        .collect();
    assert!(
        policies.iter().any(|p| p["spec"]["podSelector"]
            .as_mapping()
            .is_some_and(|m| m.is_empty())
            && strings(&p["spec"]["policyTypes"]) == ["Ingress", "Egress"]
            && p["spec"]["ingress"].is_null()
            && p["spec"]["egress"].is_null()),
        "a default deny of the namespace"
    );
    for policy in &policies {
        for rule in policy["spec"]["ingress"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let ports: Vec<u64> = rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            assert!(
                !ports.is_empty(),
                "{}: an ingress rule without ports",
                name_of(policy)
            );
            let from = rule["from"]
                .as_sequence()
                .expect("ingress from a namespace");
            for peer in from {
                assert!(
                    peer["namespaceSelector"].is_mapping(),
                    "{}: {peer:?}",
                    name_of(policy)
                );
            }
            if ports != [9464] {
                assert_eq!(
                    s(&policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]),
                    "rest-gateway",
                    "{}: only the gateway accepts traffic beyond metrics",
                    name_of(policy)
                );
                assert_eq!(ports, [8096]);
            }
        }
    }
}

#[test]
fn kubernetes_secrets_carry_placeholders_only() {
    for (file, doc) in k8s_documents() {
        if kind(&doc) != "Secret" {
            continue;
        }
        for (key, value) in data_of(&doc) {
            if key == "tokens" {
                for line in value
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    assert!(
                        line.to_ascii_uppercase().starts_with("CHANGE-ME"),
                        "{file}: {key}: {line:?}"
                    );
                }
            } else if key.ends_with("_DSN") {
                let password = value
                    .split_once("://")
                    .and_then(|(_, r)| r.split_once('@'))
                    .and_then(|(cred, _)| cred.split_once(':'))
                    .map(|(_, p)| p.to_owned());
                assert_eq!(password.as_deref(), Some("CHANGE-ME"), "{file}: {key}");
            } else {
                assert!(
                    value.to_ascii_uppercase().starts_with("CHANGE-ME"),
                    "{file}: {key} = {value:?}"
                );
            }
        }
    }
}
