//! End-to-end latency: the time from the receiver's 2xx for a submission to its row being
//! visible in a latest-mode view, read by a separate Postgres connection, at a steady rate.
//!
//! ```sh
//! PATH=$PWD/.tools/bin:$PATH cargo bench -p runtime --bench latency
//! ```
//!
//! It starts its own nats-server and Postgres (testbed), a `dreampipe receiver` and a
//! `dreampipe projector` process, and offers submissions at a fixed rate (open loop: a slow
//! answer does not slow the offer), in batches every 10 ms through the batch endpoint. Each
//! submission updates one of `KEYS` keys with a rising `seq`; a reader polls the view every
//! `POLL` and takes a submission as visible once its key's row shows its `seq` or a later one.
//! The first second of each run warms up and is not counted. Rates: `DREAMPIPE_BENCH_RATES`
//! (default `5000,20000`), each for `DREAMPIPE_BENCH_SECONDS` (default 10).
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

mod figures;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use testbed::child::{free_port, terminate, wait_for_port, wait_until_ready};
use testbed::{NatsServer, TestDatabase};

use figures::{Aim, figure};

/// Keys the submissions cycle over: the view the reader scans holds this many rows.
const KEYS: usize = 2000;
/// How often a batch of submissions is offered.
const TICK: Duration = Duration::from_millis(10);
/// How often the reader reads the view: the resolution of every figure.
const POLL: Duration = Duration::from_millis(2);

const ENTITY: &str = "apiVersion: dreampipe.io/v1alpha1\nkind: Entity\nmetadata: {name: customer}\nspec:\n  key: /id\n  partitions: 8\n  receiver: {limits: {maxBodyBytes: 8388608, maxBatchItems: 5000}}\n  schema:\n    type: object\n    required: [id, name, seq]\n    properties:\n      id: {type: string}\n      name: {type: string}\n      seq: {type: integer}\n";

const PROJECTION: &str = "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {name: customers}\nspec:\n  entity: customer\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: seq, type: bigint}]\n";

fn key_of(seq: usize) -> String {
    format!("c{:05}", seq % KEYS)
}

/// When each submission was acknowledged and first seen in the view.
struct Timeline {
    acked: Vec<Option<Instant>>,
    visible: Vec<Option<Instant>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rates: Vec<usize> = std::env::var("DREAMPIPE_BENCH_RATES")
        .unwrap_or_else(|_| "5000,20000".to_owned())
        .split(',')
        .map(|r| r.trim().parse().context("DREAMPIPE_BENCH_RATES: numbers"))
        .collect::<anyhow::Result<_>>()?;
    let seconds: u64 = std::env::var("DREAMPIPE_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!(
        "end-to-end latency: receiver 2xx -> row visible in a latest view, {KEYS} keys, batches every {} ms, view polled every {} ms",
        TICK.as_millis(),
        POLL.as_millis()
    );
    println!(
        "{:>12} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "offered/s", "acked/s", "p50 ms", "p99 ms", "max ms", "counted"
    );
    for rate in rates {
        let figures = run(rate, seconds).await?;
        println!(
            "{rate:>12} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            figures.acked_per_second,
            figures.p50_ms,
            figures.p99_ms,
            figures.max_ms,
            figures.counted
        );
        let p99_aim = (rate == 5000).then_some(Aim::AtMost(50.0));
        figure(
            &format!("latency at {rate}/s, p50"),
            figures.p50_ms,
            1,
            " ms",
            None,
        );
        figure(
            &format!("latency at {rate}/s, p99"),
            figures.p99_ms,
            1,
            " ms",
            p99_aim,
        );
        figure(
            &format!("latency at {rate}/s, max"),
            figures.max_ms,
            1,
            " ms",
            None,
        );
    }
    Ok(())
}

struct Figures {
    acked_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    counted: usize,
}

/// One rate on fresh servers and processes.
async fn run(rate: usize, seconds: u64) -> anyhow::Result<Figures> {
    let nats = NatsServer::start().await?;
    let database = TestDatabase::create().await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("entity.yaml"), ENTITY)?;
    std::fs::write(dir.path().join("projection.yaml"), PROJECTION)?;
    let (mut receiver, port) = start_role("receiver", dir.path(), nats.url(), None)?;
    wait_for_port(&mut receiver, port, Duration::from_secs(30));
    wait_until_ready(port, Duration::from_secs(30));
    let (mut projector, projector_port) =
        start_role("projector", dir.path(), nats.url(), Some(&database.url()))?;
    wait_for_port(&mut projector, projector_port, Duration::from_secs(30));
    wait_until_ready(projector_port, Duration::from_secs(60));

    let per_tick = (rate * TICK.as_millis() as usize / 1000).max(1);
    let ticks = seconds as usize * 1000 / TICK.as_millis() as usize;
    let total = per_tick * ticks;
    let timeline = Arc::new(Mutex::new(Timeline {
        acked: vec![None; total],
        visible: vec![None; total],
    }));
    let done = tokio_util::sync::CancellationToken::new();
    let reader = tokio::spawn(read_view(
        database.pool_in_schema("dp_default").await?,
        timeline.clone(),
        total,
        done.clone(),
    ));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}/v1/entities/customer/batch").parse()?;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(ticks);
    for tick in 0..ticks {
        interval.tick().await;
        let first = tick * per_tick;
        let body: String = (first..first + per_tick)
            .map(|seq| {
                json!({"state": {"id": key_of(seq), "name": format!("customer {}", seq % KEYS), "seq": seq}})
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        let request = hyper::Request::post(uri.clone())
            .header("content-type", "application/x-ndjson")
            .body(Full::new(Bytes::from(body)))?;
        let (client, timeline) = (client.clone(), timeline.clone());
        requests.push(tokio::spawn(async move {
            let response = client.request(request).await?;
            let status = response.status();
            let at = Instant::now();
            let bytes = response.into_body().collect().await?.to_bytes();
            ensure!(status.is_success(), "batch answered {status}");
            let answer: Value = serde_json::from_slice(&bytes)?;
            let results = answer["results"].as_array().context("results")?;
            ensure!(results.len() == per_tick, "a result per submission");
            let mut timeline = timeline.lock().expect("timeline lock");
            for seq in first..first + per_tick {
                timeline.acked[seq] = Some(at);
            }
            anyhow::Ok(())
        }));
    }
    for request in requests {
        request.await??;
    }
    let acked_per_second = total as f64 / started.elapsed().as_secs_f64();
    let seen = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .context("the view did not show every submission within 120 s")???;
    ensure!(seen == total, "the reader saw {seen} of {total}");
    done.cancel();
    terminate(&mut receiver, Duration::from_secs(10));
    terminate(&mut projector, Duration::from_secs(10));

    let timeline = timeline.lock().expect("timeline lock");
    let warm_up = per_tick * (1000 / TICK.as_millis() as usize);
    let mut latencies: Vec<Duration> = (warm_up..total)
        .map(|seq| {
            let acked = timeline.acked[seq].expect("every submission acknowledged");
            let visible = timeline.visible[seq].expect("every submission visible");
            // A row may show before the answer reached the client: that is no delay at all.
            visible.saturating_duration_since(acked)
        })
        .collect();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Figures {
        acked_per_second,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        counted: latencies.len(),
    })
}

/// Polls the view until every one of `total` submissions was seen; returns how many were.
async fn read_view(
    pool: sqlx::PgPool,
    timeline: Arc<Mutex<Timeline>>,
    total: usize,
    done: tokio_util::sync::CancellationToken,
) -> anyhow::Result<usize> {
    // The highest seq seen per key; submissions of a key are key, key + KEYS, key + 2 KEYS, …
    let mut seen_up_to: Vec<Option<usize>> = vec![None; KEYS];
    let mut seen = 0;
    while seen < total && !done.is_cancelled() {
        let rows: Vec<(String, i64)> = sqlx::query_as("select dp_key, seq from customers")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        let now = Instant::now();
        {
            let mut timeline = timeline.lock().expect("timeline lock");
            for (key, seq) in rows {
                let Some(index) = key.strip_prefix('c').and_then(|k| k.parse::<usize>().ok())
                else {
                    continue;
                };
                let seq = seq as usize;
                let from = seen_up_to[index].map_or(index, |s| s + KEYS);
                for earlier in (from..=seq.min(total.saturating_sub(1))).step_by(KEYS) {
                    timeline.visible[earlier] = Some(now);
                    seen += 1;
                }
                seen_up_to[index] = Some(seq.max(seen_up_to[index].unwrap_or(0)));
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(seen)
}

/// Starts `dreampipe <role>` over the config folder; returns the child and its port.
fn start_role(
    role: &str,
    config: &Path,
    nats: &str,
    database: Option<&str>,
) -> anyhow::Result<(Child, u16)> {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreampipe"));
    command
        .arg(role)
        .env("DREAMPIPE_CONFIG", config)
        .env("NATS_URL", nats)
        .env("DREAMPIPE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DREAMPIPE_LOG_FORMAT", "text")
        // The receiver warns that it runs without tokens, as a benchmark's does.
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    if let Some(url) = database {
        command.env("DATABASE_URL", url);
    }
    let child = command
        .spawn()
        .with_context(|| format!("start dreampipe {role}"))?;
    Ok((child, port))
}
