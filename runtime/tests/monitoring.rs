//! The chart's alert rules and dashboard name only metrics the code exports: every
//! `dreampipe_*` name in a PrometheusRule expression or a dashboard query is one a scrape of
//! some role's registry (receiver, projector, adapter, operator) shows.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm template` with every monitoring object on; the documents parsed.
fn render_monitoring() -> Vec<Value> {
    let helm = testbed::locate_binary("helm", None, &[]).expect("helm (run scripts/install-deps)");
    let output = Command::new(helm)
        .args(["template", "dp", "charts/dreampipe", "--namespace", "dp"])
        .args(["-f", "charts/dreampipe/values-monitoring.yaml"])
        .current_dir(repo())
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The sample names a scrape of `registry` can show: `# TYPE` names, with `_total` for
/// counters and `_bucket`, `_sum`, `_count` for histograms.
fn scraped_names(registry: &Registry) -> BTreeSet<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
                true
            }
            _ => names.insert(name.to_owned()),
        };
    }
    names
}

/// Every metric name the roles export, from the registries each role builds. A family shows
/// in a scrape once it has a series, so each is given one through the role's own API.
fn exported() -> BTreeSet<String> {
    use runtime::receiver::submit::Outcome;
    let mut names = BTreeSet::new();

    let mut receiver = Registry::default();
    let receiver_metrics = runtime::receiver::metrics::Metrics::register(&mut receiver);
    receiver_metrics.count_accepted(Outcome::Created);
    receiver_metrics.count_rejected("unavailable", 503);

    let mut projector = Registry::default();
    let projector_metrics = runtime::projector::Metrics::default();
    projector_metrics.register(&mut projector);
    projector_metrics.count("g", "applied", 1);
    projector_metrics.count_dead_letter("g", "filter");
    let partition = vec![
        ("generation", "g".to_owned()),
        ("partition", "0".to_owned()),
    ];
    projector_metrics.lag.get_or_create(&partition).set(1);
    projector_metrics
        .lag_seconds
        .get_or_create(&partition)
        .set(1.0);
    projector_metrics.set_build_progress(&[("g".to_owned(), 0.5)], &[]);
    projector_metrics
        .commit_seconds
        .get_or_create(&vec![("generation", "g".to_owned())])
        .observe(0.1);

    let mut adapter = Registry::default();
    let stats = runtime::adapter::status::Stats::register(&mut adapter);
    stats.polled(std::time::Duration::from_millis(5), true);

    let mut operator = Registry::default();
    let operator_metrics = operator::metrics::Metrics::register(&mut operator);
    for outcome in [
        operator::metrics::Outcome::Success,
        operator::metrics::Outcome::Failed("kube_api"),
    ] {
        operator_metrics.reconciled("Entity", outcome, std::time::Duration::from_millis(5));
    }
    operator_metrics.rejected("Entity", "invalid");
    operator_metrics.count_objects("Entity", Box::new(Vec::new));

    for registry in [&receiver, &projector, &adapter, &operator] {
        names.extend(scraped_names(registry));
    }
    names
}

/// The `dreampipe_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("dreampipe_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The names in `exprs` (each labelled with where it comes from) that nothing exports.
fn unknown_metrics<'a>(
    exprs: impl IntoIterator<Item = (String, &'a str)>,
    exported: &BTreeSet<String>,
) -> Vec<String> {
    exprs
        .into_iter()
        .flat_map(|(origin, expr)| {
            metric_names(expr)
                .into_iter()
                .filter(|name| !exported.contains(name))
                .map(move |name| format!("{origin}: {name}"))
        })
        .collect()
}

/// (origin, expression) of every alert rule of the rendered PrometheusRule.
fn rule_exprs(documents: &[Value]) -> Vec<(String, String)> {
    let rule = documents
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("values-monitoring.yaml renders a PrometheusRule");
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                format!("alert {}", r["alert"].as_str().unwrap()),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (origin, query) of every panel target and templating query of the dashboard ConfigMap.
fn dashboard_exprs(documents: &[Value]) -> Vec<(String, String)> {
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("values-monitoring.yaml renders the dashboard ConfigMap");
    let dashboard: Value =
        serde_json::from_str(config_map["data"]["dreampipe.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push((
                format!("panel {:?}", panel["title"].as_str().unwrap()),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    exprs
}

#[test]
fn every_metric_the_alert_rules_name_is_exported() {
    let documents = render_monitoring();
    let exprs = rule_exprs(&documents);
    assert_eq!(exprs.len(), 5, "{exprs:#?}");
    let exported = exported();
    let unknown = unknown_metrics(
        exprs.iter().map(|(o, e)| (o.clone(), e.as_str())),
        &exported,
    );
    assert!(
        unknown.is_empty(),
        "rules name metrics no role exports: {unknown:#?}\nexported: {exported:#?}"
    );
    for (origin, expr) in &exprs {
        assert!(!metric_names(expr).is_empty(), "{origin} names no metric");
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let documents = render_monitoring();
    let exprs = dashboard_exprs(&documents);
    let exported = exported();
    let unknown = unknown_metrics(
        exprs.iter().map(|(o, e)| (o.clone(), e.as_str())),
        &exported,
    );
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics no role exports: {unknown:#?}\nexported: {exported:#?}"
    );
    let named: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for wanted in [
        "dreampipe_projector_lag_seconds",
        "dreampipe_projector_build_progress_ratio",
        "dreampipe_projector_dead_letters_total",
        "dreampipe_receiver_results_total",
        "dreampipe_operator_reconcile_errors_total",
    ] {
        assert!(named.contains(wanted), "no panel shows {wanted}");
    }
}

#[test]
fn a_rule_naming_an_unknown_metric_is_reported() {
    let exported = exported();
    let unknown = unknown_metrics(
        [(
            "alert Made-up".to_owned(),
            "rate(dreampipe_projector_lag_seconds_total[5m]) > 0 and dreampipe_receiver_results_total",
        )],
        &exported,
    );
    assert_eq!(
        unknown,
        ["alert Made-up: dreampipe_projector_lag_seconds_total"]
    );
    assert!(exported.contains("dreampipe_receiver_append_duration_seconds_bucket"));
    assert!(
        exported.contains("dreampipe_operator_objects"),
        "{exported:#?}"
    );
}
