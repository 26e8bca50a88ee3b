//! The contract between the operator (and the chart) and the runtime: the Deployments the
//! operator builds for the example resources, the chart's query Deployment and the example's
//! CRM simulator, started exactly as their pod specs say (command, args, env, mounted
//! ConfigMaps and Secrets; see `kubelet`), become ready against real NATS and Postgres, and
//! carry the example's data from the CRM to the query service.
//!
//! It lives with the runtime because only here does cargo hand a test the freshly built
//! `dreampipe` binary; the operator's builders are a dev-dependency.

mod kubelet;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kubelet::{Image, Node};
use operator::build::{self, Children, Owner};
use operator::settings::RuntimeSettings;
use operator::validate;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testbed::child::http;
use testbed::{NatsServer, TestDatabase};

/// The namespace and release `scripts/kind-up` and `scripts/demo` use.
const NAMESPACE: &str = "dreampipe";
const RELEASE: &str = "dreampipe";
/// A second team's namespace: the same example, on the same NATS and Postgres (DESIGN §10).
const TEAM_B: &str = "team-b";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// `helm template` of the chart as `scripts/kind-up` installs it, with extra `--set`s.
fn render_chart(sets: &[String]) -> Vec<Value> {
    let helm = testbed::locate_binary("helm", None, &[]).expect("helm (run scripts/install-deps)");
    let mut command = Command::new(helm);
    command
        .args([
            "template",
            RELEASE,
            "charts/dreampipe",
            "--namespace",
            NAMESPACE,
        ])
        .current_dir(repo());
    // scripts/kind-up loads images tagged `dev`; the chart's default tag is its appVersion.
    command.args([
        "--set",
        "image.runtime.tag=dev",
        "--set",
        "operator.image.tag=dev",
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("helm runs");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    documents(&String::from_utf8(output.stdout).expect("UTF-8"))
}

fn take<T: DeserializeOwned>(manifests: &mut Vec<Value>, kind: &str, name: &str) -> T {
    let at = manifests
        .iter()
        .position(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the manifests"));
    serde_json::from_value(manifests.remove(at)).expect("a well-formed manifest")
}

/// The runtime settings the chart's operator Deployment gives the operator (its flags come from
/// the environment; see `dreampipe-operator run --help`).
fn operator_settings(operator: &Deployment) -> RuntimeSettings {
    let container = &operator.spec.template.spec.as_ref().unwrap().containers[0];
    let env = |name: &str| -> String {
        container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .and_then(|var| var.value.clone())
            .unwrap_or_else(|| panic!("the operator Deployment sets no {name}"))
    };
    RuntimeSettings {
        image: env("DREAMPIPE_RUNTIME_IMAGE"),
        image_pull_policy: env("DREAMPIPE_RUNTIME_PULL_POLICY"),
        nats_url: env("NATS_URL"),
        otlp_endpoint: None,
        default_stream_replicas: env("DREAMPIPE_DEFAULT_STREAM_REPLICAS")
            .parse()
            .expect("DREAMPIPE_DEFAULT_STREAM_REPLICAS is a number"),
        database_secret: crds::SecretKeyRef {
            name: env("DREAMPIPE_DATABASE_SECRET"),
            key: env("DREAMPIPE_DATABASE_SECRET_KEY"),
        },
        reader_members: env("DREAMPIPE_READER_MEMBERS")
            .split(',')
            .map(str::to_owned)
            .collect(),
        // The chart's default: no NetworkPolicies (the emulated node enforces none).
        receiver_ingress: (env("DREAMPIPE_NETWORK_POLICIES") == "true").then(|| {
            operator::settings::ReceiverIngress {
                operator_namespace: NAMESPACE.to_owned(),
                from_namespaces: Vec::new(),
            }
        }),
    }
}

/// An example resource as the API server stores it after `kubectl apply -n dreampipe`.
fn stored<T: DeserializeOwned>(manifest: Value, uid: usize) -> T {
    stored_in(manifest, uid, NAMESPACE)
}

/// An example resource as the API server stores it after `kubectl apply -n <namespace>`.
fn stored_in<T: DeserializeOwned>(mut manifest: Value, uid: usize, namespace: &str) -> T {
    let metadata = manifest["metadata"].as_object_mut().expect("metadata");
    metadata.insert("namespace".to_owned(), json!(namespace));
    metadata.insert(
        "uid".to_owned(),
        json!(format!("00000000-0000-4000-8000-{uid:012}")),
    );
    metadata.insert("generation".to_owned(), json!(1));
    serde_json::from_value(manifest).expect("an example resource matching its CRD type")
}

fn typed<T: DeserializeOwned>(manifest: Value) -> T {
    serde_json::from_value(manifest).expect("an example resource matching its CRD type")
}

fn example(file: &str) -> Vec<Value> {
    let path = repo().join("examples/salesforce").join(file);
    documents(&std::fs::read_to_string(&path).expect("example file"))
}

/// The operator's children of every example resource applied in `namespace`.
fn example_children(settings: &RuntimeSettings, namespace: &str) -> Vec<Children> {
    let stored = |manifest, uid| -> Value { stored_in(manifest, uid, namespace) };
    let mut uid = if namespace == NAMESPACE { 0 } else { 1000 };
    let mut next = || {
        uid += 1;
        uid
    };
    let entity: crds::Entity = typed(stored(example("entity.yaml").remove(0), next()));
    let owner = Owner::of(&entity).expect("owner");
    let valid = validate::entity(&entity, &owner).expect("a valid Entity");
    let mut children = vec![build::entity::build(&valid, settings)];
    for manifest in example("adapter.yaml") {
        let adapter: crds::Adapter = typed(stored(manifest, next()));
        let owner = Owner::of(&adapter).expect("owner");
        let valid = validate::adapter(&adapter, &owner)
            .and_then(|unresolved| unresolved.resolve(Some(entity.clone())))
            .expect("a valid Adapter");
        children.push(build::adapter::build(&valid, settings));
    }
    for manifest in example("projections.yaml") {
        let projection: crds::Projection = typed(stored(manifest, next()));
        let owner = Owner::of(&projection).expect("owner");
        let valid = validate::projection(&projection, &owner)
            .and_then(|unresolved| unresolved.resolve(Some(entity.clone())))
            .expect("a valid Projection");
        children.push(build::projection::build(&valid, settings));
    }
    children
}

/// Runs the chart's Postgres init scripts (what the postgres image does on an empty data
/// directory) against the test database, with the StatefulSet's own environment.
fn initialise_postgres(node: &Node, postgres: &StatefulSet, init: &Value, port: u16) {
    let container = &postgres.spec.template.spec.as_ref().unwrap().containers[0];
    let psql = testbed::locate_binary("psql", None, &[PathBuf::from("/usr/lib/postgresql")])
        .expect("psql (installed with PostgreSQL by scripts/install-deps)");
    let mut path = std::ffi::OsString::from(psql.parent().unwrap());
    path.push(":/usr/bin:/bin");
    for (file, script) in init["data"].as_object().expect("init scripts") {
        let mut command = Command::new("sh");
        command
            .args(["-c", script.as_str().unwrap()])
            .env_clear()
            .env("PATH", &path)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", port.to_string());
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    let key = from.secret_key_ref.as_ref().expect("a Secret key");
                    node.secret(&key.name, &key.key)
                }
                (None, None) => String::new(),
            };
            command.env(&var.name, value);
        }
        let output = command.output().expect("sh runs");
        assert!(
            output.status.success(),
            "{file} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A GET with a bearer token: its status and JSON body.
fn get_as(port: u16, path: &str, token: &str) -> Option<(u16, Value)> {
    let authorization = format!("Bearer {token}");
    let (status, body) = testbed::child::http_with_headers(
        port,
        "GET",
        path,
        None,
        &[("authorization", authorization.as_str())],
    )
    .ok()?;
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn get_json(port: u16, path: &str, token: &str) -> Option<Value> {
    get_as(port, path, token).and_then(|(status, body)| (status == 200).then_some(body))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_deployments_run_the_example_from_crm_to_query() {
    let nats = NatsServer::start().await.expect("nats-server");
    let database = TestDatabase::create().await.expect("postgres");
    // The chart's database name is a value; the test database is a fresh one of the test run.
    let mut chart = render_chart(&[
        format!("postgres.database={}", database.name()),
        // Both teams' namespaces, each with a query token of its own.
        format!("query.namespaces={{{NAMESPACE},{TEAM_B}}}"),
    ]);
    let settings = operator_settings(&take(&mut chart, "Deployment", "dreampipe-operator"));
    let query: Deployment = take(&mut chart, "Deployment", "dreampipe-query");
    let postgres: StatefulSet = take(&mut chart, "StatefulSet", "dreampipe-postgres");
    let nats_set: StatefulSet = take(&mut chart, "StatefulSet", "dreampipe-nats");
    let postgres_init: Value = take(&mut chart, "ConfigMap", "dreampipe-postgres-init");

    let binary = PathBuf::from(env!("CARGO_BIN_EXE_dreampipe"));
    let mut node = Node::new(NAMESPACE, Image::runtime(&repo(), &binary));
    let rest = node.apply(chart);
    assert!(
        rest.iter().all(|m| m["kind"] != "Deployment"),
        "a chart Deployment this test does not run: {rest:?}"
    );

    // NATS and Postgres: the test's servers stand in for the chart's StatefulSets.
    let nats_port: u16 = nats.url().rsplit(':').next().unwrap().parse().unwrap();
    let nats_service = nats_set.spec.service_name.clone().unwrap();
    node.stand_in(&nats_service, 4222, nats_port);
    let postgres_port = database.options().get_port();
    node.stand_in("dreampipe-postgres", 5432, postgres_port);
    initialise_postgres(&node, &postgres, &postgres_init, postgres_port);

    let mut simulator = node.apply(example("crm-simulator.yaml"));
    let simulator: Deployment = take(&mut simulator, "Deployment", "crm-simulator");
    node.schedule(&simulator);
    node.schedule(&query);
    let children = example_children(&settings, NAMESPACE);
    for child in &children {
        node.add_config_map(child.config_map.clone());
        if let Some(service) = &child.service {
            node.add_service(service.clone());
        }
        node.schedule(&child.deployment);
    }
    let expected_pods: i32 = children
        .iter()
        .map(|c| c.deployment.spec.replicas.unwrap())
        .sum::<i32>()
        + 2;
    assert_eq!(node.pods().len(), expected_pods as usize);

    // A second team applies the same example in its own namespace, with the database Secret
    // created there (README: a second team). Its pods reach NATS and Postgres directly: this
    // emulated node resolves only its own namespace's Services.
    let mut team_b = Node::new(TEAM_B, Image::runtime(&repo(), &binary));
    let writer_url = node.secret(
        &settings.database_secret.name,
        &settings.database_secret.key,
    );
    let writer_url = writer_url.replace(
        &format!("dreampipe-postgres.{NAMESPACE}.svc:5432"),
        &format!("127.0.0.1:{postgres_port}"),
    );
    team_b.apply(vec![json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": settings.database_secret.name},
        "stringData": {settings.database_secret.key.as_str(): writer_url}})]);
    let settings_b = RuntimeSettings {
        nats_url: nats.url().to_owned(),
        ..settings.clone()
    };
    let mut simulator_b = team_b.apply(example("crm-simulator.yaml"));
    team_b.schedule(&take(&mut simulator_b, "Deployment", "crm-simulator"));
    for child in example_children(&settings_b, TEAM_B) {
        team_b.add_config_map(child.config_map.clone());
        if let Some(service) = &child.service {
            team_b.add_service(service.clone());
        }
        team_b.schedule(&child.deployment);
    }

    node.start();
    team_b.start();
    node.wait_ready(Duration::from_secs(90));
    team_b.wait_ready(Duration::from_secs(90));

    // The data crossed every pod: CRM -> adapter -> receivers -> stream -> projectors -> views
    // (as the writer) -> query service (as the read-only reader).
    // The chart's query tokens: one per namespace, read from the Secret it generated.
    let query_port = node.pod("dreampipe-query").http_port();
    let token_a = node.secret(&format!("{RELEASE}-query-tokens"), NAMESPACE);
    let token_b = node.secret(&format!("{RELEASE}-query-tokens"), TEAM_B);
    let (status, _) = get_as(query_port, "/v1/views/customers", "").expect("query answers");
    assert_eq!(status, 401, "the chart's query service asks for a token");
    let deadline = Instant::now() + Duration::from_secs(90);
    let customers = loop {
        let rows = get_json(query_port, "/v1/views/customers?limit=1000", &token_a)
            .and_then(|page| page["rows"].as_array().cloned())
            .unwrap_or_default();
        let cities = get_json(
            query_port,
            "/v1/views/customers_by_city?limit=1000",
            &token_a,
        )
        .and_then(|page| page["rows"].as_array().cloned())
        .unwrap_or_default();
        let changes = get_json(query_port, "/v1/views/customer_changes?limit=1", &token_a)
            .and_then(|page| page["rows"].as_array().cloned())
            .unwrap_or_default();
        if rows.len() >= 150 && !cities.is_empty() && !changes.is_empty() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the views did not fill: {} customers, {} cities, {} changes; adapter log:\n{}",
            rows.len(),
            cities.len(),
            changes.len(),
            node.pod("salesforce-customers-adapter").log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let row = &customers[0];
    let key = row["dp_key"].as_str().expect("a dp_key column");
    let state = get_json(
        query_port,
        &format!("/v1/entities/customer/{key}"),
        &token_a,
    )
    .expect("the query service serves the entity from the stream");
    assert_eq!(state["state"]["name"], row["name"]);

    // The receiver answers with the Entity's token only (the adapter had it: rows arrived).
    let receiver_port = node.pod("customer-receiver").http_port();
    let (status, _) = http(
        receiver_port,
        "GET",
        &format!("/v1/entities/customer/{key}"),
        None,
    )
    .expect("receiver answers");
    assert_eq!(status, 401, "the receiver asks for its ingest token");

    // The second team's pipeline filled its own views, in its own schema, at the same time.
    let pool = database.pool().await.expect("pool");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut counts = Vec::new();
        for namespace in [NAMESPACE, TEAM_B] {
            let schema = runtime::sql::Schema::of_namespace(namespace);
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select count(*) from {}",
                schema.table("customers")
            )))
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            counts.push(count);
        }
        if counts.iter().all(|&n| n >= 150) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "customers rows per namespace {:?}: {counts:?}; team-b adapter log:\n{}",
            [NAMESPACE, TEAM_B],
            team_b.pod("salesforce-customers-adapter").log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // One query service serves both namespaces; each team's token reads its own only.
    let team_b_views = format!("/v1/namespaces/{TEAM_B}/views/customers?limit=1000");
    let rows_b = get_json(query_port, &team_b_views, &token_b)
        .and_then(|page| page["rows"].as_array().map(Vec::len))
        .expect("team-b's token reads team-b's view");
    assert!(
        rows_b >= 150,
        "team-b's view through the query service: {rows_b} rows"
    );
    for (path, token) in [
        (team_b_views.clone(), &token_a),
        (
            format!("/v1/namespaces/{TEAM_B}/entities/customer/{key}"),
            &token_a,
        ),
        (
            format!("/v1/namespaces/{NAMESPACE}/views/customers"),
            &token_b,
        ),
    ] {
        let (status, problem) = get_as(query_port, &path, token).expect("query answers");
        assert_eq!(
            status, 403,
            "{path} with another namespace's token: {problem}"
        );
    }

    for (pod, status) in node.stop().into_iter().chain(team_b.stop()) {
        assert!(
            status.success(),
            "pod {pod} exited with {status} on SIGTERM"
        );
    }

    // `kubectl delete` of a Projection with deletionPolicy: Delete: once its projector pods
    // are gone, the operator's drop Job drops its view and tables, and nothing else.
    let mut customers: crds::Projection = stored(example("projections.yaml").remove(0), 99);
    customers.spec.deletion_policy = crds::projection::ProjectionDeletionPolicy::Delete;
    let owner = Owner::of(&customers).expect("owner");
    let job = build::projection::drop_job(&customers, &owner, &settings);
    let status = node.run_job(&job, Duration::from_secs(60));
    assert!(
        status.success(),
        "the drop Job exited with {status}:\n{}",
        node.pod("customers-drop").log_tail()
    );
    for (relation, kept) in [
        ("customers", false),
        ("customers_by_city", true),
        ("customer_changes", true),
    ] {
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(runtime::sql::Schema::of_namespace(NAMESPACE).table(relation))
            .fetch_one(&pool)
            .await
            .expect("query");
        assert_eq!(
            exists, kept,
            "{relation}: only the deleted Projection's view goes"
        );
    }
    let team_b_view: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(runtime::sql::Schema::of_namespace(TEAM_B).table("customers"))
        .fetch_one(&pool)
        .await
        .expect("query");
    assert!(team_b_view, "the other team's view of the same name stays");
}
