//! The projector's sinks against real NATS JetStream and Postgres: what each view mode holds,
//! poison events, the NATS sink, waiting for the stream, and checkpoint fencing.

mod projector_support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use projector_support::*;
use runtime::projector::Plan;
use runtime::projector::database::{self, Batch, Fence, Progress};
use serde_json::json;

fn key_state(key: &str, state: serde_json::Value) -> (String, Option<serde_json::Value>) {
    (key.to_owned(), Some(state))
}

#[tokio::test]
async fn latest_view_holds_exactly_the_keys_whose_current_state_passes() {
    let mut bed = Bed::start(4).await;
    let projection = projection(
        "customers",
        "  filters:\n    - where: \"state.active\"\n    - set: {label: \"key + ': ' + state.name\", doubled: \"state.spend * 2\"}\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: label, type: text}, {name: doubled, type: bigint}, {name: city, type: text}]\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    let ada = json!({"id": "a", "name": "Ada", "active": true, "spend": 21, "city": "Lyon"});
    let bob = json!({"id": "b", "name": "Bob", "active": true, "spend": 5, "city": "Oslo"});
    bed.producer
        .publish([
            key_state("a", ada.clone()),
            key_state("b", bob.clone()),
            key_state(
                "c",
                json!({"id": "c", "name": "Cy", "active": false, "spend": 1}),
            ),
            // b stops matching, c starts matching, a is deleted and created again.
            key_state(
                "b",
                json!({"id": "b", "name": "Bob", "active": false, "spend": 5}),
            ),
            key_state(
                "c",
                json!({"id": "c", "name": "Cy", "active": true, "spend": 1, "city": "Porto"}),
            ),
            ("a".to_owned(), None),
            key_state(
                "a",
                json!({"id": "a", "name": "Ada L", "active": true, "spend": 30}),
            ),
        ])
        .await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "customers")
    })
    .await;
    let rows: Vec<(String, i64, String, String, i64, Option<String>)> = sqlx::query_as(
        "select dp_key, dp_version, name, label, doubled, city from customers order by dp_key",
    )
    .fetch_all(&bed.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("a".into(), 3, "Ada L".into(), "a: Ada L".into(), 60, None),
            (
                "c".into(),
                2,
                "Cy".into(),
                "c: Cy".into(),
                2,
                Some("Porto".into())
            ),
        ]
    );
    replica.stop().await;
}

#[tokio::test]
async fn history_view_keeps_one_row_per_passing_event() {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "changes",
        "  filters:\n    - types: [created, deleted]\n  sink:\n    postgres:\n      view: customer_changes\n      mode: history\n      columns: [{name: name, type: text}]\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    bed.producer
        .publish([
            key_state("a", json!({"id": "a", "name": "Ada"})),
            key_state("a", json!({"id": "a", "name": "Ada L"})),
            ("a".to_owned(), None),
            key_state("b", json!({"id": "b", "name": "Bob"})),
        ])
        .await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "customer_changes")
    })
    .await;
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "select dp_key, dp_version, dp_type, name from customer_changes order by dp_key, dp_version",
    )
    .fetch_all(&bed.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("a".into(), 1, "created".into(), Some("Ada".into())),
            ("a".into(), 3, "deleted".into(), None),
            ("b".into(), 1, "created".into(), Some("Bob".into())),
        ]
    );
    replica.stop().await;
}

#[tokio::test]
async fn aggregate_view_equals_counts_and_sums_over_the_current_states() {
    let mut bed = Bed::start(4).await;
    let projection = projection(
        "by-city",
        "  filters:\n    - where: \"state.active\"\n  sink:\n    postgres:\n      view: customers_by_city\n      mode: aggregate\n      columns: [{name: city, type: text}, {name: spend, type: bigint}]\n      groupBy: [city]\n      aggregates: [{name: customers, function: count}, {name: spend, function: sum, of: spend}]\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    let mut rng = fastrand::Rng::with_seed(7);
    bed.producer
        .publish(random_changes(&mut rng, 300, 3000))
        .await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(60))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "customers_by_city")
    })
    .await;

    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for state in bed.producer.states().values() {
        if state["active"] == json!(true) {
            let entry = expected
                .entry(state["city"].as_str().unwrap().to_owned())
                .or_default();
            entry.0 += 1;
            entry.1 += state["spend"].as_i64().unwrap();
        }
    }
    let actual: BTreeMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, String)>(
        "select city, customers, spend::text from customers_by_city",
    )
    .fetch_all(&bed.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(city, n, spend)| (city, (n, spend.parse().unwrap())))
    .collect();
    assert_eq!(actual, expected);
    replica.stop().await;
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_the_rest_keeps_flowing() {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "ratios",
        "  filters:\n    - set: {ratio: \"state.a / state.b\"}\n  sink:\n    postgres:\n      view: ratios\n      columns: [{name: ratio, type: integer}, {name: born, type: date}]\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    let mut changes = Vec::new();
    for i in 0..40 {
        changes.push(key_state(
            &format!("k{i}"),
            json!({"id": format!("k{i}"), "a": 10, "b": 2}),
        ));
    }
    // A CEL runtime error (division by zero) and a value the sink rejects (not a date).
    changes.push(key_state("zero", json!({"id": "zero", "a": 1, "b": 0})));
    changes.push(key_state(
        "baddate",
        json!({"id": "baddate", "a": 1, "b": 1, "born": "the 31st of never"}),
    ));
    bed.producer.publish(changes).await;
    bed.producer.publish_raw("garbage", b"not json").await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "ratios")
    })
    .await;

    let count: i64 = sqlx::query_scalar("select count(*) from ratios where ratio = 5")
        .fetch_one(&bed.pool)
        .await
        .unwrap();
    assert_eq!(count, 40, "every good event is applied");
    let letters: Vec<(Option<String>, String, bool)> = sqlx::query_as(
        "select key, reason, event is not null or payload is not null from dp_dead_letters order by sequence",
    )
    .fetch_all(&bed.pool)
    .await
    .unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(letters[0].0.as_deref(), Some("zero"));
    assert!(letters[0].1.contains("a filter failed"), "{}", letters[0].1);
    assert_eq!(letters[1].0.as_deref(), Some("baddate"));
    assert!(letters[1].1.contains("rejected"), "{}", letters[1].1);
    assert_eq!(letters[2].0, None);
    assert!(
        letters[2].1.contains("not a DreamPipe event"),
        "{}",
        letters[2].1
    );
    assert!(letters.iter().all(|l| l.2), "the event or payload is kept");

    let report = replica.status.report().await.unwrap();
    let generation = &report.generations[0];
    assert_eq!(generation.dead_letters, 3);
    assert_eq!(generation.phase, crds::projection::Phase::Live);
    replica.stop().await;
}

#[tokio::test]
async fn on_error_stop_halts_only_the_partition_of_the_poison_event() {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "strict",
        "  onError: Stop\n  filters:\n    - where: \"state.a / state.b > 0\"\n  sink:\n    postgres:\n      view: strict\n      columns: [{name: a, type: integer}]\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    // Both partitions read before anything is published, so the events below arrive one by
    // one (a build from the start would read only each key's latest, ADR 82).
    let plan = Plan::new(&projection, 2).unwrap();
    wait_until(
        Duration::from_secs(30),
        "both partitions to have read the empty stream",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from dp_checkpoints where generation = $1 and lag = 0",
            )
            .bind(&plan.generation)
            .fetch_one(&bed.pool)
            .await
            .is_ok_and(|read| read == 2)
        },
    )
    .await;
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let poison_key = "k0";
    let poison_partition = runtime::store::Key::new(poison_key).unwrap().partition(2);
    let mut changes: Vec<_> = keys
        .iter()
        .map(|k| key_state(k, json!({"id": k, "a": 1, "b": 1})))
        .collect();
    changes.push(key_state(
        poison_key,
        json!({"id": poison_key, "a": 1, "b": 0}),
    ));
    changes.push(key_state(
        poison_key,
        json!({"id": poison_key, "a": 2, "b": 1}),
    ));
    bed.producer.publish(changes).await;

    let mut healthy = bed.producer.last_sequence.clone();
    healthy.remove(&poison_partition);
    wait_for_checkpoints(&bed.pool, &plan, &healthy, Duration::from_secs(30)).await;
    wait_until(
        Duration::from_secs(10),
        "the stop to be reported",
        || async {
            let report = replica.status.report().await.unwrap();
            report.generations[0].phase == crds::projection::Phase::Degraded
        },
    )
    .await;
    let report = replica.status.report().await.unwrap();
    let stopped = &report.generations[0].partitions[poison_partition as usize];
    assert!(
        stopped
            .stopped
            .as_deref()
            .unwrap_or_default()
            .contains("a filter failed")
    );
    assert!(
        report.generations[0].lag >= 2,
        "the poison event and the one after it wait"
    );
    let (a,): (i32,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select a from \"{}\" where dp_key = 'k0'",
        plan.postgres().unwrap().table
    )))
    .fetch_one(&bed.pool)
    .await
    .unwrap();
    assert_eq!(
        a, 1,
        "nothing after the poison event is applied in its partition"
    );
    replica.stop().await;
}

#[tokio::test]
async fn nats_sink_republishes_filtered_mapped_events_once_across_restarts() {
    let mut bed = Bed::start(2).await;
    let js = async_nats::jetstream::new(bed.client.clone());
    let mut out = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "vip_out".into(),
            subjects: vec!["vip.customers".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let projection = projection(
        "vips",
        "  filters:\n    - where: \"state.spend > 100\"\n    - set: {tier: \"'gold'\"}\n  sink:\n    nats: {subject: vip.customers}\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    let changes: Vec<_> = (0..20)
        .map(|i| {
            key_state(
                &format!("k{i}"),
                json!({"id": format!("k{i}"), "spend": i * 10}),
            )
        })
        .collect();
    bed.producer.publish(changes).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    replica.crash().await;

    // Forget the checkpoint, as if the crash came before the commit: everything is published again.
    sqlx::query("update dp_checkpoints set sequence = 0")
        .execute(&bed.pool)
        .await
        .unwrap();
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    replica.stop().await;

    assert_eq!(
        out.info().await.unwrap().state.messages,
        9,
        "spend 110..190, each once"
    );
    let consumer = out
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let first = consumer
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let event: runtime::store::Event = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(event.state.as_ref().unwrap()["tier"], json!("gold"));
    assert!(event.state.as_ref().unwrap()["spend"].as_i64().unwrap() > 100);
}

#[tokio::test]
async fn the_projector_waits_for_the_stream_and_is_not_ready_meanwhile() {
    let nats = testbed::NatsServer::start().await.unwrap();
    let database = testbed::TestDatabase::create().await.unwrap();
    let pool = database.pool_in_schema(SCHEMA).await.unwrap();
    let projection = projection(
        "customers",
        "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n",
    );
    let projector = runtime::projector::Projector::new(
        &projection,
        &entity(2),
        "r1",
        pool.clone(),
        nats.client().await.unwrap(),
        runtime::projector::Metrics::default(),
        fast_options(),
    )
    .unwrap();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ready.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(projector.run(
        move |r| flag.store(r, std::sync::atomic::Ordering::SeqCst),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!task.is_finished(), "no stream is no crash");
    assert!(!ready.load(std::sync::atomic::Ordering::SeqCst));

    let client = nats.client().await.unwrap();
    let mut producer = Producer::new(&client, 2).await;
    producer
        .publish([key_state("a", json!({"id": "a", "name": "Ada"}))])
        .await;
    wait_until(Duration::from_secs(10), "readiness", || {
        let ready = ready.clone();
        async move { ready.load(std::sync::atomic::Ordering::SeqCst) }
    })
    .await;
    let plan = Plan::new(&projection, 2).unwrap();
    wait_for_checkpoints(
        &pool,
        &plan,
        &producer.last_sequence,
        Duration::from_secs(20),
    )
    .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&pool, "customers")
    })
    .await;
    assert_eq!(rows(&pool, "customers").await.len(), 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_replica_that_lost_its_partition_cannot_overwrite_the_new_owners_progress() {
    let database = testbed::TestDatabase::create().await.unwrap();
    let pool = database.pool().await.unwrap();
    let projection = projection(
        "customers",
        "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n",
    );
    let plan = Plan::new(&projection, 2).unwrap();
    database::prepare(&pool, &plan.schema).await.unwrap();
    database::register(&pool, &plan).await.unwrap();
    let ttl = Duration::from_millis(300);
    let old = database::acquire(&pool, &plan.schema, &plan.projection, 0, "old", ttl)
        .await
        .unwrap()
        .unwrap();
    // A batch of partition 0 that moves its checkpoint from `from` to `to` and writes nothing.
    let no_erasures = runtime::projector::rows::Erasures::default();
    let moving = |fence, from, to| Batch {
        partition: 0,
        fence,
        from,
        rows: &[],
        dead_letters: &[],
        erased: &no_erasures,
        progress: Progress {
            sequence: to,
            events: 1,
            lag: 0,
        },
        stopped: None,
    };
    database::commit(&pool, &plan, None, &moving(&old, 0, 5))
        .await
        .unwrap();

    // The old owner stalls past its lease; a new owner takes the partition and moves on.
    assert_eq!(
        database::acquire(&pool, &plan.schema, &plan.projection, 0, "new", ttl)
            .await
            .unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = database::acquire(&pool, &plan.schema, &plan.projection, 0, "new", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new, old);

    let stale = database::commit(&pool, &plan, None, &moving(&old, 5, 9)).await;
    assert!(
        matches!(stale, Err(database::CommitError::Fenced)),
        "{stale:?}"
    );
    database::commit(&pool, &plan, None, &moving(&new, 5, 7))
        .await
        .unwrap();
    let same_lease = Fence {
        owner: "new".into(),
        epoch: new.epoch,
    };
    let stale_sequence = database::commit(&pool, &plan, None, &moving(&same_lease, 5, 8)).await;
    assert!(
        matches!(stale_sequence, Err(database::CommitError::Fenced)),
        "a checkpoint moves only from where it is"
    );
    assert_eq!(
        database::checkpoint(&pool, &plan, 0)
            .await
            .unwrap()
            .sequence,
        7
    );
}
