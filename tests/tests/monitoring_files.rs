//! The files of `monitoring/` parse and hold together, without Grafana (CI
//! has none): every dashboard is JSON whose panels each name the
//! provisioned Prometheus datasource and carry PromQL that Prometheus'
//! own parser accepts (`promtool check rules` on the queries); the per-game
//! dashboard filters by its `game_id` variable only low-volume series and
//! links to the game's timeline; the provisioning files point at what
//! exists; every alert rule has a one-line runbook and unit tests that see
//! it fire and stay silent. `scripts/test` runs promtool on the rules and
//! the config itself; `monitoring_panels.rs` runs the queries against a
//! real Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use system_tests::monitoring::{self, PER_GAME_SERIES, PROMETHEUS_UID};

/// Where the deploy mounts `monitoring/grafana` (README "Monitoring").
const GRAFANA_MOUNT: &str = "/etc/grafana/rtmanager/";

fn yaml(path: &str) -> serde_yaml_ng::Value {
    let path = monitoring::dir().join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

#[test]
fn the_three_dashboards_have_unique_ids_and_every_panel_a_prometheus_query() {
    let dashboards = monitoring::dashboards();
    let names: Vec<&str> = dashboards.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["health-pipeline", "overview", "per-game"]);
    let mut uids = BTreeSet::new();
    for (name, dashboard) in &dashboards {
        let uid = dashboard["uid"].as_str().expect("a uid");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(dashboard["title"].is_string(), "{name}: a title");
        let mut ids = BTreeSet::new();
        let mut every_id = |panel: &Value| {
            let id = panel["id"].as_i64().expect("a panel id");
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
        };
        for row in dashboard["panels"].as_array().expect("panels") {
            every_id(row);
        }
        let panels = monitoring::panels(dashboard);
        assert!(panels.len() >= 5, "{name}: {} panels", panels.len());
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            assert_eq!(
                panel["datasource"]["uid"], PROMETHEUS_UID,
                "{name} / {title}: its datasource"
            );
            assert!(panel["gridPos"]["w"].as_i64().is_some(), "{name} / {title}");
            let targets = panel["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            assert!(!targets.is_empty(), "{name} / {title}: no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{name} / {title}: an empty query");
                if let Some(uid) = target["datasource"]["uid"].as_str() {
                    assert_eq!(
                        uid, PROMETHEUS_UID,
                        "{name} / {title}: a target's datasource"
                    );
                }
            }
        }
    }
}

/// Prometheus' own parser on every panel query: each becomes a recording
/// rule of a scratch rules file, which `promtool check rules` parses.
#[test]
fn every_panel_query_is_promql_that_prometheus_parses() {
    let promtool = which("promtool").unwrap_or_else(|| {
        panic!("promtool is not installed: run scripts/install-test-tools (apt-get install prometheus)")
    });
    let queries = monitoring::panel_queries();
    let mut rules = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        rules.push(serde_json::json!({
            "record": format!("panel:query_{i}"),
            "expr": query.substituted("1m", "some-game"),
        }));
    }
    let file = serde_json::json!({ "groups": [{ "name": "panels", "rules": rules }] });
    let path =
        std::env::temp_dir().join(format!("rtm-panels-{}.yml", system_tests::random_suffix()));
    // JSON is YAML: promtool reads it as a rules file.
    std::fs::write(&path, file.to_string()).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_file(&path);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool names a failing rule by its record name: back to its panel.
    let named: Vec<String> = queries
        .iter()
        .enumerate()
        .filter(|(i, _)| report.contains(&format!("\"panel:query_{i}\"")))
        .map(|(_, q)| format!("{}: {}", q.name(), q.expr))
        .collect();
    assert!(
        out.status.success(),
        "promtool refuses panel queries:\n{report}\n{}",
        named.join("\n")
    );
    assert!(
        report.contains(&format!("{} rules found", queries.len())),
        "{report}"
    );
}

#[test]
fn the_per_game_dashboard_filters_by_game_id_only_low_volume_series_and_links_the_timeline() {
    let dashboards: BTreeMap<String, Value> = monitoring::dashboards().into_iter().collect();
    let per_game = &dashboards["per-game"];
    let variables = per_game["templating"]["list"]
        .as_array()
        .expect("variables");
    let game_id = variables
        .iter()
        .find(|v| v["name"] == "game_id")
        .expect("a game_id variable");
    assert_eq!(game_id["type"], "query");
    assert_eq!(game_id["datasource"]["uid"], PROMETHEUS_UID);
    // Its values come from the inventory: one series per discovered game.
    assert_eq!(
        game_id["query"]["query"],
        r#"label_values(up{job="game-engines"}, game_id)"#
    );

    let mut filtered = 0;
    for query in monitoring::panel_queries() {
        let uses = query.expr.matches("$game_id").count();
        if query.dashboard != "per-game" {
            assert_eq!(
                uses,
                0,
                "{}: $game_id outside the per-game dashboard",
                query.name()
            );
            continue;
        }
        let on_game: Vec<_> = monitoring::selectors(&query.expr)
            .into_iter()
            .filter(|s| s.matchers.contains("$game_id"))
            .collect();
        // Every use of the variable is a matcher of a selector ...
        assert_eq!(
            on_game
                .iter()
                .map(|s| s.matchers.matches("$game_id").count())
                .sum::<usize>(),
            uses,
            "{}: $game_id outside a selector: {}",
            query.name(),
            query.expr
        );
        for selector in &on_game {
            // ... of a low-volume series.
            assert!(
                PER_GAME_SERIES.contains(&selector.metric.as_str()),
                "{}: filters {} by game: {}",
                query.name(),
                selector.metric,
                query.expr
            );
            if selector.metric == "up" {
                assert!(
                    selector.matchers.contains(r#"job="game-engines""#),
                    "{}: up of the engines only: {}",
                    query.name(),
                    query.expr
                );
            }
        }
        filtered += on_game.len();
    }
    assert!(
        filtered >= 5,
        "the per-game dashboard hardly uses its variable"
    );

    let timeline = "/api/v1/internal/runtimes/${game_id}/timeline";
    assert!(
        per_game["links"]
            .as_array()
            .expect("dashboard links")
            .iter()
            .any(|l| l["url"].as_str().is_some_and(|u| u.ends_with(timeline))),
        "the per-game dashboard links to {timeline}"
    );
}

#[test]
fn the_provisioning_files_point_at_the_datasource_and_the_dashboards_that_exist() {
    let datasources = yaml("grafana/provisioning/datasources/rtmanager.yaml");
    let list = datasources["datasources"]
        .as_sequence()
        .expect("datasources");
    let prometheus = list
        .iter()
        .find(|d| d["uid"].as_str() == Some(PROMETHEUS_UID))
        .expect("the datasource the panels name");
    assert_eq!(prometheus["type"].as_str(), Some("prometheus"));
    // Grafana fills `$PROMETHEUS_URL` from its environment at provisioning.
    assert_eq!(prometheus["url"].as_str(), Some("$PROMETHEUS_URL"));

    let providers = yaml("grafana/provisioning/dashboards/rtmanager.yaml");
    let providers = providers["providers"].as_sequence().expect("providers");
    assert_eq!(providers.len(), 1);
    let path = providers[0]["options"]["path"]
        .as_str()
        .expect("a provider path");
    let inside = path
        .strip_prefix(GRAFANA_MOUNT)
        .unwrap_or_else(|| panic!("{path} is not under the documented mount {GRAFANA_MOUNT}"));
    let dir = monitoring::dir().join("grafana").join(inside);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{path} is {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["health-pipeline.json", "overview.json", "per-game.json"]
    );

    // The README tells where to mount them.
    let readme = std::fs::read_to_string(monitoring::dir().join("../README.md")).unwrap();
    assert!(
        readme.contains(GRAFANA_MOUNT.trim_end_matches('/')),
        "README names {GRAFANA_MOUNT}"
    );
}

/// The unit tests' structure, which promtool cannot check: every alert is
/// expected firing somewhere and expected silent somewhere. (`promtool
/// test rules` in scripts/test proves each expectation.)
#[test]
fn every_alert_has_a_one_line_runbook_and_tests_that_see_it_fire_and_stay_silent() {
    let rules = monitoring::alert_rules();
    assert!(rules.len() >= 14, "{} alerts", rules.len());
    let mut fires: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    let tests = monitoring::dir().join("prometheus/tests");
    for entry in std::fs::read_dir(&tests).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            path.to_string_lossy().ends_with(".test.yml"),
            "{}",
            path.display()
        );
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for test in doc["tests"].as_sequence().expect("tests") {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap().to_owned();
                let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
                if expected > 0 {
                    fires.insert(name)
                } else {
                    silent.insert(name)
                };
            }
        }
    }
    let mut names = BTreeSet::new();
    for rule in &rules {
        assert!(
            names.insert(rule.name.clone()),
            "{} defined twice",
            rule.name
        );
        for key in ["summary", "runbook"] {
            let text = rule
                .annotations
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("{}: no {key}", rule.name));
            assert!(
                !text.trim().is_empty() && !text.contains('\n'),
                "{}: {key} {text:?}",
                rule.name
            );
        }
        assert!(
            fires.contains(&rule.name),
            "{}: no test sees it fire",
            rule.name
        );
        assert!(
            silent.contains(&rule.name),
            "{}: no test sees it silent",
            rule.name
        );
    }
    // Tests of alerts that no longer exist would pass vacuously.
    let unknown: Vec<_> = fires
        .union(&silent)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(unknown.is_empty(), "tests of unknown alerts: {unknown:?}");
}
