//! The Helm chart against the operator: every API call the reconcile scenarios and the
//! controllers' watches make is allowed by the rules the chart renders, and the chart grants
//! nothing the operator never uses. Also: the chart's CRDs are the generated ones.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::mock::{Call, FakeEraser, FakeProbe, FakeStreams};
use http::{Request, Response};
use kube::client::Body;
use operator::context::Context;
use operator::settings::RuntimeSettings;
use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm template` of the chart with extra arguments; the documents parsed.
fn render(args: &[&str]) -> Vec<Value> {
    let helm = testbed::locate_binary("helm", None, &[]).expect("helm (run scripts/install-deps)");
    let output = Command::new(helm)
        .args([
            "template",
            "dp",
            "charts/dreampipe",
            "--namespace",
            "dreampipe",
        ])
        .args(args)
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

/// (apiGroup, resource[/subresource], verb) triples a role grants.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap_or(&Vec::new())
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "wildcard in {rule}"
                    );
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// What the API server authorizes for a request: (group, resource[/sub], verbs). A
/// server-side apply may create the object, so it needs `create` as well as `patch`.
fn needs(call: &Call) -> Vec<(String, String, String)> {
    let parts: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("unexpected path {}", call.path),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {}", call.path),
    };
    let watch = call
        .query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verbs: Vec<&str> = match (call.method.as_str(), named) {
        ("GET", true) => vec!["get"],
        ("GET", false) if watch => vec!["watch"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PATCH", _)
            if call.content_type == "application/apply-patch+yaml" && !resource.contains('/') =>
        {
            vec!["patch", "create"]
        }
        ("PATCH", _) => vec!["patch"],
        ("PUT", _) => vec!["update"],
        ("DELETE", _) => vec!["delete"],
        (method, _) => panic!("unexpected method {method}"),
    };
    verbs
        .into_iter()
        .map(|v| (group.clone(), resource.clone(), v.to_owned()))
        .collect()
}

/// The list and watch calls of the three controllers starting up (answered with empty lists;
/// watches are held open), until each has been seen.
async fn controller_calls() -> Vec<Call> {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context::new(
        client,
        RuntimeSettings::example(),
        Arc::new(FakeProbe::default()),
        Arc::new(FakeStreams::default()),
        FakeEraser::answering(None),
        operator::metrics::Metrics::register(&mut prometheus_client::registry::Registry::default()),
        None,
    ));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let controllers = tokio::spawn(operator::controller::run(ctx, None, shutdown.clone()));
    let mut calls = Vec::new();
    let mut open_watches = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some((request, send))) =
        tokio::time::timeout_at(deadline, handle.next_request()).await
    {
        let call = common::mock::read(request).await;
        if call.query.contains("watch=true") {
            open_watches.push(send);
        } else {
            let body = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
        calls.push(call);
    }
    shutdown.cancel();
    drop(open_watches);
    let _ = tokio::time::timeout(Duration::from_secs(5), controllers).await;
    calls
}

async fn every_call() -> Vec<Call> {
    let mut calls = common::scenarios::all_calls().await;
    calls.extend(controller_calls().await);
    calls.extend(common::lease::first_replica().await.calls());
    calls.extend(common::lease::takeover().await.calls());
    calls
}

/// The leader Lease's calls and the reconciles' calls, checked against different roles.
fn is_lease_call(call: &Call) -> bool {
    call.path.starts_with("/apis/coordination.k8s.io/")
}

fn is_leader_role(role: &Value) -> bool {
    role["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.ends_with("-operator-leader"))
}

/// The reconciles' roles (ClusterRole or Roles), the leader Role apart: it must be a Role in the
/// release namespace granting exactly the election's calls.
fn split_roles<'a>(documents: &'a [Value], kind: &str, calls: &[Call]) -> Vec<&'a Value> {
    let leader: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == "Role" && is_leader_role(d))
        .collect();
    assert_eq!(leader.len(), 1, "one leader Role");
    assert_eq!(leader[0]["metadata"]["namespace"], "dreampipe");
    let lease_calls: Vec<Call> = calls.iter().filter(|c| is_lease_call(c)).cloned().collect();
    for verb in ["get", "create", "patch"] {
        assert!(
            lease_calls
                .iter()
                .flat_map(needs)
                .any(|(g, r, v)| g == "coordination.k8s.io" && r == "leases" && v == verb),
            "no {verb} of leases recorded"
        );
    }
    check(leader[0], &lease_calls);
    documents
        .iter()
        .filter(|d| d["kind"] == kind && !is_leader_role(d))
        .collect()
}

fn check(role: &Value, calls: &[Call]) {
    let granted = grants(role);
    let mut used = BTreeSet::new();
    for call in calls {
        for need in needs(call) {
            assert!(
                granted.contains(&need),
                "{} {}?{} needs {need:?}, which {} {} does not grant",
                call.method,
                call.path,
                call.query,
                role["kind"],
                role["metadata"]["name"]
            );
            used.insert(need);
        }
    }
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "the chart grants what the operator never uses: {unused:?}"
    );
}

#[tokio::test]
async fn the_cluster_role_allows_every_call_and_nothing_more() {
    let calls = every_call().await;
    // Make sure the startup calls were seen: list and watch of all three kinds and Deployments.
    for resource in ["entities", "projections", "adapters", "deployments"] {
        for verb in ["list", "watch"] {
            assert!(
                calls
                    .iter()
                    .flat_map(needs)
                    .any(|(_, r, v)| r == resource && v == verb),
                "no {verb} of {resource} recorded"
            );
        }
    }
    // And the reconciles' own: disruption budgets applied and deleted.
    for verb in ["patch", "create", "delete"] {
        assert!(
            calls
                .iter()
                .flat_map(needs)
                .any(|(g, r, v)| g == "policy" && r == "poddisruptionbudgets" && v == verb),
            "no {verb} of poddisruptionbudgets recorded"
        );
    }
    let documents = render(&[]);
    let reconciles: Vec<Call> = calls
        .iter()
        .filter(|c| !is_lease_call(c))
        .cloned()
        .collect();
    let roles = split_roles(&documents, "ClusterRole", &calls);
    assert_eq!(roles.len(), 1);
    check(roles[0], &reconciles);
    assert!(
        documents
            .iter()
            .all(|d| d["kind"] != "Role" || is_leader_role(d))
    );
}

#[tokio::test]
async fn namespaced_installs_get_the_same_rules_as_roles_in_each_namespace() {
    let calls = every_call().await;
    let documents = render(&["--set", "operator.watchNamespaces={shop,crm}"]);
    assert!(
        documents
            .iter()
            .all(|d| d["kind"] != "ClusterRole" && d["kind"] != "ClusterRoleBinding")
    );
    let reconciles: Vec<Call> = calls
        .iter()
        .filter(|c| !is_lease_call(c))
        .cloned()
        .collect();
    let roles = split_roles(&documents, "Role", &calls);
    let namespaces: BTreeSet<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["crm", "shop"]));
    for role in roles {
        check(role, &reconciles);
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    for file in ["entities", "adapters", "projections"] {
        let name = format!("{file}.dreampipe.io.yaml");
        let generated = std::fs::read_to_string(repo().join("crds/yaml").join(&name)).unwrap();
        let charted = std::fs::read_to_string(repo().join("charts/dreampipe/crds").join(&name))
            .unwrap_or_default();
        assert!(
            generated == charted,
            "charts/dreampipe/crds/{name} differs from crds/yaml/{name}: cp crds/yaml/*.yaml charts/dreampipe/crds/"
        );
    }
}

#[test]
fn the_operator_deployment_runs_with_restricted_security_and_its_service_account() {
    for args in [
        &[][..],
        &["-f", "charts/dreampipe/values-external.yaml"][..],
        &["-f", "charts/dreampipe/values-nats-cluster.yaml"][..],
    ] {
        let documents = render(args);
        for workload in documents
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        {
            let pod = &workload["spec"]["template"]["spec"];
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{}",
                workload["metadata"]["name"]
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            for container in pod["containers"].as_array().unwrap() {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false);
                assert_eq!(security["readOnlyRootFilesystem"], true);
                assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
                assert!(container["resources"]["requests"].is_object());
            }
        }
    }
}

/// The workload named `name` (Deployment or StatefulSet) among rendered documents.
fn workload<'a>(documents: &'a [Value], name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| {
            (d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
                && d["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no workload {name}"))
}

fn image(documents: &[Value], name: &str) -> String {
    workload(documents, name)["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

fn app_version() -> String {
    let chart = std::fs::read_to_string(repo().join("charts/dreampipe/Chart.yaml")).unwrap();
    let chart: Value = serde_yaml::from_str(&chart).unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}

#[test]
fn dreampipe_images_default_to_the_app_version_and_a_digest_pins_them() {
    let version = app_version();
    let documents = render(&[]);
    assert_eq!(
        image(&documents, "dp-operator"),
        format!("dreampipe-operator:{version}")
    );
    assert_eq!(
        image(&documents, "dp-query"),
        format!("dreampipe:{version}")
    );
    let operator =
        &workload(&documents, "dp-operator")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_value(operator, "DREAMPIPE_RUNTIME_IMAGE"),
        Some(format!("dreampipe:{version}"))
    );

    let digest = format!("sha256:{}", "ab".repeat(32));
    let documents = render(&[
        "--set",
        "operator.image.tag=dev",
        "--set",
        &format!("operator.image.digest={digest}"),
        "--set",
        "image.runtime.repository=registry.example.com/dreampipe",
    ]);
    assert_eq!(
        image(&documents, "dp-operator"),
        format!("dreampipe-operator:dev@{digest}")
    );
    assert_eq!(
        image(&documents, "dp-query"),
        format!("registry.example.com/dreampipe:{version}")
    );
}

#[test]
fn nats_and_postgres_images_are_the_versions_the_tests_run() {
    let install = std::fs::read_to_string(repo().join("scripts/install-deps")).unwrap();
    let nats_version = install
        .lines()
        .find_map(|l| l.strip_prefix("nats_version="))
        .expect("scripts/install-deps pins nats_version")
        .trim_matches('"');
    let documents = render(&[]);
    assert_eq!(
        image(&documents, "dp-nats"),
        format!("nats:{nats_version}-alpine")
    );
    let postgres = testbed::locate_binary("postgres", None, &[]).expect("postgres");
    let output = Command::new(postgres).arg("--version").output().unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    let major = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|v| v.split('.').next())
        .expect("postgres --version names a version")
        .to_owned();
    assert_eq!(
        image(&documents, "dp-postgres"),
        format!("postgres:{major}-alpine")
    );
}

#[test]
fn every_workload_takes_pull_secrets_placement_and_resources_from_values() {
    let documents = render(&[
        "--set",
        "imagePullSecrets[0].name=registry",
        "--set",
        "operator.imagePullSecrets[0].name=operator-registry",
        "--set",
        "operator.nodeSelector.pool=system",
        "--set",
        "query.tolerations[0].key=dedicated",
        "--set",
        "nats.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
        "--set",
        "nats.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].key=disk",
        "--set",
        "nats.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].operator=Exists",
        "--set",
        "postgres.resources.limits.memory=2Gi",
    ]);
    for name in ["dp-operator", "dp-query", "dp-nats", "dp-postgres"] {
        let pod = &workload(&documents, name)["spec"]["template"]["spec"];
        let secrets: Vec<&str> = pod["imagePullSecrets"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no imagePullSecrets"))
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(secrets[0], "registry", "{name}");
    }
    let pod = |name| &workload(&documents, name)["spec"]["template"]["spec"];
    assert_eq!(
        pod("dp-operator")["imagePullSecrets"][1]["name"],
        "operator-registry"
    );
    assert_eq!(pod("dp-operator")["nodeSelector"]["pool"], "system");
    assert_eq!(pod("dp-query")["tolerations"][0]["key"], "dedicated");
    assert!(pod("dp-nats")["affinity"]["nodeAffinity"].is_object());
    assert_eq!(
        pod("dp-postgres")["containers"][0]["resources"]["limits"]["memory"],
        "2Gi"
    );
    assert!(
        pod("dp-query")["nodeSelector"].is_null(),
        "set only where asked"
    );
}

#[test]
fn the_operator_runs_two_replicas_that_elect_a_leader_in_their_namespace() {
    let documents = render(&[]);
    let operator = workload(&documents, "dp-operator");
    assert_eq!(operator["spec"]["replicas"], 2);
    assert_eq!(operator["spec"]["strategy"]["type"], "RollingUpdate");
    let container = &operator["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_value(container, "DREAMPIPE_LEADER_ELECTION").as_deref(),
        Some("true")
    );
    let namespace = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE")
        .expect("POD_NAMESPACE");
    assert_eq!(
        namespace["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
}

#[test]
fn nats_replicas_3_runs_a_routed_jetstream_cluster_spread_with_a_budget() {
    let documents = render(&["-f", "charts/dreampipe/values-nats-cluster.yaml"]);
    let named = |kind: &str, name: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let nats = named("StatefulSet", "dp-nats");
    assert_eq!(nats["spec"]["replicas"], 3);
    assert_eq!(nats["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(nats["spec"]["serviceName"], "dp-nats-cluster");
    let pod = &nats["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let routes = args
        .iter()
        .find_map(|a| a.strip_prefix("--routes="))
        .expect("a clustered server names its routes");
    for index in 0..3 {
        assert!(
            routes.contains(&format!(
                "nats://dp-nats-{index}.dp-nats-cluster.dreampipe.svc:6222"
            )),
            "route to pod {index} missing: {routes}"
        );
    }
    assert!(args.contains(&"--server_name=$(POD_NAME)"), "{args:?}");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let routing = named("Service", "dp-nats-cluster");
    assert_eq!(routing["spec"]["clusterIP"], "None");
    assert_eq!(routing["spec"]["publishNotReadyAddresses"], true);
    let budget = named("PodDisruptionBudget", "dp-nats");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    // One server by default: no routes, no budget.
    let single = render(&[]);
    assert!(
        !single
            .iter()
            .any(|d| d["kind"] == "PodDisruptionBudget" && d["metadata"]["name"] == "dp-nats")
    );
}

/// Whether `selector` (a label selector: matchLabels and `In` expressions) selects `labels`.
fn selects(selector: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let matched = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressed = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            assert_eq!(e["operator"], "In", "{e}");
            let values: Vec<&str> = e["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            labels
                .get(e["key"].as_str().unwrap())
                .is_some_and(|l| values.contains(&l.as_str()))
        });
    matched && expressed
}

#[test]
fn monitors_are_rendered_only_when_enabled_and_select_every_process_once() {
    let default = render(&[]);
    assert!(
        !default.iter().any(|d| d["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("monitoring.coreos.com/")
            || d["metadata"]["labels"]["grafana_dashboard"] == "1"),
        "no monitoring object by default"
    );

    let documents = render(&["-f", "charts/dreampipe/values-monitoring.yaml"]);
    let monitors: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == "ServiceMonitor" || d["kind"] == "PodMonitor")
        .collect();
    for monitor in &monitors {
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(
            monitor["metadata"]["labels"]["release"], "prometheus",
            "metrics.labels reach every monitor"
        );
    }
    // What selects a set of labels: (kind, name) of each monitor whose selector matches.
    let scrapers = |kind: &str, labels: &std::collections::BTreeMap<String, String>| {
        monitors
            .iter()
            .filter(|m| m["kind"] == kind && selects(&m["spec"]["selector"], labels))
            .map(|m| m["metadata"]["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    use operator::names::{Role, labels};
    // Runtime pods as the operator's builders label them (and receivers' Services, too).
    assert_eq!(
        scrapers("PodMonitor", &labels("orders", Role::Projector)).len(),
        1
    );
    assert_eq!(
        scrapers("PodMonitor", &labels("crm", Role::Adapter)).len(),
        1
    );
    assert!(scrapers("PodMonitor", &labels("customer", Role::Receiver)).is_empty());
    assert_eq!(
        scrapers("ServiceMonitor", &labels("customer", Role::Receiver)).len(),
        1,
        "receivers are scraped through their Service"
    );
    assert!(scrapers("ServiceMonitor", &labels("orders", Role::Projector)).is_empty());
    // The chart's own Services: query and the operator's metrics Service, each once.
    for component in ["query", "operator"] {
        let service = documents
            .iter()
            .find(|d| {
                d["kind"] == "Service"
                    && d["metadata"]["labels"]["app.kubernetes.io/component"] == component
            })
            .unwrap_or_else(|| panic!("no {component} Service"));
        let service_labels = serde_json::from_value(service["metadata"]["labels"].clone()).unwrap();
        assert_eq!(
            scrapers("ServiceMonitor", &service_labels).len(),
            1,
            "{component}"
        );
        assert_eq!(service["spec"]["ports"][0]["name"], "http");
    }
    // Every monitor scrapes the named port the pods declare.
    let operator = workload(&documents, "dp-operator");
    assert_eq!(
        operator["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"],
        "http"
    );
    for monitor in &monitors {
        let endpoints = monitor["spec"]["endpoints"]
            .as_array()
            .or(monitor["spec"]["podMetricsEndpoints"].as_array())
            .unwrap();
        assert!(
            endpoints
                .iter()
                .all(|e| e["port"] == "http" && e["path"] == "/metrics"),
            "{monitor}"
        );
    }
    let rule = documents
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .unwrap();
    let lag = &rule["spec"]["groups"][0]["rules"][0];
    assert_eq!(lag["alert"], "DreamPipeProjectionLagging");
    assert!(
        lag["expr"].as_str().unwrap().trim_end().ends_with("> 300"),
        "the threshold is metrics.rules.lagSecondsThreshold: {lag}"
    );
}
