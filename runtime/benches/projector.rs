//! Projector throughput beside two limits measured in the same run, and the time to rebuild a
//! 1M-event generation. Not a timed test: run it and read the figures. The limits:
//! - raw upsert: the same rows, prepared in memory, upserted with batched UNNEST;
//! - raw pipeline: the same events fetched by a plain pull consumer per partition, only the
//!   row values decoded, upserted with UNNEST and a checkpoint per batch in one transaction.
//!
//! ```sh
//! PATH=$PWD/.tools/bin:$PATH cargo bench -p runtime --bench projector
//! ```
//!
//! It starts its own nats-server and Postgres (testbed), appends events the way the receiver
//! does, and runs the real `dreampipe projector` binary as a child process (so its RSS is the
//! projector's alone), timing from start until every partition's checkpoint reached the head.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

mod figures;

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use runtime::store::envelope::diff;
use runtime::store::jetstream::{ensure_stream, message_id};
use runtime::store::{Event, EventType, Key, StreamNames};
use serde_json::{Value, json};
use sqlx::PgPool;
use testbed::{NatsServer, TestDatabase};

use figures::{Aim, figure};

const PARTITIONS: u32 = 8;
/// The throughput runs: one event for each of as many keys, so every run reads and writes
/// the same (a build from the start reads only each key's latest event, ADR 82).
const EVENTS: usize = 200_000;
/// The rebuild: updates of those keys up to this many events in all.
const REBUILD_EVENTS: usize = 1_000_000;
const BATCH: usize = 1000;

const ENTITY: &str = "apiVersion: dreampipe.io/v1alpha1\nkind: Entity\nmetadata: {name: customer}\nspec:\n  key: /id\n  partitions: 8\n  schema: {type: object, required: [id], properties: {id: {type: string}}}\n";

const LATEST: &str = "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {name: customers}\nspec:\n  entity: customer\n  filters:\n    - where: \"state.active\"\n    - set: {label: \"state.city + '/' + state.name\"}\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: label, type: text}, {name: spend, type: bigint}]\n";

const AGGREGATE: &str = "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {name: by-city}\nspec:\n  entity: customer\n  filters:\n    - where: \"state.active\"\n  sink:\n    postgres:\n      view: customers_by_city\n      mode: aggregate\n      columns: [{name: city, type: text}, {name: spend, type: bigint}]\n      groupBy: [city]\n      aggregates: [{name: customers, function: count}, {name: spend, function: sum, of: spend}]\n";

fn state(rng: &mut fastrand::Rng, id: &str) -> Value {
    const CITIES: [&str; 40] = [
        "Lyon", "Oslo", "Porto", "Quito", "Turin", "Accra", "Bergen", "Cork", "Delft", "Essen",
        "Fes", "Graz", "Hue", "Ibiza", "Jena", "Kiev", "Leeds", "Malmo", "Nice", "Ohrid", "Pisa",
        "Riga", "Sfax", "Tartu", "Ulm", "Vaasa", "Wels", "Xanten", "York", "Zug", "Aarhus",
        "Basel", "Cadiz", "Dakar", "Evora", "Faro", "Gent", "Hanoi", "Izmir", "Jaffna",
    ];
    json!({
        "id": id,
        "name": format!("customer {id}"),
        "city": CITIES[rng.usize(..CITIES.len())],
        "active": rng.u8(..10) < 8,
        "spend": rng.i64(0..10_000),
        "notes": "lorem ipsum dolor sit amet, consectetur adipiscing elit",
    })
}

/// Which keys the events of [`Producer::publish`] are for.
#[derive(Clone, Copy)]
enum Keys {
    /// A new key for each event.
    New,
    /// Keys drawn at random among those published so far.
    Existing,
}

/// Appends events like the receiver; returns the last sequence of each partition.
struct Producer {
    names: StreamNames,
    js: async_nats::jetstream::Context,
    versions: HashMap<String, (u64, Value)>,
    last: BTreeMap<u32, u64>,
    rng: fastrand::Rng,
}

impl Producer {
    async fn publish(&mut self, events: usize, keys: Keys) -> anyhow::Result<()> {
        let mut pending = Vec::with_capacity(4096);
        for _ in 0..events {
            let key = match keys {
                Keys::New => format!("c{}", self.versions.len()),
                Keys::Existing => format!("c{}", self.rng.usize(..self.versions.len())),
            };
            let next = state(&mut self.rng, &key);
            let (version, previous) = match self.versions.get(&key) {
                Some((v, s)) => (*v, Some(s.clone())),
                None => (0, None),
            };
            let event = Event {
                id: uuid::Uuid::now_v7(),
                entity: "customer".into(),
                key: key.clone(),
                version: version + 1,
                type_: if previous.is_some() {
                    EventType::Updated
                } else {
                    EventType::Created
                },
                changes: diff(previous.as_ref(), Some(&next)),
                state: Some(next.clone()),
                source: None,
                occurred_at: None,
                recorded_at: "2026-01-01T00:00:00Z".into(),
                correlation_id: None,
                erasure: None,
            };
            self.versions.insert(key.clone(), (version + 1, next));
            let key = Key::new(key)?;
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, message_id(&event).as_str());
            let ack = self
                .js
                .publish_with_headers(
                    self.names.subject(&key),
                    headers,
                    serde_json::to_vec(&event)?.into(),
                )
                .await?;
            pending.push((key.partition(PARTITIONS), ack));
            if pending.len() == 4096 {
                self.settle(&mut pending).await?;
            }
        }
        self.settle(&mut pending).await
    }

    async fn settle(
        &mut self,
        pending: &mut Vec<(u32, async_nats::jetstream::context::PublishAckFuture)>,
    ) -> anyhow::Result<()> {
        let (partitions, acks): (Vec<u32>, Vec<_>) = pending.drain(..).unzip();
        let acks =
            futures::future::try_join_all(acks.into_iter().map(IntoFuture::into_future)).await?;
        for (partition, ack) in partitions.into_iter().zip(acks) {
            let last = self.last.entry(partition).or_default();
            *last = (*last).max(ack.sequence);
        }
        Ok(())
    }
}

/// One row of the raw baseline: key, version, sequence, and the four column texts.
type RawRow = (String, i64, i64, [Option<String>; 4]);

/// A `dreampipe projector` child process.
struct ProjectorProcess {
    child: Child,
}

impl ProjectorProcess {
    fn start(config: &Path, nats: &str, database: &str) -> anyhow::Result<Self> {
        let port = testbed::child::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_dreampipe"))
            .arg("projector")
            .env("DREAMPIPE_CONFIG", config)
            .env("NATS_URL", nats)
            .env("DATABASE_URL", database)
            .env("DREAMPIPE_LISTEN", format!("127.0.0.1:{port}"))
            .env("DREAMPIPE_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("start dreampipe projector")?;
        Ok(ProjectorProcess { child })
    }

    /// Peak resident set size in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// CPU seconds used so far (user + system), assuming 100 clock ticks per second.
    fn cpu_seconds(&self) -> f64 {
        stat_cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    fn stop(mut self) {
        testbed::child::terminate(&mut self.child, Duration::from_secs(20));
    }
}

/// The machine's busy and idle CPU time so far (jiffies, all cores), from `/proc/stat`.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal: idle and iowait are the idle time.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let busy: u64 = fields.iter().take(8).sum::<u64>() - idle;
    (busy, idle)
}

/// CPU seconds the calling thread used so far (user + system, 100 clock ticks per second).
fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

/// CPU seconds (user + system) from a `/proc/.../stat` file, 100 clock ticks per second.
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command; the state letter is the first, utime and stime the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The projector's CPU per event before any I/O (decoding, the filters, the row's values) for
/// the latest projection, on one thread, best of five passes: unlike the end-to-end figures it
/// does not depend on what else runs on the machine.
async fn projection_cpu(stream: &async_nats::jetstream::stream::Stream) -> anyhow::Result<f64> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures::StreamExt;
    use runtime::expr::Evaluator;
    use runtime::projector::Plan;
    use runtime::projector::rows::effect;
    let info = stream.get_info().await?;
    let consumer = stream.create_consumer(OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let mut payloads = Vec::new();
    while (payloads.len() as u64) < info.state.messages {
        let message = messages.next().await.context("stream ended")??;
        payloads.push(message.payload.clone());
    }
    let projection: crds::Projection = serde_yaml::from_str(LATEST)?;
    let plan = Plan::new(&projection, PARTITIONS)?;
    let view = plan.postgres().context("a Postgres sink")?;
    let evaluator = Evaluator::default();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = thread_cpu_seconds();
        for payload in &payloads {
            let event = Event::from_slice_without_changes(payload)?;
            std::hint::black_box(effect(&plan, view, &evaluator, &event)?);
        }
        best = best.min(thread_cpu_seconds() - started);
    }
    Ok(best / payloads.len() as f64)
}

/// Waits until every partition's checkpoint of the only generation reached `last`.
async fn caught_up(
    pool: &PgPool,
    projection: &str,
    last: &BTreeMap<u32, u64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("select partition, sequence from dp_checkpoints where projection = $1")
                .bind(projection)
                .fetch_all(pool)
                .await
                .unwrap_or_default();
        let at: HashMap<u32, u64> = rows
            .into_iter()
            .map(|(p, s)| (p as u32, s as u64))
            .collect();
        if !at.is_empty() && last.iter().all(|(p, s)| at.get(p).is_some_and(|a| a >= s)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("projection {projection} did not catch up: {at:?} of {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `projection_yaml` over the stream into a fresh database; returns (seconds, peak RSS).
async fn project(
    nats: &NatsServer,
    projection_yaml: &str,
    projection: &str,
    last: &BTreeMap<u32, u64>,
) -> anyhow::Result<(f64, f64, TestDatabase)> {
    let database = TestDatabase::create().await?;
    let pool = database.pool_in_schema("dp_default").await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("{ENTITY}---\n{projection_yaml}"),
    )?;
    let started = Instant::now();
    let (busy_before, idle_before) = machine_cpu();
    let process = ProjectorProcess::start(dir.path(), nats.url(), &database.url())?;
    caught_up(&pool, projection, last).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (busy_after, idle_after) = machine_cpu();
    let rss = process.peak_rss_mib();
    // Whether the run was short of CPU (NATS, Postgres and the projector share the machine)
    // or waiting on round trips: the idle share of all cores while it ran.
    let idle = (idle_after - idle_before) as f64
        / ((busy_after - busy_before) + (idle_after - idle_before)).max(1) as f64;
    println!(
        "  ({projection}: the projector process used {:.1} CPU seconds in {seconds:.1}s; the machine's {} cores were {:.0}% idle)",
        process.cpu_seconds(),
        std::thread::available_parallelism().map_or(0, usize::from),
        idle * 100.0
    );
    process.stop();
    Ok((seconds, rss, database))
}

/// The raw baseline: the same rows the latest projection writes, prepared in memory, upserted
/// with one batched UNNEST per transaction, one writer per partition (as the projector runs).
async fn raw_upserts(
    stream: &async_nats::jetstream::stream::Stream,
    names: &StreamNames,
) -> anyhow::Result<(f64, usize)> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures::StreamExt;
    let mut partitions: Vec<Vec<RawRow>> = vec![Vec::new(); PARTITIONS as usize];
    let info = stream.get_info().await?;
    let consumer = stream.create_consumer(OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let mut read = 0;
    while read < info.state.messages {
        let message = messages.next().await.context("stream ended")??;
        read += 1;
        let sequence = message
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let event: Event = serde_json::from_slice(&message.payload)?;
        let state = event.state.unwrap_or_default();
        if state["active"] != json!(true) {
            continue;
        }
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_i64().map(|i| i.to_string()))
        };
        let (partition, _) = names.parse_subject(&message.subject).context("subject")?;
        partitions[partition as usize].push((
            event.key,
            event.version as i64,
            sequence as i64,
            [
                text(&state["name"]),
                text(&state["city"]),
                Some(format!(
                    "{}/{}",
                    state["city"].as_str().unwrap_or(""),
                    state["name"].as_str().unwrap_or("")
                )),
                text(&state["spend"]),
            ],
        ));
    }
    let rows: usize = partitions.iter().map(Vec::len).sum();
    let database = TestDatabase::create().await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(PARTITIONS)
        .connect_with(database.options().clone())
        .await?;
    sqlx::query("create table raw (dp_key text primary key, dp_version bigint not null, dp_sequence bigint not null, name text, city text, label text, spend bigint)")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    let writers = partitions.into_iter().map(|rows| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for batch in rows.chunks(BATCH) {
                // One statement cannot update a row twice: the last version of a key wins.
                let mut last: HashMap<&str, usize> = HashMap::new();
                for (i, row) in batch.iter().enumerate() {
                    last.insert(row.0.as_str(), i);
                }
                let mut keep: Vec<usize> = last.into_values().collect();
                keep.sort();
                let column = |f: fn(&RawRow) -> Option<String>| -> Vec<Option<String>> {
                    keep.iter().map(|&i| f(&batch[i])).collect()
                };
                let keys: Vec<String> = keep.iter().map(|&i| batch[i].0.clone()).collect();
                let versions: Vec<i64> = keep.iter().map(|&i| batch[i].1).collect();
                let sequences: Vec<i64> = keep.iter().map(|&i| batch[i].2).collect();
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "insert into raw (dp_key, dp_version, dp_sequence, name, city, label, spend)
                     select k, v, s, n, c, l, sp::bigint from unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) as u(k, v, s, n, c, l, sp)
                     on conflict (dp_key) do update set dp_version = excluded.dp_version, dp_sequence = excluded.dp_sequence,
                       name = excluded.name, city = excluded.city, label = excluded.label, spend = excluded.spend",
                )
                .bind(&keys)
                .bind(&versions)
                .bind(&sequences)
                .bind(column(|r| r.3[0].clone()))
                .bind(column(|r| r.3[1].clone()))
                .bind(column(|r| r.3[2].clone()))
                .bind(column(|r| r.3[3].clone()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer??;
    }
    Ok((started.elapsed().as_secs_f64(), rows))
}

/// The fields of an event the raw pipeline reads; serde skips the rest of the envelope.
#[derive(serde::Deserialize)]
struct RowValues {
    key: String,
    version: i64,
    state: Option<StateValues>,
}

#[derive(serde::Deserialize)]
struct StateValues {
    name: Option<String>,
    city: Option<String>,
    active: Option<bool>,
    spend: Option<i64>,
}

/// The raw pipeline, the architecture's limit for the latest projection: per partition, a
/// plain pull consumer fetching batches of `BATCH` from the start, only the row values
/// decoded, no CEL, one UNNEST upsert and one checkpoint upsert per batch in one transaction
/// (the projector's exactly-once unit), the partitions concurrently. Returns seconds.
async fn raw_pipeline(
    js: &async_nats::jetstream::Context,
    names: &StreamNames,
    last: &BTreeMap<u32, u64>,
) -> anyhow::Result<f64> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt;
    let database = TestDatabase::create().await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(PARTITIONS)
        .connect_with(database.options().clone())
        .await?;
    for statement in [
        "create table raw (dp_key text primary key, dp_version bigint not null, dp_sequence bigint not null, name text, city text, label text, spend bigint)",
        "create table raw_checkpoints (partition int primary key, sequence bigint not null)",
    ] {
        sqlx::query(statement).execute(&pool).await?;
    }
    let stream = js.get_stream(names.stream()).await?;
    let started = Instant::now();
    let partitions = last.iter().map(|(&partition, &head)| {
        let (pool, stream, names) = (pool.clone(), stream.clone(), names.clone());
        tokio::spawn(async move {
            let consumer = stream
                .create_consumer(pull::Config {
                    filter_subject: names.partition_subjects(partition),
                    ack_policy: AckPolicy::None,
                    ..Default::default()
                })
                .await?;
            let mut at = 0;
            while at < head {
                let mut batch = consumer.fetch().max_messages(BATCH).messages().await?;
                // The last row of a key in a batch wins (one statement cannot update a row twice).
                let mut rows: HashMap<String, (i64, i64, StateValues)> = HashMap::new();
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                    at = message
                        .info()
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .stream_sequence;
                    let values: RowValues = serde_json::from_slice(&message.payload)?;
                    match values.state {
                        Some(state) if state.active == Some(true) => {
                            rows.insert(values.key, (values.version, at as i64, state));
                        }
                        _ => {}
                    }
                }
                let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (key, (version, sequence, state)) in rows {
                    columns.5.push(Some(format!(
                        "{}/{}",
                        state.city.as_deref().unwrap_or(""),
                        state.name.as_deref().unwrap_or("")
                    )));
                    columns.0.push(key);
                    columns.1.push(version);
                    columns.2.push(sequence);
                    columns.3.push(state.name);
                    columns.4.push(state.city);
                    columns.6.push(state.spend);
                }
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "insert into raw (dp_key, dp_version, dp_sequence, name, city, label, spend)
                     select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                     on conflict (dp_key) do update set dp_version = excluded.dp_version, dp_sequence = excluded.dp_sequence,
                       name = excluded.name, city = excluded.city, label = excluded.label, spend = excluded.spend",
                )
                .bind(&columns.0)
                .bind(&columns.1)
                .bind(&columns.2)
                .bind(&columns.3)
                .bind(&columns.4)
                .bind(&columns.5)
                .bind(&columns.6)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "insert into raw_checkpoints values ($1, $2)
                     on conflict (partition) do update set sequence = excluded.sequence",
                )
                .bind(partition as i32)
                .bind(at as i64)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        })
    });
    for partition in futures::future::join_all(partitions).await {
        partition??;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = nats.client().await?;
    let names = StreamNames::new("default", "customer", PARTITIONS);
    ensure_stream(&client, &names, &Default::default()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let mut producer = Producer {
        names: names.clone(),
        js: js.clone(),
        versions: HashMap::new(),
        last: BTreeMap::new(),
        rng: fastrand::Rng::with_seed(1),
    };
    let loading = Instant::now();
    producer.publish(EVENTS, Keys::New).await?;
    println!(
        "loaded {EVENTS} events, one for each of as many keys, in {:.1}s",
        loading.elapsed().as_secs_f64()
    );

    let stream = js.get_stream(names.stream()).await?;
    println!(
        "projection CPU (decode, filters, row values; one thread, best of 5): {:.2} µs per event",
        projection_cpu(&stream).await? * 1e6
    );
    let (raw_seconds, raw_rows) = raw_upserts(&stream, &names).await?;
    let raw_rate = EVENTS as f64 / raw_seconds;
    println!(
        "raw batched UNNEST upsert: {raw_rows} rows of {EVENTS} events in {raw_seconds:.2}s = {raw_rate:.0} events/s"
    );

    let pipeline_seconds = raw_pipeline(&js, &names, &producer.last).await?;
    let pipeline_rate = EVENTS as f64 / pipeline_seconds;
    println!(
        "raw pipeline (pull consumer per partition, row values only, UNNEST upsert + checkpoint per batch): {EVENTS} events in {pipeline_seconds:.2}s = {pipeline_rate:.0} events/s"
    );

    let (latest_seconds, latest_rss, _db) =
        project(&nats, LATEST, "default/customers", &producer.last).await?;
    let latest_rate = EVENTS as f64 / latest_seconds;
    println!(
        "latest mode: {EVENTS} events in {latest_seconds:.2}s = {latest_rate:.0} events/s, {:.2} of raw upsert, {:.2} of the raw pipeline, peak RSS {latest_rss:.0} MiB",
        latest_rate / raw_rate,
        latest_rate / pipeline_rate
    );
    figure("projector latest, events/s", latest_rate, 0, "", None);
    figure(
        "projector latest / raw upsert",
        latest_rate / raw_rate,
        2,
        "",
        Some(Aim::AtLeast(0.5)),
    );
    figure(
        "projector latest / raw pipeline",
        latest_rate / pipeline_rate,
        2,
        "",
        Some(Aim::AtLeast(0.8)),
    );
    let (aggregate_seconds, aggregate_rss, _db) =
        project(&nats, AGGREGATE, "default/by-city", &producer.last).await?;
    let aggregate_rate = EVENTS as f64 / aggregate_seconds;
    println!(
        "aggregate mode: {EVENTS} events in {aggregate_seconds:.2}s = {aggregate_rate:.0} events/s, {:.2} of raw, peak RSS {aggregate_rss:.0} MiB",
        aggregate_rate / raw_rate
    );
    figure(
        "projector aggregate / raw upsert",
        aggregate_rate / raw_rate,
        2,
        "",
        Some(Aim::AtLeast(0.4)),
    );

    if std::env::args().any(|a| a == "--skip-rebuild") {
        return Ok(());
    }
    let loading = Instant::now();
    producer
        .publish(REBUILD_EVENTS - EVENTS, Keys::Existing)
        .await?;
    println!(
        "loaded up to {REBUILD_EVENTS} events (updates of the same {EVENTS} keys) in {:.1}s more",
        loading.elapsed().as_secs_f64()
    );
    let (rebuild_seconds, rebuild_rss, _db) =
        project(&nats, LATEST, "default/customers", &producer.last).await?;
    println!(
        "rebuild of a {REBUILD_EVENTS}-event generation (latest mode, reading each of the {EVENTS} keys' latest event): {rebuild_seconds:.1}s = {:.0} events/s of the stream, peak RSS {rebuild_rss:.0} MiB",
        REBUILD_EVENTS as f64 / rebuild_seconds
    );
    figure(
        "rebuild of 1M events (latest)",
        rebuild_seconds,
        1,
        " s",
        Some(Aim::AtMost(8.0)),
    );
    Ok(())
}
