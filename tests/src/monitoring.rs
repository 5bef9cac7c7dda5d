//! The files of `monitoring/` as the tests read them: the Grafana
//! dashboards (every panel's queries), the Prometheus alert rules, and the
//! vector selectors inside a PromQL expression.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `monitoring/` of this repository.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

/// The uid every panel's datasource names (provisioned by
/// `grafana/provisioning/datasources/rtmanager.yaml`).
pub const PROMETHEUS_UID: &str = "rtmanager-prometheus";

/// Metrics with a handful of series per game, the only ones the per-game
/// dashboard may filter by its `game_id` variable: the discovered
/// inventory (`up` of `game-engines`, one series per game) and the node
/// series a game container's Alloy remote-writes. rtmanager's own metrics
/// never carry a game id.
pub const PER_GAME_SERIES: &[&str] = &[
    "up",
    "node_uname_info",
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
];

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    /// As written in the dashboard, template variables and all.
    pub expr: String,
}

impl PanelQuery {
    /// The query with Grafana's variables replaced: `$__rate_interval` by
    /// `rate_interval`, `$game_id` by `game`.
    pub fn substituted(&self, rate_interval: &str, game: &str) -> String {
        self.expr
            .replace("$__rate_interval", rate_interval)
            .replace("${game_id}", game)
            .replace("$game_id", game)
    }

    pub fn name(&self) -> String {
        format!("{} / {} ({})", self.dashboard, self.panel, self.ref_id)
    }
}

/// A dashboard file: its name (`overview`) and its JSON.
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = dir().join("grafana/dashboards");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dashboard entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard file");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The panels of a dashboard that show data (rows are only headings),
/// including those nested in collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            if panel["type"] == "row" {
                walk(&panel["panels"], out);
            } else {
                out.push(panel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every query of every panel of every dashboard.
pub fn panel_queries() -> Vec<PanelQuery> {
    let mut queries = Vec::new();
    for (name, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(PanelQuery {
                    dashboard: name.clone(),
                    panel: panel["title"].as_str().unwrap_or("?").to_owned(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
    }
    queries
}

/// One alerting rule of `prometheus/rules/*.rules.yml`.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub expr: String,
    pub annotations: serde_yaml_ng::Mapping,
}

pub fn alert_rules() -> Vec<AlertRule> {
    let dir = dir().join("prometheus/rules");
    let mut rules = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("rules entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    for file in files {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).expect("rules file"))
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.display()));
        for group in doc["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                let Some(name) = rule["alert"].as_str() else {
                    continue;
                };
                rules.push(AlertRule {
                    name: name.to_owned(),
                    expr: rule["expr"].as_str().expect("expr").to_owned(),
                    annotations: rule["annotations"]
                        .as_mapping()
                        .cloned()
                        .unwrap_or_default(),
                });
            }
        }
    }
    rules
}

/// A vector selector of a PromQL expression: the metric name and its
/// matchers as written (`{job="x"}`, or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: String,
}

impl Selector {
    /// The selector as an instant query of its own.
    pub fn query(&self) -> String {
        format!("{}{}", self.metric, self.matchers)
    }
}

/// Words that are PromQL syntax, never a metric name.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    // Aggregations, which a `by (...)` may part from their parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The vector selectors of `expr`, in order: every metric name outside
/// strings, label lists (`by (...)`, `on (...)`, ...) and function calls'
/// names. Enough PromQL for the queries of `monitoring/`; a selector
/// without a metric name (`{__name__=~"..."}`) is not supported.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    // The index just past the bracket closing the one at `open`, strings
    // inside skipped.
    let close = |open: usize, left: char, right: char| {
        let mut depth = 0;
        let mut j = open;
        while j < chars.len() {
            match chars[j] {
                '"' | '\'' | '`' => j = string_end(&chars, j),
                c if c == left => depth += 1,
                c if c == right => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        chars.len()
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string_end(&chars, i) + 1;
        } else if c == '[' {
            // A range or a subquery's resolution.
            i = close(i, '[', ']');
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`offset 10m`, `3 * 3600`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(i);
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                if next < chars.len() && chars[next] == '(' {
                    i = close(next, '(', ')');
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
                // An operator word: nothing to take.
            } else if next < chars.len() && chars[next] == '(' {
                // A function or an aggregation: its arguments are read on.
            } else if next < chars.len() && chars[next] == '{' {
                let end = close(next, '{', '}');
                out.push(Selector {
                    metric: word,
                    matchers: chars[next..end].iter().collect(),
                });
                i = end;
            } else {
                out.push(Selector {
                    metric: word,
                    matchers: String::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The index of the quote closing the string opened at `open`.
fn string_end(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut j = open + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return j;
        }
        j += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        selectors(expr).into_iter().map(|s| s.query()).collect()
    }

    #[test]
    fn selectors_are_the_metrics_outside_label_lists_functions_and_strings() {
        assert_eq!(
            names(
                r#"sum by (job, le) (rate(a_total{x="by (b)", y=~"c|d"}[5m])) / on () b offset 10m > 3 * 3600"#
            ),
            [r#"a_total{x="by (b)", y=~"c|d"}"#, "b"]
        );
        assert_eq!(
            names(r#"(sum(x) or vector(0)) < 1 and absent(y{job="z"}) unless max by (vmid) (u)"#),
            ["x", r#"y{job="z"}"#, "u"]
        );
        assert_eq!(
            names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[$__rate_interval])))"),
            ["h_bucket"]
        );
        assert_eq!(names("time() - max(ts)"), ["ts"]);
    }
}
