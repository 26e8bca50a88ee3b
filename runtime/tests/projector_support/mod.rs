//! Shared by the projector's integration tests: real NATS and Postgres from `testbed`, a
//! producer that appends gap-free versions per key the way the receiver does, projector
//! replicas run in-process (and aborted without ceremony), and view snapshots to compare.
#![allow(dead_code)] // each test file uses a different part

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use crds::{Entity, Projection};
use runtime::projector::{Metrics, Options, Plan, Projector, WorkerOptions};
use runtime::store::envelope::diff;
use runtime::store::jetstream::{ensure_stream, message_id};
use runtime::store::{Event, EventType, Key, StreamNames};
use serde_json::Value;
use sqlx::PgPool;
use testbed::{NatsServer, TestDatabase};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "default";
/// The namespace's Postgres schema, where the projector writes (ADR 60); the tests' own pools
/// resolve unqualified names there, the projector's never do.
pub const SCHEMA: &str = "dp_default";

/// The Entity the tests project.
pub fn entity(partitions: u32) -> Entity {
    entity_in(NAMESPACE, partitions)
}

/// The Entity the tests project, in `namespace`.
pub fn entity_in(namespace: &str, partitions: u32) -> Entity {
    serde_yaml::from_str(&format!(
        "apiVersion: dreampipe.io/v1alpha1\nkind: Entity\nmetadata: {{name: customer, namespace: {namespace}}}\nspec:\n  key: /id\n  partitions: {partitions}\n  schema: {{type: object, required: [id], properties: {{id: {{type: string}}}}}}\n"
    ))
    .unwrap()
}

/// A Projection of `customer` named `name`, with `spec` (YAML, indented by 2) below `entity`.
pub fn projection(name: &str, spec: &str) -> Projection {
    projection_in(NAMESPACE, name, spec)
}

/// Like [`projection`], in `namespace`.
pub fn projection_in(namespace: &str, name: &str, spec: &str) -> Projection {
    let yaml = format!(
        "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  entity: customer\n{spec}"
    );
    let projection: Projection = serde_yaml::from_str(&yaml).unwrap();
    crds::projection::validate_projection(&projection).unwrap();
    projection
}

/// Timings that keep tests quick: short heartbeats, leases and idle detection.
pub fn fast_options() -> Options {
    Options {
        heartbeat: Duration::from_millis(200),
        lease_ttl: Duration::from_millis(1500),
        retire_after: Duration::from_secs(1),
        caught_up_lag: 0,
        reader_role: None,
        reader_members: Vec::new(),
        worker: WorkerOptions {
            batch_size: 500,
            idle: Duration::from_millis(150),
            linger: Duration::from_millis(5),
        },
    }
}

/// Appends events like the receiver: versions 1, 2, 3… per key, full state, changes, the
/// `Nats-Msg-Id` header; remembers the last sequence per partition.
#[derive(Debug)]
pub struct Producer {
    pub names: StreamNames,
    js: async_nats::jetstream::Context,
    states: HashMap<String, (u64, Option<Value>)>,
    unsettled: Vec<Event>,
    pub last_sequence: BTreeMap<u32, u64>,
    pub published: u64,
    /// Every event stored, with its partition and stream sequence.
    pub log: Vec<(u32, u64, Event)>,
}

impl Producer {
    pub async fn new(client: &async_nats::Client, partitions: u32) -> Self {
        Producer::in_namespace(client, NAMESPACE, partitions).await
    }

    /// A producer on the `customer` stream of `namespace`.
    pub async fn in_namespace(
        client: &async_nats::Client,
        namespace: &str,
        partitions: u32,
    ) -> Self {
        let names = StreamNames::new(namespace, "customer", partitions);
        ensure_stream(client, &names, &Default::default())
            .await
            .unwrap();
        Producer {
            names,
            js: async_nats::jetstream::new(client.clone()),
            states: HashMap::new(),
            unsettled: Vec::new(),
            last_sequence: BTreeMap::new(),
            published: 0,
            log: Vec::new(),
        }
    }

    /// The next event of `key` towards `state` (None: delete), or None when nothing changes.
    pub fn event(&mut self, key: &str, state: Option<Value>) -> Option<Event> {
        let (version, previous) = self.states.get(key).cloned().unwrap_or((0, None));
        if previous == state || (previous.is_none() && state.is_none()) {
            return None;
        }
        let type_ = match (&previous, &state) {
            (None, _) => EventType::Created,
            (_, None) => EventType::Deleted,
            _ => EventType::Updated,
        };
        let event = Event {
            id: uuid::Uuid::now_v7(),
            entity: "customer".into(),
            key: key.into(),
            version: version + 1,
            type_,
            changes: diff(previous.as_ref(), state.as_ref()),
            state: state.clone(),
            source: Some("test".into()),
            occurred_at: None,
            recorded_at: "2026-01-01T00:00:00Z".into(),
            correlation_id: None,
            erasure: None,
        };
        self.states.insert(key.into(), (version + 1, state));
        Some(event)
    }

    /// Publishes `changes` (key, new state) in order, waiting for every acknowledgement.
    pub async fn publish(&mut self, changes: impl IntoIterator<Item = (String, Option<Value>)>) {
        let mut pending = Vec::new();
        for (key, state) in changes {
            let Some(event) = self.event(&key, state) else {
                continue;
            };
            pending.push(self.send(&event).await);
            self.unsettled.push(event);
            if pending.len() >= 2000 {
                self.settle(&mut pending).await;
            }
        }
        self.settle(&mut pending).await;
    }

    /// Publishes a raw payload on `key`'s subject (for poison tests).
    pub async fn publish_raw(&mut self, key: &str, payload: &'static [u8]) {
        self.publish_payload(key, payload.to_vec()).await;
    }

    /// Publishes `payload` as it is on `key`'s subject, as a producer other than the receiver
    /// might (an event the receiver would refuse); returns its stream sequence.
    pub async fn publish_payload(&mut self, key: &str, payload: Vec<u8>) -> u64 {
        let subject = self.names.subject(&Key::new(key).unwrap());
        let ack = self.js.publish(subject, payload.into()).await.unwrap();
        let partition = subject_partition(&self.names, key);
        let ack = ack.await.unwrap();
        let last = self.last_sequence.entry(partition).or_default();
        *last = (*last).max(ack.sequence);
        ack.sequence
    }

    async fn send(&self, event: &Event) -> (u32, async_nats::jetstream::context::PublishAckFuture) {
        let key = Key::new(event.key.clone()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, message_id(event).as_str());
        let ack = self
            .js
            .publish_with_headers(
                self.names.subject(&key),
                headers,
                serde_json::to_vec(event).unwrap().into(),
            )
            .await
            .unwrap();
        (key.partition(self.names.partitions()), ack)
    }

    async fn settle(
        &mut self,
        pending: &mut Vec<(u32, async_nats::jetstream::context::PublishAckFuture)>,
    ) {
        let (partitions, acks): (Vec<u32>, Vec<_>) = pending.drain(..).unzip();
        let acks = futures::future::try_join_all(acks.into_iter().map(IntoFuture::into_future))
            .await
            .unwrap();
        let events: Vec<Event> = self.unsettled.drain(..).collect();
        for ((partition, ack), event) in partitions.into_iter().zip(acks).zip(events) {
            assert!(!ack.duplicate, "a test event was stored twice");
            self.log.push((partition, ack.sequence, event));
            let last = self.last_sequence.entry(partition).or_default();
            *last = (*last).max(ack.sequence);
            self.published += 1;
        }
    }

    /// The current state of every key (the function the views are defined on).
    pub fn states(&self) -> BTreeMap<String, Value> {
        self.states
            .iter()
            .filter_map(|(k, (_, s))| s.clone().map(|s| (k.clone(), s)))
            .collect()
    }
}

fn subject_partition(names: &StreamNames, key: &str) -> u32 {
    Key::new(key).unwrap().partition(names.partitions())
}

/// NATS, Postgres and a producer on a fresh stream.
#[derive(Debug)]
pub struct Bed {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub database: TestDatabase,
    pub pool: PgPool,
    pub producer: Producer,
    pub partitions: u32,
}

impl Bed {
    pub async fn start(partitions: u32) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let client = nats.client().await.unwrap();
        let database = TestDatabase::create().await.unwrap();
        let pool = database.pool_in_schema(SCHEMA).await.unwrap();
        let producer = Producer::new(&client, partitions).await;
        Bed {
            nats,
            client,
            database,
            pool,
            producer,
            partitions,
        }
    }

    /// A projector replica on its own connections, running in a task. Aborting the task is a
    /// crash: no graceful shutdown, leases left to expire, transactions cut off.
    pub async fn replica(
        &self,
        projection: &Projection,
        replica: &str,
        options: Options,
    ) -> Replica {
        self.replica_on(&self.database, projection, replica, options)
            .await
    }

    /// Like [`Bed::replica`], writing into `database` (a fresh replay's own database).
    pub async fn replica_on(
        &self,
        database: &TestDatabase,
        projection: &Projection,
        replica: &str,
        options: Options,
    ) -> Replica {
        let namespace = projection
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(NAMESPACE);
        let pool = database.pool().await.unwrap();
        let client = self.nats.client().await.unwrap();
        let metrics = Metrics::default();
        let projector = Projector::new(
            projection,
            &entity_in(namespace, self.partitions),
            replica,
            pool,
            client,
            metrics.clone(),
            options,
        )
        .unwrap();
        let status = projector.status_source();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(projector.run(|_| {}, shutdown.clone()));
        Replica {
            task,
            shutdown,
            status,
            metrics,
        }
    }

    /// Waits until generation `generation` of `projection` has applied everything produced.
    pub async fn caught_up(&self, pool: &PgPool, projection: &Projection, timeout: Duration) {
        let plan = Plan::new(projection, self.partitions).unwrap();
        wait_for_checkpoints(pool, &plan, &self.producer.last_sequence, timeout).await;
    }

    /// A fresh single-replica replay of `projection` into a new database: its view's rows.
    pub async fn fresh_replay(&self, projection: &Projection, view: &str) -> Vec<String> {
        let database = TestDatabase::create().await.unwrap();
        let pool = database.pool_in_schema(SCHEMA).await.unwrap();
        let replica = self
            .replica_on(&database, projection, "fresh", fast_options())
            .await;
        self.caught_up(&pool, projection, Duration::from_secs(120))
            .await;
        wait_until(
            Duration::from_secs(30),
            "the fresh replay's view to go live",
            || view_exists(&pool, view),
        )
        .await;
        let rows = rows(&pool, view).await;
        replica.stop().await;
        rows
    }
}

/// A running replica.
#[derive(Debug)]
pub struct Replica {
    pub task: JoinHandle<Result<(), runtime::projector::ProjectorError>>,
    pub shutdown: CancellationToken,
    pub status: runtime::projector::StatusSource,
    /// The replica's metrics, shared with its workers.
    pub metrics: Metrics,
}

impl Replica {
    /// The replica's metrics as Prometheus scrapes them.
    pub fn scrape(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }
}

/// The value of the sample `series` (name and labels exactly as scraped) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

impl Replica {
    /// Graceful stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Crash: the task and its workers are dropped wherever they are.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Waits until every partition's checkpoint of `plan` reached `last` (partition -> sequence).
pub async fn wait_for_checkpoints(
    pool: &PgPool,
    plan: &Plan,
    last: &BTreeMap<u32, u64>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "select partition, sequence from dp_checkpoints where projection = $1 and generation = $2",
        )
        .bind(&plan.projection)
        .bind(&plan.generation)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let at: HashMap<u32, u64> = rows
            .into_iter()
            .map(|(p, s)| (p as u32, s as u64))
            .collect();
        let done = last
            .iter()
            .all(|(p, s)| at.get(p).is_some_and(|reached| reached >= s));
        if done && !at.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {} did not catch up within {timeout:?}: at {at:?}, want {last:?}",
            plan.generation
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` until true; panics after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the stable view exists.
pub async fn view_exists(pool: &PgPool, view: &str) -> bool {
    sqlx::query_scalar::<_, bool>("select exists (select 1 from pg_views where viewname = $1)")
        .bind(view)
        .fetch_one(pool)
        .await
        .unwrap_or(false)
}

/// Every row of `relation` as JSON text, sorted: what "row for row" compares.
pub async fn rows(pool: &PgPool, relation: &str) -> Vec<String> {
    try_rows(pool, relation).await.unwrap()
}

/// Like [`rows`], returning the error (for readers that must never see one).
pub async fn try_rows(pool: &PgPool, relation: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select to_jsonb(r)::text from \"{relation}\" r"
    )))
    .fetch_all(pool)
    .await?;
    rows.sort();
    Ok(rows)
}

/// A deterministic pseudo-random customer state.
pub fn customer(rng: &mut fastrand::Rng, id: &str) -> Value {
    const CITIES: [&str; 5] = ["Lyon", "Oslo", "Porto", "Quito", "Turin"];
    serde_json::json!({
        "id": id,
        "name": format!("customer {id}"),
        "city": CITIES[rng.usize(..CITIES.len())],
        "active": rng.u8(..10) < 7,
        "spend": rng.i64(-50..500),
        "score": rng.f64() * 10.0,
    })
}

/// `n` random changes over `keys` keys: mostly updates, some creations and deletions.
pub fn random_changes(
    rng: &mut fastrand::Rng,
    keys: usize,
    n: usize,
) -> Vec<(String, Option<Value>)> {
    (0..n)
        .map(|_| {
            let key = format!("c{}", rng.usize(..keys));
            if rng.u8(..20) == 0 {
                (key, None)
            } else {
                let state = customer(rng, &key);
                (key, Some(state))
            }
        })
        .collect()
}
