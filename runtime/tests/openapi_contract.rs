//! The OpenAPI documents are the contract: schemathesis (installed by `scripts/install-deps`)
//! runs its default checks against the receiver and the query service, served over TCP
//! in-process on a real JetStream and Postgres, and any failure fails the test.
//!
//! Alone: `cargo test -p runtime --test openapi_contract -- --nocapture` (prints the run).
//! The runs are seeded and bounded (`--seed`, `--max-examples`, `--generation-deterministic`);
//! `schemathesis.toml` at the repository root holds the few documented allowances.

mod receiver_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use receiver_support::{call, open_receiver, put};
use runtime::auth::ScopedTokens;
use runtime::query::http::routes;
use runtime::query::namespaces::Readers;
use serde_json::json;
use testbed::{NatsServer, TestDatabase};
use tokio_util::sync::CancellationToken;

/// Generated cases per operation and phase: enough to reach every bound, few enough to finish
/// in about a minute on a loaded machine.
const MAX_EXAMPLES: &str = "30";
/// The whole run may take this long before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime crate is in the workspace")
        .to_owned()
}

/// `st` from `.tools/bin` (where install-deps puts it), or from PATH.
fn schemathesis() -> PathBuf {
    let installed = repository().join(".tools/bin/st");
    if installed.exists() {
        return installed;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("st"))
                .find(|candidate| candidate.exists())
        })
        .expect("schemathesis (st) is not installed: run scripts/install-deps")
}

/// Serves `router` on a free local port until the returned token is cancelled.
async fn serve(router: Router) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(process::serve(listener, router, stop.clone()));
    (format!("http://{address}"), stop)
}

/// Runs schemathesis against `base`'s `/openapi.json` and fails with its report on any failure.
async fn assert_conforms(base: &str, name: &str) {
    let output = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(schemathesis())
            .current_dir(repository())
            .arg("--config-file")
            .arg(repository().join("schemathesis.toml"))
            .arg("--no-color")
            .arg("run")
            .arg(format!("{base}/openapi.json"))
            .args(["--seed", "20260131", "--generation-deterministic"])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--workers", "1", "--request-timeout", "30"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("schemathesis against the {name} took over {RUN_TIMEOUT:?}"))
    .expect("schemathesis runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found the {name} departing from its OpenAPI document:\n{report}"
    );
    eprintln!("{report}");
}

#[tokio::test]
async fn the_receiver_keeps_to_its_openapi_document() {
    let nats = NatsServer::start().await.unwrap();
    let receiver = open_receiver(&nats).await;
    put(&receiver, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let (base, stop) = serve(receiver).await;
    assert_conforms(&base, "receiver").await;
    stop.cancel();
}

#[tokio::test]
async fn the_query_service_keeps_to_its_openapi_document() {
    let nats = NatsServer::start().await.unwrap();
    let receiver = open_receiver(&nats).await;
    for name in ["Ada", "Ada L."] {
        put(&receiver, "c1", json!({"id": "c1", "name": name})).await;
    }
    call(
        &receiver,
        Method::DELETE,
        "/v1/entities/customer/c1",
        None,
        &[],
    )
    .await;
    put(&receiver, "c2", json!({"id": "c2", "name": "Bo"})).await;
    let database = TestDatabase::create().await.unwrap();
    let pool = database.pool_in_schema("dp_shop").await.unwrap();
    for sql in [
        "create schema dp_shop",
        "create table dp_customers_g1 (dp_key text primary key, dp_version bigint, name text)",
        "create view customers as select dp_key, dp_version, name from dp_customers_g1",
        "insert into dp_customers_g1 values ('c2', 1, 'Bo'), ('c3', 4, 'Cy')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    // Dead letters as a projector records them, one handled, one not.
    runtime::projector::database::prepare(&pool, &runtime::sql::Schema::of_namespace("shop"))
        .await
        .unwrap();
    for sql in [
        "insert into dp_dead_letters (projection, generation, partition, sequence, key, version, event, message, reason)
         values ('shop/customers', '0123456789abcdef', 0, 7, 'c9', 1, '{\"key\": \"c9\"}', '\\x7b7d', 'a filter failed')",
        "insert into dp_dead_letters (projection, generation, partition, sequence, key, payload, reason, handled_at, handled_by)
         values ('shop/customers', '0123456789abcdef', 1, 9, null, 'not json', 'not an event', now(), 'ada')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let readers = Readers::new(nats.client().await.unwrap(), "shop")
        .with_views(pool.clone())
        .with_dead_letters(pool);
    let (base, stop) = serve(routes(Arc::new(readers), ScopedTokens::default())).await;
    assert_conforms(&base, "query service").await;
    stop.cancel();
}
