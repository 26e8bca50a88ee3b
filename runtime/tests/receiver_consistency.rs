//! The receiver's guarantees when several instances share one stream: `unchanged` is always
//! decided on the latest stored state, and racing writers never lose an update.

mod receiver_support;

use std::collections::BTreeSet;

use receiver_support::*;
use runtime::store::jetstream::{Appended, EventStore, ensure_stream, stream_config};
use runtime::store::{Event, EventType, Key};
use serde_json::json;
use testbed::NatsServer;

#[tokio::test]
async fn another_instances_write_is_never_answered_unchanged() {
    let nats = NatsServer::start().await.unwrap();
    let a = open_receiver(&nats).await;
    let b = open_receiver(&nats).await;

    assert_eq!(
        put(&a, "c1", json!({"id": "c1", "name": "X"})).await.body["result"],
        "created"
    );
    assert_eq!(
        put(&b, "c1", json!({"id": "c1", "name": "Y"})).await.body["result"],
        "updated"
    );
    // A last saw X; submitting X again is a change back from Y, not "unchanged".
    let back = put(&a, "c1", json!({"id": "c1", "name": "X"})).await;
    assert_eq!(back.body["result"], "updated");
    assert_eq!(back.body["version"], 3);
    // And B, which wrote Y, sees that X is current.
    assert_eq!(
        put(&b, "c1", json!({"id": "c1", "name": "X"})).await.body["result"],
        "unchanged"
    );
    assert_eq!(stream_messages(&nats).await, 3);
}

#[tokio::test]
async fn eight_writers_over_two_instances_leave_a_gap_free_version_sequence() {
    let nats = NatsServer::start().await.unwrap();
    let (a, _, a_registry) = receiver(&nats, Default::default()).await;
    let (b, _, b_registry) = receiver(&nats, Default::default()).await;
    let instances = [a, b];
    let writers = 8;
    let writes_per_writer = 25;

    let mut tasks = Vec::new();
    for writer in 0..writers {
        let router = instances[writer % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for write in 0..writes_per_writer {
                let answer = put(
                    &router,
                    "hot",
                    json!({"id": "hot", "name": format!("w{writer}-{write}")}),
                )
                .await;
                assert!(
                    answer.status.is_success(),
                    "{} {}",
                    answer.status,
                    answer.body
                );
                assert_ne!(
                    answer.body["result"], "unchanged",
                    "every write carries new information"
                );
                versions.push(answer.body["version"].as_u64().unwrap());
            }
            versions
        }));
    }
    let mut answered = BTreeSet::new();
    for task in tasks {
        for version in task.await.unwrap() {
            assert!(answered.insert(version), "version {version} answered twice");
        }
    }
    let total = (writers * writes_per_writer) as u64;
    assert_eq!(answered, (1..=total).collect(), "answers cover 1..N");

    let events = events_of(&nats, "hot").await;
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=total).collect::<Vec<_>>(),
        "stored versions are 1..N in order, no gap, no duplicate"
    );
    // Each event's diff starts from the state of the event before it: no update was lost.
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].changes[0].from.as_ref(),
            pair[0].state.as_ref().map(|s| &s["name"])
        );
    }
    // The metrics of both instances: every write appended once, and the races were counted.
    let sum = |series: &str| -> f64 {
        [&a_registry, &b_registry]
            .iter()
            .map(|registry| {
                let mut text = String::new();
                prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(series)?
                            .strip_prefix(' ')?
                            .parse::<f64>()
                            .ok()
                    })
                    .unwrap_or(0.0)
            })
            .sum()
    };
    assert_eq!(
        sum("dreampipe_receiver_results_total{outcome=\"appended\",type=\"updated\"}")
            + sum("dreampipe_receiver_results_total{outcome=\"appended\",type=\"created\"}"),
        total as f64
    );
    assert_eq!(
        sum("dreampipe_receiver_append_duration_seconds_count"),
        total as f64,
        "one timed append per stored event"
    );
    assert!(
        sum("dreampipe_receiver_append_conflicts_total") > 0.0,
        "two instances writing one key race, and the losers are counted"
    );
}

/// Requests racing on the same keys inside one receiver take turns per key (ADR 81): a burst
/// beyond what it serves at once queues, and is neither refused as contended nor spent on
/// conflicts and retries (an open-loop load once livelocked the receiver on them).
#[tokio::test]
async fn batches_racing_on_the_same_keys_in_one_receiver_take_turns_without_conflicts() {
    let nats = NatsServer::start().await.unwrap();
    let (router, _, registry) = receiver(&nats, Default::default()).await;
    let (keys, batches) = (40, 32);
    let tasks: Vec<_> = (0..batches)
        .map(|batch| {
            let router = router.clone();
            tokio::spawn(async move {
                let ndjson = (0..keys)
                    .map(|k| json!({"state": {"id": format!("k{k}"), "name": format!("b{batch}"), "n": batch}}).to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                call(
                    &router,
                    axum::http::Method::POST,
                    "/v1/entities/customer/batch",
                    Some(&ndjson),
                    &[("content-type", "application/x-ndjson")],
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        let answer = task.await.unwrap();
        assert!(
            answer.status.is_success(),
            "{} {}",
            answer.status,
            answer.body
        );
        for result in answer.body["results"].as_array().unwrap() {
            assert!(
                ["created", "updated"].contains(&result["result"].as_str().unwrap()),
                "{result}"
            );
        }
    }
    for k in 0..keys {
        let versions: Vec<u64> = events_of(&nats, &format!("k{k}"))
            .await
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(
            versions,
            (1..=batches as u64).collect::<Vec<_>>(),
            "key k{k}"
        );
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "dreampipe_receiver_append_conflicts_total 0"),
        "no append of one process conflicted with another of its own: {}",
        text.lines()
            .find(|l| l.starts_with("dreampipe_receiver_append_conflicts_total"))
            .unwrap_or("none")
    );
}

fn event(key: &str, version: u64, name: &str) -> Event {
    Event {
        id: uuid::Uuid::now_v7(),
        entity: "customer".into(),
        key: key.into(),
        version,
        type_: if version == 1 {
            EventType::Created
        } else {
            EventType::Updated
        },
        state: Some(json!({"id": key, "name": name})),
        changes: Vec::new(),
        source: None,
        occurred_at: None,
        recorded_at: "2026-11-23T00:00:00Z".into(),
        correlation_id: None,
        erasure: None,
    }
}

#[tokio::test]
async fn a_duplicate_ack_is_recognised_and_not_counted_as_a_new_event() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let entity = entity();
    ensure_stream(&client, &names(), &entity.spec.stream)
        .await
        .unwrap();
    let store = EventStore::open(&client, names()).await.unwrap();
    let key = Key::new("c1").unwrap();

    let first = event("c1", 1, "Ada");
    let Appended::Stored { sequence } = store.append(&key, &first, 0).await.unwrap() else {
        panic!("first append conflicts")
    };
    // The same event again (a retried publish), whether the server answers with a stale
    // sequence or with a duplicate ack: recognised as already stored, at the same sequence.
    assert_eq!(
        store.append(&key, &first, 0).await.unwrap(),
        Appended::Stored { sequence }
    );
    assert_eq!(
        store.append(&key, &first, sequence).await.unwrap(),
        Appended::Stored { sequence }
    );
    // Another writer's event for the same version (its Nats-Msg-Id is a duplicate): a
    // conflict, never a success.
    assert_eq!(
        store
            .append(&key, &event("c1", 1, "Bo"), sequence)
            .await
            .unwrap(),
        Appended::Conflict
    );
    assert_eq!(
        store.append(&key, &event("c1", 1, "Bo"), 0).await.unwrap(),
        Appended::Conflict
    );
    assert_eq!(stream_messages(&nats).await, 1);
    assert_eq!(store.latest(&key).await.unwrap().unwrap().event, first);
}

#[tokio::test]
async fn a_stale_expected_sequence_is_a_conflict() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    ensure_stream(&client, &names(), &entity().spec.stream)
        .await
        .unwrap();
    let store = EventStore::open(&client, names()).await.unwrap();
    let key = Key::new("c1").unwrap();
    store.append(&key, &event("c1", 1, "Ada"), 0).await.unwrap();
    assert_eq!(
        store.append(&key, &event("c1", 2, "Bo"), 0).await.unwrap(),
        Appended::Conflict
    );
}

#[tokio::test]
async fn receivers_starting_together_agree_on_the_stream() {
    let nats = NatsServer::start().await.unwrap();
    let spec = entity().spec.stream;
    let clients = [
        nats.client().await.unwrap(),
        nats.client().await.unwrap(),
        nats.client().await.unwrap(),
    ];
    let names = names();
    let results =
        futures::future::join_all(clients.iter().map(|c| ensure_stream(c, &names, &spec))).await;
    for result in results {
        result.expect("every concurrent ensure succeeds");
    }
    // Ensuring again is a no-op, and the server holds exactly the designed configuration.
    ensure_stream(&clients[0], &names, &spec).await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let info = js
        .get_stream("dp_shop_customer")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    let expected = stream_config(&names, &spec).unwrap();
    assert_eq!(info.config.subjects, expected.subjects);
    assert!(info.config.allow_direct && info.config.deny_delete && !info.config.deny_purge);
    assert_eq!(info.config.duplicate_window, expected.duplicate_window);
    assert_eq!(info.config.storage, expected.storage);
    assert_eq!(info.config.max_age, std::time::Duration::ZERO);
    assert_eq!(
        info.config.metadata["dreampipe.io/partitions"], "4",
        "readers find the partitions in the stream"
    );
    assert_eq!(info.config.metadata["dreampipe.io/entity"], "customer");
}

#[tokio::test]
async fn changing_an_immutable_stream_setting_is_a_clear_error() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut spec = entity().spec.stream;
    ensure_stream(&client, &names(), &spec).await.unwrap();
    spec.storage = crds::entity::Storage::Memory;
    let error = ensure_stream(&client, &names(), &spec).await.unwrap_err();
    let message = runtime::error_chain(&error);
    assert!(
        message.starts_with("could not create or update stream dp_shop_customer"),
        "{message}"
    );
    assert!(
        message.contains("storage"),
        "the cause names the setting: {message}"
    );
}

#[tokio::test]
async fn reading_many_keys_at_once_agrees_with_reading_them_one_by_one() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    ensure_stream(&client, &names(), &entity().spec.stream)
        .await
        .unwrap();
    let store = EventStore::open(&client, names()).await.unwrap();
    // More keys than one multi-get asks for, some of them escaped, some written twice.
    let written: Vec<String> = (0..300)
        .map(|i| {
            if i % 7 == 0 {
                format!("key with space {i}")
            } else {
                format!("k{i}")
            }
        })
        .collect();
    for (i, raw) in written.iter().enumerate() {
        let key = Key::new(raw.as_str()).unwrap();
        let Appended::Stored { sequence } =
            store.append(&key, &event(raw, 1, "one"), 0).await.unwrap()
        else {
            panic!()
        };
        if i % 3 == 0 {
            store
                .append(&key, &event(raw, 2, "two"), sequence)
                .await
                .unwrap();
        }
    }
    let mut asked: Vec<Key> = written
        .iter()
        .map(|k| Key::new(k.as_str()).unwrap())
        .collect();
    asked.extend((0..5).map(|i| Key::new(format!("absent-{i}")).unwrap()));

    let many = store.latest_many(&asked).await.unwrap();
    assert_eq!(many.len(), written.len(), "absent keys are left out");
    for key in &asked {
        assert_eq!(
            many.get(key),
            store.latest(key).await.unwrap().as_ref(),
            "key {key}"
        );
    }
}
