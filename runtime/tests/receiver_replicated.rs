//! The receiver on a 3-node JetStream cluster with an R3 stream (DESIGN §11, ADR 0047):
//! decisions on state as fresh as the leader's, batched; and the stream leader killed
//! mid-ingest loses nothing acknowledged.

#![allow(
    clippy::print_stdout,
    reason = "figures for docs/failure-model.md, shown with --nocapture"
)]

mod ledger_support;
mod receiver_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use ledger_support::Ledger;
use receiver_support::{call, put, receiver_over};
use runtime::auth::Tokens;
use runtime::store::{Event, StreamNames};
use serde_json::{Value, json};
use testbed::NatsCluster;

const REPLICATED: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: shop}
spec:
  key: /id
  partitions: 4
  stream: {replicas: 3}
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string}
"#;

fn names() -> StreamNames {
    StreamNames::new("shop", "customer", 4)
}

/// A receiver of the R3 Entity with its own connection to every node, as a pod would have.
async fn receiver(cluster: &NatsCluster) -> Router {
    receiver_on(cluster.client().await.unwrap()).await
}

async fn receiver_on(client: async_nats::Client) -> Router {
    let entity: crds::Entity = serde_yaml::from_str(REPLICATED).unwrap();
    receiver_over(client, entity, Tokens::default()).await.0
}

async fn batch(router: &Router, items: &[Value]) -> (StatusCode, Value) {
    let body = Value::Array(items.to_vec()).to_string();
    let answer = call(
        router,
        Method::POST,
        "/v1/entities/customer/batch",
        Some(&body),
        &[("content-type", "application/json")],
    )
    .await;
    (answer.status, answer.body)
}

/// Every event of the stream, by key, in stream order.
async fn events_by_key(cluster: &NatsCluster) -> BTreeMap<String, Vec<Event>> {
    ledger_support::events_by_key(&cluster.jetstream().await.unwrap(), &names()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_one_receiver_is_never_unchanged_to_another() {
    let cluster = NatsCluster::start(3).await.unwrap();
    drop(receiver(&cluster).await); // ensures the stream
    // The first receiver writes through the stream leader; the second is connected to a
    // follower, which answers its direct gets itself.
    let js = cluster.jetstream().await.unwrap();
    let leader = cluster.leader_of(&js, &names().stream()).await.unwrap();
    let follower = (leader + 1) % cluster.len();
    let first = receiver_on(cluster.client_of(leader).await.unwrap()).await;
    let second = receiver_on(cluster.client_of(follower).await.unwrap()).await;
    let keys: Vec<String> = (0..20).map(|k| format!("k{k}")).collect();
    let state = |key: &str, round: usize| json!({"key": key, "state": {"id": key, "name": format!("v{round}")}});

    // Each round the first receiver stores version `round` of every key; the second then
    // submits version `round - 1` through the follower, which differs from what the stream
    // holds: a replica behind the leader would still hold `round - 1` and answer `unchanged`.
    let rounds = 60;
    let mut wrong = Vec::new();
    for round in 1..=rounds {
        let items: Vec<Value> = keys.iter().map(|k| state(k, round)).collect();
        let (status, answer) = batch(&first, &items).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let stale: Vec<Value> = keys.iter().map(|k| state(k, round - 1)).collect();
        let (status, answer) = batch(&second, &stale).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for result in answer["results"].as_array().unwrap() {
            if result["result"] != "updated" {
                wrong.push(format!("round {round}: {result}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} submissions that differ from the stream were not stored as updates \
         (a decision on a replica behind the leader): {:?}",
        wrong.len(),
        rounds * keys.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// What writers saw: every acknowledged (key, version), and every answer that was not one.
/// Submits new states until `stop`: single PUTs on even writers, batches of 10 on odd ones.
async fn write_until(router: Router, writer: usize, stop: Arc<AtomicBool>) -> Ledger {
    let mut ledger = Ledger::default();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if writer.is_multiple_of(2) {
            let key = format!("w{writer}-{}", round % 10);
            let answer = put(
                &router,
                &key,
                json!({"id": key, "name": format!("r{round}")}),
            )
            .await;
            ledger.record(&key, answer.status.as_u16(), &answer.body);
        } else {
            let items: Vec<Value> = (0..10)
                .map(|k| {
                    let key = format!("w{writer}-{k}");
                    json!({"state": {"id": key, "name": format!("r{round}")}})
                })
                .collect();
            let (status, answer) = batch(&router, &items).await;
            if status != StatusCode::OK {
                ledger.record("batch", status.as_u16(), &answer);
                continue;
            }
            for result in answer["results"].as_array().unwrap() {
                let key = result["key"].as_str().unwrap_or("?").to_owned();
                let status = match result["result"].as_str() {
                    Some("rejected") => result["problem"]["status"].as_u64().unwrap_or(0) as u16,
                    _ => 200,
                };
                let body = if status == 200 {
                    result
                } else {
                    &result["problem"]
                };
                ledger.record(&key, status, body);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_stream_leader_mid_ingest_loses_nothing_acknowledged() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let receivers = [receiver(&cluster).await, receiver(&cluster).await];
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let router = receivers[writer % 2].clone();
            tokio::spawn(write_until(router, writer, stop.clone()))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let js = cluster.jetstream().await.unwrap();
    let leader = cluster
        .leader_of(&js, &names().stream())
        .await
        .expect("the stream has a leader");
    let killed_at = Instant::now();
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Recovered without a restart: both receivers store a new key again.
    for (index, router) in receivers.iter().enumerate() {
        let key = format!("after-{index}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = put(router, &key, json!({"id": key, "name": "back"})).await;
            if answer.status.is_success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "receiver {index} still answers {} {} 30 s after the leader n{leader} was killed",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let recovered_in = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut ledger = Ledger::default();
    for writer in writers {
        ledger.merge(writer.await.unwrap());
    }
    cluster.restart(leader).unwrap();

    let stored = events_by_key(&cluster).await;
    let figures = format!(
        "{} acknowledged, {} answered 503, leader n{leader} killed, writes back after {recovered_in:?}",
        ledger.acknowledged.len(),
        ledger.unavailable
    );
    println!("{figures}");
    ledger.holds_in(&stored, &figures);
    assert!(
        ledger.acknowledged.len() > 100,
        "too little was written to show anything ({figures})"
    );
}
