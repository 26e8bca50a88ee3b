//! Query latency under load: p50 and p99 of a point read of an entity's state and of a view
//! row, with 200 requests in flight against a release `dreampipe query` process.
//!
//! `cargo bench -p runtime --bench query` starts its own nats-server and Postgres, stores
//! 10 000 keys (through the event store) and a 10 000-row view, then sends 20 000 requests of
//! each kind (`DREAMPIPE_BENCH_N` overrides) from 200 concurrent clients, after 1,000 of each
//! that are not counted (the first open the Postgres pool's connections).

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod figures;

use figures::{Aim, figure};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::ensure;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use runtime::store::jetstream::{EventStore, ensure_stream};
use runtime::store::{Event, EventType, Key, StreamNames};
use serde_json::json;
use testbed::child::{free_port, terminate, wait_for_port, wait_until_ready};
use testbed::{NatsServer, TestDatabase};

const KEYS: usize = 10_000;
const CONCURRENCY: usize = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("DREAMPIPE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let nats = NatsServer::start().await?;
    let database = TestDatabase::create().await?;
    load_entities(&nats).await?;
    load_view(&database).await?;

    let port = free_port();
    let mut query = Command::new(env!("CARGO_BIN_EXE_dreampipe"))
        .args([
            "query",
            "--namespace",
            "bench",
            "--nats-url",
            nats.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("DATABASE_URL", database.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_port(&mut query, port, Duration::from_secs(30));
    wait_until_ready(port, Duration::from_secs(30));

    println!("query benchmark: {n} requests of each kind, {CONCURRENCY} in flight");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12}",
        "read", "p50 ms", "p99 ms", "max ms", "requests/s"
    );
    let entity = |i: usize| format!("/v1/entities/customer/customer-{:05}", i % KEYS);
    let row = |i: usize| format!("/v1/views/customers?dp_key=customer-{:05}", i % KEYS);
    let mut p99s = Vec::new();
    for (name, path) in [
        ("entity state", &entity as &dyn Fn(usize) -> String),
        ("view row (by key)", &row),
    ] {
        // Not counted: the first requests of each kind open the pool's connections (and
        // NATS's subscriptions); the figures are the steady state.
        load(port, CONCURRENCY * 5, path).await?;
        let (mut latencies, rate) = load(port, n, path).await?;
        latencies.sort();
        let at = |q: f64| {
            latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "{name:<22} {:>10.2} {:>10.2} {:>10.2} {rate:>12.0}",
            at(0.50),
            at(0.99),
            at(1.0)
        );
        figure(&format!("query {name} p99"), at(0.99), 1, " ms", None);
        p99s.push(at(0.99));
    }
    figure(
        "query view row p99 / entity p99",
        p99s[1] / p99s[0],
        2,
        "",
        Some(Aim::AtMost(1.5)),
    );
    ensure!(
        terminate(&mut query, Duration::from_secs(10)).success(),
        "query service did not stop cleanly"
    );
    Ok(())
}

async fn load(
    port: u16,
    n: usize,
    path: &dyn Fn(usize) -> String,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let latencies: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let uri: hyper::Uri = format!("http://127.0.0.1:{port}{}", path(i))
                .parse()
                .expect("a valid URI");
            async move {
                let sent = Instant::now();
                let response = client.get(uri).await?;
                let status = response.status();
                response.into_body().collect().await?;
                ensure!(status == 200, "answer {status}");
                Ok(sent.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok((latencies.into_iter().collect::<anyhow::Result<_>>()?, rate))
}

async fn load_entities(nats: &NatsServer) -> anyhow::Result<()> {
    let client = nats.client().await?;
    let names = StreamNames::new("bench", "customer", 8);
    ensure_stream(&client, &names, &Default::default()).await?;
    let store = EventStore::open(&client, names).await?;
    let appends = (0..KEYS).map(|i| {
        let store = store.clone();
        async move {
            let key = Key::new(format!("customer-{i:05}")).expect("valid key");
            let state =
                json!({"id": key.as_str(), "name": format!("Customer {i}"), "city": "Lyon"});
            let event = Event {
                id: uuid::Uuid::now_v7(),
                entity: "customer".into(),
                key: key.to_string(),
                version: 1,
                type_: EventType::Created,
                changes: runtime::store::envelope::diff(None, Some(&state)),
                state: Some(state),
                source: None,
                occurred_at: None,
                recorded_at: jiff::Timestamp::now().to_string(),
                correlation_id: None,
                erasure: None,
            };
            store.append(&key, &event, 0).await
        }
    });
    let results: Vec<_> = futures::stream::iter(appends)
        .buffer_unordered(256)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

async fn load_view(database: &TestDatabase) -> anyhow::Result<()> {
    // Namespace `bench`'s views live in its schema (ADR 60).
    sqlx::query("create schema dp_bench")
        .execute(&database.pool().await?)
        .await?;
    let pool = database.pool_in_schema("dp_bench").await?;
    sqlx::query("create table dp_customers_g1 (dp_key text primary key, dp_version bigint, name text, city text)")
        .execute(&pool)
        .await?;
    sqlx::query(
        "create view customers as select dp_key, dp_version, name, city from dp_customers_g1",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "insert into dp_customers_g1 select 'customer-' || lpad(i::text, 5, '0'), 1, 'Customer ' || i, 'Lyon'
         from generate_series(0, $1 - 1) as i",
    )
    .bind(KEYS as i64)
    .execute(&pool)
    .await?;
    sqlx::query("analyze dp_customers_g1")
        .execute(&pool)
        .await?;
    Ok(())
}
