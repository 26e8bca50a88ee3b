//! `dreampipe projector` driven like the kubelet does: config from mounted YAML and env,
//! probes and the status endpoint over HTTP, SIGTERM for a clean stop.

mod projector_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use projector_support::*;
use serde_json::{Value, json};
use testbed::child::{free_port, terminate, wait_for_port};

const CONFIG: &str = r#"apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer}
spec:
  key: /id
  partitions: 2
  schema: {type: object, required: [id], properties: {id: {type: string}}}
---
apiVersion: dreampipe.io/v1alpha1
kind: Projection
metadata: {name: customers}
spec:
  entity: customer
  filters:
    - where: "state.active"
  sink:
    postgres:
      view: customers
      columns: [{name: name, type: text}]
"#;

fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_projector_command_serves_probes_and_status_and_stops_on_sigterm() {
    let mut bed = Bed::start(2).await;
    bed.producer
        .publish([
            (
                "a".to_owned(),
                Some(json!({"id": "a", "name": "Ada", "active": true})),
            ),
            (
                "b".to_owned(),
                Some(json!({"id": "b", "name": "Bob", "active": false})),
            ),
        ])
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dreampipe"))
        .arg("projector")
        .env("DREAMPIPE_CONFIG", dir.path())
        .env("NATS_URL", bed.nats.url())
        .env("DATABASE_URL", bed.database.url())
        .env("DREAMPIPE_LISTEN", format!("127.0.0.1:{port}"))
        .env("POD_NAME", "projector-0")
        .env("DREAMPIPE_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&mut child, port, Duration::from_secs(20));
    assert_eq!(get(port, "/healthz").0, 200);
    wait_until(Duration::from_secs(20), "readiness", || async {
        get(port, "/readyz").0 == 200
    })
    .await;
    wait_until(Duration::from_secs(20), "the view to go live", || async {
        let (_, body) = get(port, "/v1/status");
        let status: Value = serde_json::from_str(&body).unwrap_or_default();
        status["generations"][0]["phase"] == "Live"
    })
    .await;

    let (code, body) = get(port, "/v1/status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["projection"], "default/customers");
    assert_eq!(status["replica"], "projector-0");
    assert_eq!(status["view"], "customers");
    assert_eq!(status["ownedPartitions"], json!([0, 1]));
    let generation = &status["generations"][0];
    assert_eq!(status["activeGeneration"], generation["generation"]);
    assert_eq!(
        (generation["lag"].clone(), generation["progress"].clone()),
        (json!(0), json!(100))
    );
    assert_eq!(generation["deadLetters"], 0);
    assert_eq!(generation["events"], 2);
    assert_eq!(status["lagSeconds"], json!(0.0), "caught up: 0 s behind");
    assert_eq!(rows(&bed.pool, "customers").await.len(), 1);

    let (_, metrics) = get(port, "/metrics");
    assert!(
        metrics.contains("dreampipe_projector_events_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dreampipe_projector_owned_partitions 2"),
        "{metrics}"
    );
    let live = generation["generation"].as_str().unwrap();
    for partition in 0..2 {
        for series in ["lag_seconds", "lag_events"] {
            let line = format!(
                "dreampipe_projector_{series}{{generation=\"{live}\",partition=\"{partition}\"}} 0"
            );
            assert!(
                metrics
                    .lines()
                    .any(|l| l == line || l == format!("{line}.0")),
                "no {line} in\n{metrics}"
            );
        }
    }

    let exit = terminate(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "{exit}");
    let leases: i64 = sqlx::query_scalar("select count(*) from dp_leases")
        .fetch_one(&bed.pool)
        .await
        .unwrap();
    assert_eq!(leases, 0, "a clean stop hands the partitions back at once");
}

/// Relations of the namespace's schema whose name starts with `prefix`.
async fn relations(pool: &sqlx::PgPool, prefix: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select relname::text from pg_class join pg_namespace n on n.oid = relnamespace
         where nspname = $2 and relkind in ('r', 'v') and relname::text like $1 || '%'
         order by 1",
    )
    .bind(prefix)
    .bind(SCHEMA)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn drop_removes_the_view_its_tables_and_its_bookkeeping_and_nothing_else() {
    let mut bed = Bed::start(2).await;
    bed.producer
        .publish([(
            "a".to_owned(),
            Some(json!({"id": "a", "name": "Ada", "active": true})),
        )])
        .await;
    // Two projections over one entity: `customers` is dropped, `everyone` must stay.
    let config = format!(
        "{CONFIG}---\n{}",
        CONFIG
            .split("---\n")
            .nth(1)
            .unwrap()
            .replace("name: customers", "name: everyone")
            .replace("view: customers", "view: everyone")
            .replace("state.active", "true")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let projector = |name: &str, drop: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dreampipe"));
        command
            .arg("projector")
            .env("DREAMPIPE_CONFIG", dir.path())
            .env("DREAMPIPE_PROJECTION", name)
            .env("NATS_URL", bed.nats.url())
            .env("DATABASE_URL", bed.database.url())
            .env("DREAMPIPE_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("DREAMPIPE_LOG_FORMAT", "text")
            .stdout(Stdio::null());
        if drop {
            command.arg("--drop");
        }
        command
    };
    for name in ["customers", "everyone"] {
        let mut child = projector(name, false).spawn().unwrap();
        wait_until(Duration::from_secs(20), "the view to fill", || async {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "select count(*) from {}",
                if name == "customers" {
                    "customers"
                } else {
                    "everyone"
                }
            )))
            .fetch_one(&bed.pool)
            .await
            .is_ok_and(|n| n == 1)
        })
        .await;
        assert!(terminate(&mut child, Duration::from_secs(15)).success());
    }
    assert_eq!(relations(&bed.pool, "customers").await, ["customers"]);
    assert_eq!(relations(&bed.pool, "dp_customers_").await.len(), 1);

    for _ in 0..2 {
        let output = projector("customers", true).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    assert!(relations(&bed.pool, "customers").await.is_empty());
    assert!(relations(&bed.pool, "dp_customers_").await.is_empty());
    for table in [
        "dp_generations",
        "dp_checkpoints",
        "dp_leases",
        "dp_replicas",
        "dp_views",
    ] {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from {table} where projection = 'default/customers'"
        )))
        .fetch_one(&bed.pool)
        .await
        .unwrap();
        assert_eq!(
            left, 0,
            "{table} still holds rows of the dropped projection"
        );
    }
    assert_eq!(
        rows(&bed.pool, "everyone").await.len(),
        1,
        "the other view stays"
    );
    assert_eq!(relations(&bed.pool, "dp_everyone_").await.len(), 1);
}
