//! Servers taken away while data flows (DESIGN §11): a single NATS server killed -9 and
//! restarted over its store under receivers, a projector and the query service; Postgres
//! restarted immediately under a projector. Nothing acknowledged is lost, every role says it
//! is not ready while its server is away, and each recovers by itself.

#![allow(
    clippy::print_stdout,
    reason = "figures for docs/failure-model.md, shown with --nocapture"
)]

mod ledger_support;
mod projector_support;
mod role_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledger_support::{Ledger, events_by_key};
use projector_support::{Bed, SCHEMA, customer, projection, rows, view_exists, wait_until};
use role_support::{CONFIG, start};
use runtime::store::StreamNames;
use serde_json::{Value, json};
use testbed::child::{http, terminate, wait_until_ready};
use testbed::{NatsServer, TestDatabase};

/// The Projection of [`CONFIG`], for the in-process fresh replay.
const VIEW_SPEC: &str =
    "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n";

/// Publishes 200 changes over 300 keys, a different spread each round.
async fn publish(bed: &mut Bed, round: usize, rng: &mut fastrand::Rng) {
    let changes: Vec<(String, Option<Value>)> = (0..200)
        .map(|k| {
            let key = format!("c{}", (k * 7 + round) % 300);
            let state = customer(rng, &key);
            (key, Some(state))
        })
        .collect();
    bed.producer.publish(changes).await;
}

fn readyz(port: u16) -> u16 {
    http(port, "GET", "/readyz", None).map_or(0, |(status, _)| status)
}

/// Waits until `/readyz` of every port answers `status`; panics with `what` after `timeout`.
fn wait_for_readiness(ports: &[(&str, u16)], status: u16, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let answers: Vec<(&str, u16)> = ports
            .iter()
            .map(|(role, port)| (*role, readyz(*port)))
            .collect();
        if answers.iter().all(|(_, answer)| *answer == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz answers {answers:?}, not all {status}, after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PUTs new states of ten keys to the receiver on `port` until `stop`.
fn write_until(port: u16, writer: usize, stop: &AtomicBool) -> Ledger {
    let mut ledger = Ledger::default();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let key = format!("w{writer}-{}", round % 10);
        let body = json!({"id": key, "name": format!("r{round}")}).to_string();
        match http(
            port,
            "PUT",
            &format!("/v1/entities/customer/{key}"),
            Some(&body),
        ) {
            Ok((status, answer)) => {
                let answer = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
                ledger.record(&key, status, &answer);
            }
            Err(error) => ledger.no_answer(error),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_mid_ingest_loses_nothing_acknowledged() {
    let mut nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let nats_env = ("NATS_URL", nats.url().to_owned());
    let database_env = ("DATABASE_URL", database.url());

    let (mut receivers, mut others) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        receivers.push(start(
            "receiver",
            dir.path(),
            std::slice::from_ref(&nats_env),
        ));
    }
    others.push(start(
        "projector",
        dir.path(),
        &[nats_env.clone(), database_env.clone()],
    ));
    others.push(start(
        "query",
        dir.path(),
        &[nats_env.clone(), database_env.clone()],
    ));
    let ports: Vec<(&str, u16)> = [("receiver", receivers[0].1), ("receiver", receivers[1].1)]
        .into_iter()
        .chain([("projector", others[0].1), ("query", others[1].1)])
        .collect();
    for (_, port) in &ports {
        wait_until_ready(*port, Duration::from_secs(30));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let port = receivers[writer % 2].1;
            let stop = stop.clone();
            std::thread::spawn(move || write_until(port, writer, &stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    nats.kill();
    let killed_at = Instant::now();
    let ports_now = ports.clone();
    tokio::task::spawn_blocking(move || {
        wait_for_readiness(&ports_now, 503, Duration::from_secs(10), "NATS killed")
    })
    .await
    .unwrap();
    let unready_after = killed_at.elapsed();
    // Longer than a publish's ack timeout (5 s): a write caught in flight by the kill either
    // is acknowledged after the reconnect or answered 503, and writes started during the
    // outage are answered 503 at once, so the outage is always seen under load.
    tokio::time::sleep(Duration::from_secs(6)).await;

    nats.restart().unwrap();
    let restarted_at = Instant::now();
    let ports_now = ports.clone();
    tokio::task::spawn_blocking(move || {
        wait_for_readiness(&ports_now, 200, Duration::from_secs(30), "NATS restarted")
    })
    .await
    .unwrap();
    let ready_after = restarted_at.elapsed();
    // Writes go through again before the writers stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledger = Ledger::default();
    for writer in writers {
        ledger.merge(writer.join().unwrap());
    }
    for (mut child, _) in receivers.into_iter().chain(others) {
        terminate(&mut child, Duration::from_secs(15));
    }

    let stored = events_by_key(
        &nats.jetstream().await.unwrap(),
        &StreamNames::new("default", "customer", 2),
    )
    .await;
    let figures = format!(
        "{} acknowledged, {} answered 503; not ready {unready_after:?} after the kill, \
         ready again {ready_after:?} after the restart",
        ledger.acknowledged.len(),
        ledger.unavailable
    );
    println!("{figures}");
    ledger.holds_in(&stored, &figures);
    assert!(
        ledger.unavailable > 0 && ledger.acknowledged.len() > 100,
        "the outage was not under load ({figures})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_immediately_mid_projection_leaves_the_view_a_fresh_replay() {
    let mut bed = Bed::start(2).await;
    let mut database = TestDatabase::on_private_server().await.unwrap();
    let pool = database.pool_in_schema(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let (mut projector, port) = start(
        "projector",
        dir.path(),
        &[
            ("NATS_URL", bed.nats.url().to_owned()),
            ("DATABASE_URL", database.url()),
        ],
    );
    wait_until_ready(port, Duration::from_secs(30));

    let mut rng = fastrand::Rng::with_seed(14);
    publish(&mut bed, 0, &mut rng).await;

    // Cut Postgres away mid-projection for two seconds, watching the projector's readiness.
    let (events_before, unready) = {
        let watching = Arc::new(AtomicBool::new(true));
        let seen_503 = {
            let watching = watching.clone();
            std::thread::spawn(move || {
                let mut seen = false;
                while watching.load(Ordering::Relaxed) {
                    seen |= readyz(port) == 503;
                    std::thread::sleep(Duration::from_millis(50));
                }
                seen
            })
        };
        publish(&mut bed, 1, &mut rng).await;
        let before = bed.producer.states().len();
        tokio::task::block_in_place(|| database.restart_server_immediately(Duration::from_secs(3)))
            .unwrap();
        watching.store(false, Ordering::Relaxed);
        (before, seen_503.join().unwrap())
    };
    publish(&mut bed, 2, &mut rng).await;
    publish(&mut bed, 3, &mut rng).await;

    let view = projection("customers", VIEW_SPEC);
    bed.caught_up(&pool, &view, Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(30), "the view to be live", || {
        view_exists(&pool, "customers")
    })
    .await;
    let served = rows(&pool, "customers").await;
    let fresh = bed.fresh_replay(&view, "customers").await;
    terminate(&mut projector, Duration::from_secs(15));
    assert!(
        unready,
        "the projector's /readyz never answered 503 while Postgres was away"
    );
    assert_eq!(
        served.len(),
        fresh.len(),
        "rows after the restart vs a fresh replay ({events_before} keys before the cut)"
    );
    assert_eq!(
        served, fresh,
        "the view after an immediate restart is not a fresh replay"
    );
}

/// `--nats-url` takes a cluster's servers as a list: a receiver whose first-named server is
/// down when it starts connects to the next, brings its R3 stream up to date and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_given_every_node_starts_while_the_first_is_down() {
    let mut cluster = testbed::NatsCluster::start(3).await.unwrap();
    let replicated = CONFIG.replacen(
        "  partitions: 2\n",
        "  partitions: 2\n  stream: {replicas: 3}\n",
        1,
    );
    // An R3 stream is placed on three servers that are up: it exists before a node goes, as
    // it would in production.
    let entity: crds::Entity =
        serde_yaml::from_str(replicated.split("---").next().unwrap()).unwrap();
    let names = StreamNames::new("default", "customer", 2);
    runtime::store::jetstream::ensure_stream(
        &cluster.client().await.unwrap(),
        &names,
        &entity.spec.stream,
    )
    .await
    .unwrap();
    cluster.stop(0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), &replicated).unwrap();
    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), 3, "every node is named: {urls}");

    let (mut receiver, port) = start("receiver", dir.path(), &[("NATS_URL", urls.clone())]);
    let started = Instant::now();
    wait_for_readiness(
        &[("receiver", port)],
        200,
        Duration::from_secs(30),
        "a receiver given every node, the first one down",
    );
    let (status, answer) = http(
        port,
        "PUT",
        "/v1/entities/customer/c1",
        Some(&json!({"id": "c1", "name": "Ada"}).to_string()),
    )
    .unwrap();
    assert!(
        (200..300).contains(&status),
        "a PUT through the receiver answered {status}: {answer}"
    );
    let jetstream = cluster.jetstream().await.unwrap();
    let mut stream = jetstream.get_stream(names.stream()).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3, "the stream is R3");
    assert_eq!(info.state.messages, 1, "the PUT is stored");
    println!(
        "receiver ready over the second-named node in {:?} (NATS_URL {urls})",
        started.elapsed()
    );
    let status = terminate(&mut receiver, Duration::from_secs(10));
    assert!(
        status.success(),
        "the receiver stops cleanly on SIGTERM: {status}"
    );
}
