//! The Helm chart's monitoring (ServiceMonitor, PrometheusRule, Grafana dashboard) against the operator's metrics:
//! every PromQL expression of the alerts and of the dashboard parses (promql-parser, Prometheus' grammar), and every
//! metric it names is one the operator's registry exposes (rendered from `Metrics::new()`, with the suffixes the
//! exposition format adds: `_total` for counters, `_bucket`/`_sum`/`_count` for histograms). The golden rendering of
//! `deploy/helm/values/monitoring.yaml` carries exactly these rules and this dashboard, and the README describes
//! every panel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::time::Duration;

use azml_operator::azure::StatusClass;
use azml_operator::metrics::{Metrics, RoleAssignmentChange, instrument_reconcile};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

/// The repository root (the directory holding `deploy/helm`), wherever this test's crate lives in the workspace.
fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("deploy/helm/azml-operator").is_dir() {
        assert!(dir.pop(), "no deploy/helm above {}", env!("CARGO_MANIFEST_DIR"));
    }
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The operator's metrics with one sample in every family: prometheus-client renders a labelled family only once it
/// has a child, and a metric that is never rendered cannot be told apart from a misspelt one.
fn exercised_metrics() -> Metrics {
    let metrics = Metrics::new();
    let arm = metrics.arm();
    arm.observe("Workspaces_Get", StatusClass::from_status(429), Duration::from_millis(5));
    arm.throttle_delay("Workspaces_Get", Duration::from_millis(5));
    metrics.drift_detected("tags");
    metrics.keys_resynced();
    metrics.keys_resync_failed();
    metrics.role_assignment_changed(RoleAssignmentChange::Created);
    metrics.set_leader(true);
    metrics.workspace_stalled("uid", Some("NotPermitted"));
    let scope = metrics.controller_scope("mlworkspaces");
    scope.requested(&"default/ws");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let done: Result<(), String> = runtime.block_on(instrument_reconcile(&metrics, "default/ws", async { Ok(()) }));
    assert!(done.is_ok());
    std::mem::forget(scope);
    metrics
}

/// Every sample name the operator's registry exposes (rendered), with the suffixes of its metric types.
fn registry_names() -> BTreeSet<String> {
    let text = exercised_metrics().encode().expect("encode");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    // Every name a TYPE line promises is also a sample actually rendered (the suffix rules hold).
    let samples: BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for sample in &samples {
        assert!(names.contains(*sample), "sample {sample} is not predicted by its TYPE line");
    }
    names
}

/// The metric names an expression selects.
fn metrics_of(expr: &Expr) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                let by_matcher = vs.matchers.matchers.iter().filter(|m| m.name == "__name__").map(|m| m.value.clone());
                self.0.extend(vs.name.clone().into_iter().chain(by_matcher));
            }
            Ok(true)
        }
    }
    let mut names = Names(BTreeSet::new());
    let _ = walk_expr(&mut names, expr);
    names.0
}

/// Parses `expr` and checks every metric it names against `known`; returns the names.
fn check_expr(what: &str, expr: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parsed = parser::parse(expr).unwrap_or_else(|e| panic!("{what}: `{expr}` does not parse: {e}"));
    let names = metrics_of(&parsed);
    assert!(!names.is_empty(), "{what}: `{expr}` names no metric");
    for name in &names {
        assert!(known.contains(name), "{what}: `{expr}` names {name}, which the operator does not expose");
    }
    names
}

fn alerts() -> Vec<Value> {
    let text = read(&repo_root().join("deploy/helm/azml-operator/files/alerts.yaml"));
    serde_yaml::from_str(&text).expect("alerts.yaml is a YAML list of rules")
}

fn dashboard() -> Value {
    let text = read(&repo_root().join("deploy/helm/azml-operator/files/dashboard.json"));
    serde_json::from_str(&text).expect("dashboard.json is JSON")
}

fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| (title.clone(), t["expr"].as_str().unwrap_or_default().to_owned()))
        })
        .collect()
}

#[test]
fn the_registry_exposes_the_names_the_suffix_rules_predict() {
    let names = registry_names();
    for name in [
        "azml_reconciles_total",
        "azml_reconcile_duration_seconds_bucket",
        "azml_arm_requests_total",
        "azml_leader",
        "azml_workspaces_stalled",
        "azml_storage_keys_resync_failures_total",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    assert!(!names.contains("azml_reconciles"), "a counter's samples carry _total");
}

#[test]
fn every_alert_parses_names_known_metrics_and_tells_on_call_what_to_do() {
    let known = registry_names();
    let alerts = alerts();
    let mut covered = BTreeSet::new();
    for rule in &alerts {
        let name = rule["alert"].as_str().expect("every rule is an alert with a name");
        let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("{name}: no expr"));
        covered.extend(check_expr(name, expr, &known));
        assert!(rule["for"].as_str().is_some_and(|f| !f.is_empty()), "{name}: no `for` (a blip must not page)");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["warning", "critical"].contains(&severity), "{name}: severity {severity:?}");
        for annotation in ["summary", "description"] {
            assert!(rule["annotations"][annotation].as_str().is_some_and(|t| t.len() > 20), "{name}: no {annotation}");
        }
    }
    // What the on-call person must hear about.
    for metric in [
        "azml_workspaces_stalled",
        "azml_arm_requests_total",
        "azml_reconciles_total",
        "azml_storage_keys_resync_failures_total",
        "azml_leader",
    ] {
        assert!(covered.contains(metric), "no alert on {metric}");
    }
    let stalled = alerts.iter().find(|r| r["expr"].as_str().is_some_and(|e| e.contains("azml_workspaces_stalled")));
    assert_eq!(stalled.map(|r| r["for"].clone()), Some(Value::from("15m")), "stalled for 15 minutes");
}

#[test]
fn every_dashboard_query_parses_and_names_known_metrics() {
    let known = registry_names();
    let dashboard = dashboard();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    for (title, expr) in &exprs {
        check_expr(title, expr, &known);
    }
    let templated = dashboard["templating"]["list"].as_array().expect("templating");
    assert!(templated.iter().any(|v| v["type"] == "datasource"), "the Prometheus data source is a variable");
    let ids: BTreeSet<i64> =
        dashboard["panels"].as_array().expect("panels").iter().filter_map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids.len(), dashboard["panels"].as_array().map_or(0, Vec::len), "panel ids are unique");
}

#[test]
fn the_readme_describes_every_panel() {
    let readme = read(&repo_root().join("README.md"));
    for panel in dashboard()["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        assert!(readme.contains(&format!("**{title}**")), "README does not describe the panel {title:?}");
    }
}

/// The golden rendering with monitoring enabled carries exactly these rules and this dashboard; the default one
/// none of it.
#[test]
fn the_rendered_chart_carries_the_rules_and_the_dashboard_only_when_enabled() {
    let root = repo_root();
    let docs = |file: &str| -> Vec<Value> {
        let text = read(&root.join("deploy/helm/rendered").join(file));
        serde_yaml::Deserializer::from_str(&text)
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .filter(|v: &Value| !v.is_null())
            .collect()
    };
    let kinds = |docs: &[Value]| docs.iter().filter_map(|d| d["kind"].as_str().map(str::to_owned)).collect::<Vec<_>>();
    let default = docs("default.yaml");
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(!kinds(&default).iter().any(|k| k == kind), "{kind} is off by default");
    }
    assert!(
        !default.iter().any(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1"),
        "dashboard is off by default"
    );

    let enabled = docs("monitoring.yaml");
    let rule = enabled.iter().find(|d| d["kind"] == "PrometheusRule").expect("PrometheusRule rendered");
    assert_eq!(rule["spec"]["groups"][0]["rules"], Value::Array(alerts()));
    let monitor = enabled.iter().find(|d| d["kind"] == "ServiceMonitor").expect("ServiceMonitor rendered");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service = enabled
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "azml-operator-metrics")
        .expect("metrics Service rendered");
    assert_eq!(
        service["spec"]["selector"], monitor["spec"]["selector"]["matchLabels"],
        "the monitor selects the Service"
    );
    let config_map = enabled
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap with the sidecar label");
    let json = config_map["data"]["azml-operator.json"].as_str().expect("dashboard JSON");
    assert_eq!(serde_json::from_str::<Value>(json).expect("JSON"), dashboard());
}

#[test]
fn stalled_workspaces_are_counted_by_reason() {
    let metrics = Metrics::new();
    metrics.workspace_stalled("a", Some("NotPermitted"));
    metrics.workspace_stalled("b", Some("NotPermitted"));
    metrics.workspace_stalled("c", Some("CredentialUnavailable"));
    metrics.workspace_stalled("a", None);
    metrics.workspace_stalled("c", Some("InvalidSpec"));
    let text = metrics.encode().expect("encode");
    for line in [
        r#"azml_workspaces_stalled{reason="NotPermitted"} 1"#,
        r#"azml_workspaces_stalled{reason="CredentialUnavailable"} 0"#,
        r#"azml_workspaces_stalled{reason="InvalidSpec"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}
