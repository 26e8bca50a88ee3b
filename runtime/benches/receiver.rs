//! Receiver throughput beside the raw limit of the same machine, measured in the same run.
//!
//! `cargo bench -p runtime --bench receiver` starts its own nats-server, a release
//! `dreampipe receiver` process, and drives the batch endpoint with N submissions (default
//! 100 000; `DREAMPIPE_BENCH_N` overrides) in three mixes: all new keys, all changed, all
//! unchanged. Beside each it prints two limits measured in the same run, and the ratios:
//! - raw publish: acknowledged, pipelined JetStream publishes of the same events;
//! - protocol: raw code doing exactly the receiver's NATS work and nothing else: batched
//!   latest reads (multi-subject direct gets of 256 subjects), then, unless unchanged, appends
//!   with the expected subject sequence, pipelined, for the same batches with the same
//!   requests in flight; no JSON decoding, diffing or validation (events are prepared before).
//!
//! Then the receiver's peak RSS.
//!
//! `DREAMPIPE_BENCH_REPLICAS=3` runs the same on a 3-node JetStream cluster with R3 streams,
//! the receiver's and the raw ones alike (ADR 47: batches stay batched on R3).

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod figures;

use figures::{Aim, figure};

use std::future::IntoFuture;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use runtime::store::{Event, EventType, Key, StreamNames};
use serde_json::{Value, json};
use testbed::child::{free_port, terminate, wait_for_port, wait_until_ready};
use testbed::{NatsCluster, NatsServer};

const BATCH: usize = 1000;
const REQUESTS_IN_FLIGHT: usize = 4;
const ENTITY: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: bench}
spec:
  key: /id
  partitions: 8
  stream: {replicas: REPLICAS}
  ignore: [/syncedAt]
  receiver: {limits: {maxBodyBytes: 8388608, maxBatchItems: 5000}}
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string}
      email: {type: string}
      city: {type: string}
      revenue: {type: number}
      round: {type: integer}
      syncedAt: {type: string}
"#;

fn state(i: usize, round: u32) -> Value {
    let city = ["Lyon", "Oslo", "Porto", "Turku", "Gent"][i % 5];
    json!({
        "id": format!("customer-{i:07}"),
        "name": format!("Customer {i}"),
        "email": format!("customer{i}@example.com"),
        "city": city,
        "revenue": (i % 1000) as f64 * 12.5,
        "round": round,
        "syncedAt": "2026-11-23T10:00:00Z",
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("DREAMPIPE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let replicas: usize = std::env::var("DREAMPIPE_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let nats = if replicas > 1 {
        Servers::Cluster(NatsCluster::start(replicas).await?)
    } else {
        Servers::Single(NatsServer::start().await?)
    };
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("entity.yaml");
    std::fs::write(&config, ENTITY.replace("REPLICAS", &replicas.to_string()))?;
    let port = free_port();
    let mut receiver = Command::new(env!("CARGO_BIN_EXE_dreampipe"))
        .arg("receiver")
        .arg("--config")
        .arg(&config)
        .args([
            "--nats-url",
            &nats.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    wait_for_port(&mut receiver, port, Duration::from_secs(30));
    wait_until_ready(port, Duration::from_secs(30));

    println!(
        "receiver benchmark: {n} submissions per mix, batches of {BATCH}, {REQUESTS_IN_FLIGHT} requests in flight, R{replicas} streams"
    );
    println!(
        "{:<10} {:>12} {:>14} {:>7} {:>12} {:>7} {:>22}",
        "mix", "events/s", "raw publish/s", "ratio", "protocol/s", "ratio", "receiver CPU µs/item"
    );
    let mixes = [
        ("new", 0, "created"),
        ("changed", 1, "updated"),
        ("unchanged", 1, "unchanged"),
    ];
    for (mix, round, expected) in mixes {
        let payloads: Vec<Value> = (0..n).map(|i| state(i, round)).collect();
        let raw = raw_publish_rate(&nats, replicas, &payloads, mix).await?;
        let protocol = protocol_rate(&nats, replicas, &payloads, mix).await?;
        let cpu_before = cpu_seconds(receiver.id()).context("read receiver CPU time")?;
        let rate = drive(port, &payloads, expected).await?;
        let cpu = cpu_seconds(receiver.id()).context("read receiver CPU time")? - cpu_before;
        let per_item = cpu * 1e6 / n as f64;
        println!(
            "{mix:<10} {rate:>12.0} {raw:>14.0} {:>7.2} {protocol:>12.0} {:>7.2} {per_item:>22.1}",
            rate / raw,
            rate / protocol
        );
        let r = format!("R{replicas}");
        let (of_raw, of_protocol) = match (mix, replicas) {
            ("changed", 1) => (Some(Aim::AtLeast(0.4)), Some(Aim::AtLeast(0.8))),
            ("unchanged", 1) => (Some(Aim::AtLeast(0.8)), None),
            _ => (None, None),
        };
        figure(
            &format!("receiver {mix} ({r}), events/s"),
            rate,
            0,
            "",
            None,
        );
        figure(
            &format!("receiver {mix} ({r}) / raw publish"),
            rate / raw,
            2,
            "",
            of_raw,
        );
        figure(
            &format!("receiver {mix} ({r}) / protocol limit"),
            rate / protocol,
            2,
            "",
            of_protocol,
        );
    }
    let rss = peak_rss_kib(receiver.id()).context("read receiver RSS")?;
    println!("receiver peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    ensure!(
        terminate(&mut receiver, Duration::from_secs(10)).success(),
        "receiver did not stop cleanly"
    );
    Ok(())
}

/// Sends every payload through the batch endpoint; returns submissions per second.
async fn drive(port: u16, payloads: &[Value], expected: &str) -> anyhow::Result<f64> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}/v1/entities/customer/batch").parse()?;
    let bodies: Vec<Bytes> = payloads
        .chunks(BATCH)
        .map(|chunk| {
            let lines: Vec<String> = chunk
                .iter()
                .map(|state| json!({"state": state}).to_string())
                .collect();
            Bytes::from(lines.join("\n"))
        })
        .collect();
    let started = Instant::now();
    let mut answers = futures::stream::iter(bodies)
        .map(|body| {
            let request = hyper::Request::post(uri.clone())
                .header("content-type", "application/x-ndjson")
                .body(Full::new(body))
                .expect("a valid request");
            let client = client.clone();
            async move {
                let response = client.request(request).await?;
                let bytes = response.into_body().collect().await?.to_bytes();
                anyhow::Ok(serde_json::from_slice::<Value>(&bytes)?)
            }
        })
        .buffer_unordered(REQUESTS_IN_FLIGHT);
    let mut done = 0;
    while let Some(answer) = answers.next().await {
        let answer = answer?;
        let results = answer["results"]
            .as_array()
            .context("batch answer has results")?;
        for result in results {
            ensure!(
                result["result"] == expected,
                "expected {expected}, got {result}"
            );
        }
        done += results.len();
    }
    ensure!(done == payloads.len());
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Acknowledged JetStream publishes of the same events (envelope included), pipelined, into a
/// stream of the same shape: the most the receiver could append on this machine.
async fn raw_publish_rate(
    nats: &Servers,
    replicas: usize,
    payloads: &[Value],
    mix: &str,
) -> anyhow::Result<f64> {
    let js = nats.jetstream().await?;
    let names = StreamNames::new("raw", mix, 8);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: names.stream(),
        subjects: vec![names.stream_subjects()],
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    })
    .await?;
    let messages = prepared_events(&names, payloads);
    let started = Instant::now();
    for window in messages.chunks(BATCH) {
        let mut acks = Vec::with_capacity(window.len());
        for (subject, payload) in window {
            acks.push(
                js.publish(subject.clone(), payload.clone())
                    .await?
                    .into_future(),
            );
        }
        futures::future::try_join_all(acks).await?;
    }
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

/// The events of `payloads` as subjects and serialised envelopes, prepared before any timing.
fn prepared_events(names: &StreamNames, payloads: &[Value]) -> Vec<(String, Bytes)> {
    payloads
        .iter()
        .map(|state| {
            let key =
                Key::new(state["id"].as_str().unwrap_or_default()).expect("bench keys are valid");
            let event = Event {
                id: uuid::Uuid::now_v7(),
                entity: "customer".into(),
                key: key.to_string(),
                version: 1,
                type_: EventType::Created,
                state: Some(state.clone()),
                changes: runtime::store::envelope::diff(None, Some(state)),
                source: None,
                occurred_at: None,
                recorded_at: "2026-11-23T10:00:00Z".into(),
                correlation_id: None,
                erasure: None,
            };
            (
                names.subject(&key),
                Bytes::from(serde_json::to_vec(&event).expect("events serialise")),
            )
        })
        .collect()
}

/// Subjects in one multi-subject direct get, as the receiver's store asks them.
const MULTI_GET_CHUNK: usize = 256;

/// The receiver's NATS work alone (see the module's docs): for each batch, the latest event of
/// every key in one round trip per 256 subjects, the chunks concurrently (and, on R3, the
/// leader's last sequence that proves the read fresh), then the appends with the expected
/// subject sequence, pipelined. For `changed` and `unchanged` the stream first holds one
/// event per key, as the receiver's does by then.
async fn protocol_rate(
    nats: &Servers,
    replicas: usize,
    payloads: &[Value],
    mix: &str,
) -> anyhow::Result<f64> {
    let js = nats.jetstream().await?;
    let names = StreamNames::new("protocol", mix, 8);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: names.stream(),
            subjects: vec![names.stream_subjects()],
            allow_direct: true,
            num_replicas: replicas,
            ..Default::default()
        })
        .await?;
    let messages = prepared_events(&names, payloads);
    if mix != "new" {
        for window in messages.chunks(BATCH) {
            let mut acks = Vec::with_capacity(window.len());
            for (subject, payload) in window {
                acks.push(
                    js.publish(subject.clone(), payload.clone())
                        .await?
                        .into_future(),
                );
            }
            futures::future::try_join_all(acks).await?;
        }
    }
    let appends = mix != "unchanged";
    let started = Instant::now();
    let batches = futures::stream::iter(messages.chunks(BATCH))
        .map(|window| {
            let (js, stream, names) = (js.clone(), stream.clone(), &names);
            async move {
                let reads = window.chunks(MULTI_GET_CHUNK).map(|chunk| {
                    let subjects: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
                    latest_sequences(&js, names, subjects)
                });
                let latest: std::collections::HashMap<String, u64> =
                    futures::future::try_join_all(reads)
                        .await?
                        .into_iter()
                        .flatten()
                        .collect();
                if replicas > 1 {
                    stream.clone().info().await?;
                }
                if appends {
                    let mut acks = Vec::with_capacity(window.len());
                    for (subject, payload) in window {
                        let mut headers = async_nats::HeaderMap::new();
                        let expected = latest.get(subject).copied().unwrap_or(0);
                        headers.insert(
                            "Nats-Expected-Last-Subject-Sequence",
                            expected.to_string().as_str(),
                        );
                        acks.push(
                            js.publish_with_headers(subject.clone(), headers, payload.clone())
                                .await?
                                .into_future(),
                        );
                    }
                    futures::future::try_join_all(acks).await?;
                }
                anyhow::Ok(window.len())
            }
        })
        .buffer_unordered(REQUESTS_IN_FLIGHT);
    let done: Vec<usize> = batches.try_collect().await?;
    ensure!(done.iter().sum::<usize>() == payloads.len());
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

/// One multi-subject direct get: each found subject's last sequence (payloads left undecoded).
async fn latest_sequences(
    js: &async_nats::jetstream::Context,
    names: &StreamNames,
    subjects: Vec<&str>,
) -> anyhow::Result<Vec<(String, u64)>> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    let request = json!({ "multi_last": subjects }).to_string();
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", names.stream()),
            inbox,
            request.into(),
        )
        .await?;
    let mut found = Vec::with_capacity(subjects.len());
    while let Some(reply) = replies.next().await {
        match reply.status.map(|s| s.as_u16()) {
            Some(204) | Some(404) => return Ok(found),
            Some(other) => anyhow::bail!("direct get answered {other}"),
            None => {}
        }
        let headers = reply
            .headers
            .as_ref()
            .context("a direct get reply has headers")?;
        let subject = headers
            .get("Nats-Subject")
            .context("Nats-Subject")?
            .as_str();
        let sequence = headers
            .get("Nats-Sequence")
            .context("Nats-Sequence")?
            .as_str();
        found.push((subject.to_owned(), sequence.parse()?));
    }
    anyhow::bail!("the direct get's replies ended before its end of batch")
}

/// One nats-server, or a cluster.
enum Servers {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Servers {
    fn url(&self) -> String {
        match self {
            Servers::Single(server) => server.url().to_owned(),
            // One node; the receiver's client learns the others from it.
            Servers::Cluster(cluster) => cluster
                .urls()
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(match self {
            Servers::Single(server) => server.jetstream().await?,
            Servers::Cluster(cluster) => cluster.jetstream().await?,
        })
    }
}

/// CPU time (user and system) a process has used, from /proc, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size of a process, from /proc (KiB).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
