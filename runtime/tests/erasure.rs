//! Erasure (issue 19, ADR 75) end to end against real NATS and Postgres: keys erased through
//! the receiver mid-stream, while a new generation builds, leave nothing readable behind in
//! the stream, the tables, the views or the dead letters, and every other key's rows equal a
//! fresh replay.

mod projector_support;
mod receiver_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use projector_support::{
    Bed, Producer, fast_options, projection, random_changes, rows, view_exists, wait_until,
};
use receiver_support::call;
use runtime::auth::{ScopedTokens, Tokens};
use runtime::projector::Plan;
use runtime::query::namespaces::Readers;
use runtime::receiver::metrics::Metrics;
use runtime::receiver::model::EntityModel;
use runtime::receiver::submit::Receiver;
use runtime::store::{Event, Key};
use serde_json::json;

/// Keys erased, and the values only they hold: nothing may find these afterwards.
const ERASED: [&str; 3] = ["erase-me-0", "erase-me-1", "erase-me-2"];
const SECRET_NAME: &str = "Erin Secretperson";
const SECRET_CITY: &str = "Secretville";

const LATEST_V1: &str = "  filters:\n    - where: \"has(state.active) && state.active\"\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: spend, type: bigint}]\n";
const LATEST_V2: &str = "  filters:\n    - where: \"has(state.spend)\"\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: spend, type: bigint}]\n";
const HISTORY: &str = "  sink:\n    postgres:\n      view: customer_changes\n      mode: history\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: spend, type: bigint}]\n";
const AGGREGATE: &str = "  sink:\n    postgres:\n      view: customers_by_city\n      mode: aggregate\n      columns: [{name: city, type: text}, {name: spend, type: bigint}]\n      groupBy: [city]\n      aggregates: [{name: customers, function: count}, {name: spend, function: sum, of: spend}]\n";

/// A receiver of the projector tests' Entity (namespace `default`), as its HTTP API.
async fn receiver(bed: &Bed) -> Router {
    let client = bed.nats.client().await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let model = EntityModel::new(&projector_support::entity(bed.partitions)).unwrap();
    let receiver = Arc::new(Receiver::open(&client, model, metrics).await.unwrap());
    runtime::receiver::http::routes(receiver, Tokens::default())
}

/// Every message of the stream, in order, as stored.
async fn stream_payloads(bed: &Bed) -> Vec<(String, String)> {
    let js = bed.nats.jetstream().await.unwrap();
    let mut stream = js.get_stream(bed.producer.names.stream()).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut found = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            found.push((
                message.subject.to_string(),
                String::from_utf8_lossy(&message.payload).into_owned(),
            ));
        }
    }
    found
}

/// Every row of every table and view of the namespace's schema, as text, by relation.
async fn every_relation(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    let relations: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = $1 and c.relkind in ('r', 'v')",
    )
    .bind(projector_support::SCHEMA)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for relation in relations {
        for row in rows(pool, &relation).await {
            found.push((relation.clone(), row));
        }
    }
    found
}

/// Erases `key` through the receiver's API: its tombstone's version and stream sequence.
async fn erase(receiver: &Router, key: &str) -> (u64, u64) {
    let answer = call(
        receiver,
        Method::POST,
        &format!("/v1/entities/customer/{key}/erasure"),
        Some(r#"{"requestedBy": "dpo@example.com", "reason": "GDPR art. 17, ticket 4711"}"#),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["result"], "erased");
    assert!(answer.body["purged"].as_u64().unwrap() >= 1);
    (
        answer.body["version"].as_u64().unwrap(),
        answer.body["sequence"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erased_keys_leave_nothing_readable_while_a_generation_builds_and_other_rows_equal_a_fresh_replay()
 {
    let mut bed = Bed::start(4).await;
    let receiver = receiver(&bed).await;
    let latest_v1 = projection("customers", LATEST_V1);
    let latest_v2 = projection("customers", LATEST_V2);
    let history = projection("customer-changes", HISTORY);
    let aggregate = projection("customers-by-city", AGGREGATE);
    let g2 = Plan::new(&latest_v2, 4).unwrap().generation;
    let g1_table = Plan::new(&latest_v1, 4)
        .unwrap()
        .postgres()
        .unwrap()
        .table
        .clone();

    // The keys to erase: several versions each, one of them poison (a spend no bigint or sum
    // takes), so every projection holds a dead letter with the person's data.
    let mut rng = fastrand::Rng::with_seed(19);
    let mut changes = random_changes(&mut rng, 300, 1500);
    for (i, key) in ERASED.iter().enumerate() {
        let state = |spend: serde_json::Value| json!({"id": key, "name": SECRET_NAME, "city": SECRET_CITY, "active": true, "spend": spend});
        changes.insert(i * 10, (key.to_string(), Some(state(json!(i)))));
        changes.insert(i * 10 + 400, (key.to_string(), Some(state(json!("lots")))));
        changes.insert(i * 10 + 800, (key.to_string(), Some(state(json!(100 + i)))));
    }
    let old = bed
        .replica(&latest_v1, "customers-old", fast_options())
        .await;
    let changes_replica = bed.replica(&history, "changes", fast_options()).await;
    let by_city = bed.replica(&aggregate, "by-city", fast_options()).await;
    bed.producer.publish(changes).await;
    for projection in [&latest_v1, &history, &aggregate] {
        bed.caught_up(&bed.pool, projection, Duration::from_secs(60))
            .await;
    }
    let before = every_relation(&bed.pool).await;
    for (what, secret) in [("name", SECRET_NAME), ("city", SECRET_CITY)] {
        assert!(
            before.iter().any(|(_, row)| row.contains(secret)),
            "before erasure the views hold the erased keys' {what}"
        );
    }
    assert!(
        before
            .iter()
            .any(|(relation, row)| relation == "dp_dead_letters" && row.contains(SECRET_NAME)),
        "before erasure the dead letters hold the erased keys' data"
    );

    // Other keys keep changing while the new generation of `customers` builds beside the old
    // one, and the keys are erased in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut producer =
            std::mem::replace(&mut bed.producer, Producer::new(&bed.client, 4).await);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(20);
            while !stop.load(Ordering::SeqCst) {
                producer.publish(random_changes(&mut rng, 300, 50)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            producer
        })
    };
    let new = bed
        .replica(&latest_v2, "customers-new", fast_options())
        .await;
    let mut tombstones = Vec::new();
    for key in ERASED {
        tombstones.push((key, erase(&receiver, key).await));
    }
    old.stop().await;
    wait_until(
        Duration::from_secs(60),
        "generation 2 to go live",
        || async {
            let report = new.status.report().await.unwrap();
            report.active_generation.as_deref() == Some(g2.as_str())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    bed.producer = writer.await.unwrap();
    for (key, (_, sequence)) in &tombstones {
        let partition = Key::new(*key).unwrap().partition(bed.partitions);
        let last = bed.producer.last_sequence.entry(partition).or_default();
        *last = (*last).max(*sequence);
    }
    for projection in [&latest_v2, &history, &aggregate] {
        bed.caught_up(&bed.pool, projection, Duration::from_secs(60))
            .await;
    }
    wait_until(
        Duration::from_secs(30),
        "the retired generation's table to be dropped",
        || async {
            !sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from pg_tables where tablename = $1)",
            )
            .bind(&g1_table)
            .fetch_one(&bed.pool)
            .await
            .unwrap()
        },
    )
    .await;

    // The stream keeps each erased key's tombstone and nothing else of it.
    let stream = stream_payloads(&bed).await;
    for (key, (version, sequence)) in &tombstones {
        let subject = bed.producer.names.subject(&Key::new(*key).unwrap());
        let kept: Vec<Event> = stream
            .iter()
            .filter(|(s, _)| *s == subject)
            .map(|(_, payload)| serde_json::from_str(payload).unwrap())
            .collect();
        assert_eq!(kept.len(), 1, "{key} keeps only its tombstone: {kept:?}");
        assert!(kept[0].is_tombstone() && kept[0].state.is_none());
        assert_eq!(kept[0].version, *version);
        assert!(*sequence > 0);
    }
    for (what, secret) in [("name", SECRET_NAME), ("city", SECRET_CITY)] {
        assert!(
            stream.iter().all(|(_, payload)| !payload.contains(secret)),
            "no event of the stream holds an erased key's {what}"
        );
    }

    // No table, view or dead letter of the namespace holds the keys or their values.
    let after = every_relation(&bed.pool).await;
    assert!(
        after.iter().any(|(r, _)| r == "customers"),
        "views were searched"
    );
    for needle in ERASED.iter().copied().chain([SECRET_NAME, SECRET_CITY]) {
        let left: Vec<_> = after
            .iter()
            .filter(|(_, row)| row.contains(needle))
            .collect();
        assert!(left.is_empty(), "{needle} is still readable in {left:?}");
    }

    // Every other key's rows equal a fresh replay of the stream as it now is.
    let views = [
        ("customers", rows(&bed.pool, "customers").await),
        (
            "customer_changes",
            rows(&bed.pool, "customer_changes").await,
        ),
        (
            "customers_by_city",
            rows(&bed.pool, "customers_by_city").await,
        ),
    ];
    new.stop().await;
    changes_replica.stop().await;
    by_city.stop().await;
    for ((view, live), projection) in views.iter().zip([&latest_v2, &history, &aggregate]) {
        let fresh = bed.fresh_replay(projection, view).await;
        assert!(!fresh.is_empty(), "{view} has rows");
        assert!(live == &fresh, "{view} differs from a fresh replay");
    }
    assert!(view_exists(&bed.pool, "customers").await);

    // The query service answers 410 Gone for an erased key's state and history.
    let query = runtime::query::http::routes(
        Arc::new(Readers::new(bed.nats.client().await.unwrap(), "default")),
        ScopedTokens::default(),
    );
    for path in ["", "/history", "?asOf=1"] {
        let answer = call(
            &query,
            Method::GET,
            &format!("/v1/entities/customer/{}{path}", ERASED[0]),
            None,
            &[],
        )
        .await;
        assert_eq!(answer.status, StatusCode::GONE, "{path}: {}", answer.body);
    }

    // A later submission of the key starts a new life after its tombstone.
    let (version, _) = tombstones[0].1;
    let answer = call(
        &receiver,
        Method::PUT,
        &format!("/v1/entities/customer/{}", ERASED[0]),
        Some(&json!({"id": ERASED[0], "name": "a new customer"}).to_string()),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["version"], version + 1);
}

async fn erase_in(router: &Router, key: &str, body: &str) -> receiver_support::Answer {
    call(
        router,
        Method::POST,
        &format!("/v1/entities/customer/{key}/erasure"),
        Some(body),
        &[],
    )
    .await
}

const REQUEST: &str = r#"{"requestedBy": "dpo@example.com", "reason": "ticket 12"}"#;

#[tokio::test]
async fn an_entity_that_refuses_erased_keys_answers_410_to_their_next_submission_and_read() {
    let nats = testbed::NatsServer::start().await.unwrap();
    let mut entity = receiver_support::entity();
    entity.spec.after_erasure = crds::entity::AfterErasure::Refuse;
    let (router, _, _) = receiver_support::receiver_of(&nats, entity, Tokens::default()).await;
    for name in ["Ada", "Ada L."] {
        receiver_support::put(&router, "c1", json!({"id": "c1", "name": name})).await;
    }
    let erased = erase_in(&router, "c1", REQUEST).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    assert_eq!(
        (
            erased.body["version"].as_u64(),
            erased.body["purged"].as_u64()
        ),
        (Some(3), Some(2))
    );

    let again = receiver_support::put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
    assert_eq!(
        again.body["type"].as_str().map(|t| t.ends_with("erased")),
        Some(true),
        "{}",
        again.body
    );
    let read = call(&router, Method::GET, "/v1/entities/customer/c1", None, &[]).await;
    assert_eq!(read.status, StatusCode::GONE);
    let events = receiver_support::events_of(&nats, "c1").await;
    assert_eq!(events.len(), 1, "only the tombstone is left: {events:?}");
    let erasure = events[0].erasure.as_ref().unwrap();
    assert_eq!(
        (erasure.requested_by.as_str(), erasure.reason.as_str()),
        ("dpo@example.com", "ticket 12")
    );
}

#[tokio::test]
async fn erasing_again_purges_nothing_more_and_unknown_keys_or_requests_without_a_reason_are_refused()
 {
    let nats = testbed::NatsServer::start().await.unwrap();
    let router = receiver_support::open_receiver(&nats).await;
    receiver_support::put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let first = erase_in(&router, "c1", REQUEST).await;
    let second = erase_in(&router, "c1", REQUEST).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["version"], first.body["version"]);
    assert_eq!(second.body["sequence"], first.body["sequence"]);
    assert_eq!(second.body["purged"], 0);
    assert_eq!(receiver_support::stream_messages(&nats).await, 1);

    let unknown = erase_in(&router, "nobody", REQUEST).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    for body in [
        r#"{"requestedBy": "dpo"}"#,
        r#"{"requestedBy": " ", "reason": "x"}"#,
        "[]",
    ] {
        let refused = erase_in(&router, "c1", body).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            refused.body
        );
    }
}

#[tokio::test]
async fn a_stream_created_denying_purge_keeps_it_and_refuses_erasure_before_appending_anything() {
    let nats = testbed::NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let names = receiver_support::names();
    let entity = receiver_support::entity();
    let mut old = runtime::store::jetstream::stream_config(&names, &entity.spec.stream).unwrap();
    old.deny_purge = true;
    async_nats::jetstream::new(client.clone())
        .create_stream(old)
        .await
        .unwrap();

    let (router, _, _) = receiver_support::receiver_of(&nats, entity, Tokens::default()).await;
    receiver_support::put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let refused = erase_in(&router, "c1", REQUEST).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    let events = receiver_support::events_of(&nats, "c1").await;
    assert_eq!(events.len(), 1);
    assert!(!events[0].is_tombstone());
}

#[tokio::test]
async fn a_nats_sink_republishes_the_tombstone_even_when_its_filters_drop_the_key_and_scrubs_its_dead_letters()
 {
    let mut bed = Bed::start(2).await;
    let receiver = receiver(&bed).await;
    let js = async_nats::jetstream::new(bed.client.clone());
    let mut out = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "vip_out".into(),
            subjects: vec!["vip.customers".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let vips = projection(
        "vips",
        "  filters:\n    - where: \"state.spend > 100\"\n  sink:\n    nats: {subject: vip.customers}\n",
    );
    let replica = bed.replica(&vips, "r1", fast_options()).await;
    bed.producer
        .publish([
            ("rich".to_owned(), Some(json!({"id": "rich", "spend": 500}))),
            // A spend CEL cannot compare with 100: a dead letter holding the person's data.
            (
                "odd".to_owned(),
                Some(json!({"id": "odd", "spend": SECRET_NAME})),
            ),
            ("poor".to_owned(), Some(json!({"id": "poor", "spend": 1}))),
        ])
        .await;
    bed.caught_up(&bed.pool, &vips, Duration::from_secs(30))
        .await;
    let dead = |key: &'static str| {
        let pool = bed.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from dp_dead_letters where key = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(dead("odd").await, 1);

    let mut tombstones = Vec::new();
    for key in ["odd", "poor"] {
        let (_, sequence) = erase(&receiver, key).await;
        tombstones.push((key, sequence));
    }
    for (key, sequence) in &tombstones {
        let partition = Key::new(*key).unwrap().partition(bed.partitions);
        let last = bed.producer.last_sequence.entry(partition).or_default();
        *last = (*last).max(*sequence);
    }
    bed.caught_up(&bed.pool, &vips, Duration::from_secs(30))
        .await;
    replica.stop().await;

    assert_eq!(
        dead("odd").await,
        0,
        "the dead letter of the erased key is scrubbed"
    );
    assert_eq!(
        out.info().await.unwrap().state.messages,
        3,
        "rich, and both tombstones"
    );
    let consumer = out
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut republished = Vec::new();
    for _ in 0..3 {
        let message = futures::StreamExt::next(&mut messages)
            .await
            .unwrap()
            .unwrap();
        let event: Event = serde_json::from_slice(&message.payload).unwrap();
        republished.push((event.key.clone(), event.is_tombstone()));
    }
    republished.sort();
    assert_eq!(
        republished,
        [
            ("odd".to_owned(), true),
            ("poor".to_owned(), true),
            ("rich".to_owned(), false)
        ]
    );
}

#[tokio::test]
async fn dreampipe_erase_asks_the_receiver_and_fails_naming_its_answer() {
    let nats = testbed::NatsServer::start().await.unwrap();
    let router = receiver_support::open_receiver(&nats).await;
    receiver_support::put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn({
        let router = router.clone();
        async move { axum::serve(listener, router).await }
    });
    let args = |key: &str| runtime::erase::Args {
        receiver_url: format!("http://{address}/"),
        receiver_token_file: None,
        file: None,
        entity: Some("customer".into()),
        key: Some(key.into()),
        requested_by: Some("dpo@example.com".into()),
        reason: Some("ticket 12".into()),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    runtime::erase::run(args("c1"), stop.clone()).await.unwrap();
    let events = receiver_support::events_of(&nats, "c1").await;
    assert_eq!(events.len(), 1);
    assert!(events[0].is_tombstone());

    let error = runtime::erase::run(args("nobody"), stop.clone())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the receiver answered 404 Not Found"),
        "{error}"
    );

    // The example's Erasure resource, as `kubectl apply` takes it, carried out by `-f`.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/salesforce/erasure/forget-a-customer.yaml");
    let erasure: crds::Erasure =
        serde_yaml::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let key = erasure.spec.key.clone();
    receiver_support::put(&router, &key, json!({"id": key, "name": "Acme"})).await;
    let from_file = runtime::erase::Args {
        file: Some(example),
        entity: None,
        key: None,
        requested_by: None,
        reason: None,
        ..args("unused")
    };
    runtime::erase::run(from_file, stop.clone()).await.unwrap();
    let events = receiver_support::events_of(&nats, &key).await;
    assert_eq!(events.len(), 1);
    let recorded = events[0].erasure.as_ref().expect("a tombstone");
    assert_eq!(recorded.requested_by, erasure.spec.requested_by);
    assert_eq!(recorded.reason, erasure.spec.reason);

    // A file that is no Erasure is refused before anything is sent.
    let not_erasure = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        not_erasure.path(),
        "apiVersion: dreampipe.io/v1alpha1\nkind: Erasure\nmetadata: {name: x}\nspec: {entity: customer, key: c9, requestedBy: ' ', reason: why}\n",
    )
    .unwrap();
    let refused = runtime::erase::Args {
        file: Some(not_erasure.path().to_owned()),
        ..args("unused")
    };
    let error = runtime::erase::run(refused, stop).await.unwrap_err();
    assert!(
        process::error_chain(&error).contains("spec.requestedBy"),
        "{}",
        process::error_chain(&error)
    );
    server.abort();
}

/// The operator's way (ADR 76): an `Erasure` is carried out by asking a receiver over NATS
/// request-reply, and followed through each projector's report until every generation has
/// applied the tombstone. Here with the operator's own eraser and progress rule, against a
/// real receiver and a real projector.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_asked_over_nats_is_carried_out_and_followed_until_the_projection_is_scrubbed() {
    use crds::erasure::{ErasureCommand, ErasureReply, Tombstone};
    use operator::erasures::{EraseError, Eraser, NatsEraser};
    use operator::status::erasure::projection_erasure;

    let mut bed = Bed::start(2).await;
    let client = bed.nats.client().await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let model = EntityModel::new(&projector_support::entity(bed.partitions)).unwrap();
    let receiver = Arc::new(Receiver::open(&client, model, metrics).await.unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let answering = runtime::receiver::erase::answer_erasures(
        receiver.clone(),
        client.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();

    let latest = projection("customers", LATEST_V1);
    let replica = bed.replica(&latest, "customers", fast_options()).await;
    let mut rng = fastrand::Rng::with_seed(76);
    let mut changes = random_changes(&mut rng, 50, 200);
    let secret = json!({"id": ERASED[0], "name": SECRET_NAME, "city": SECRET_CITY, "active": true, "spend": 5});
    changes.insert(17, (ERASED[0].to_owned(), Some(secret)));
    bed.producer.publish(changes).await;
    bed.caught_up(&bed.pool, &latest, Duration::from_secs(60))
        .await;
    wait_until(Duration::from_secs(30), "the view to go live", || async {
        view_exists(&bed.pool, "customers").await
    })
    .await;
    assert!(
        rows(&bed.pool, "customers")
            .await
            .iter()
            .any(|row| row.contains(SECRET_NAME)),
        "before the erasure the view holds the key"
    );

    let eraser = NatsEraser::new(bed.nats.client().await.unwrap());
    let command = |key: &str| ErasureCommand {
        key: key.to_owned(),
        requested_by: "privacy@example.com".to_owned(),
        reason: "GDPR art. 17 request 4711".to_owned(),
    };
    let reply = eraser
        .erase("default".into(), "customer".into(), command(ERASED[0]))
        .await
        .unwrap();
    let ErasureReply::Erased {
        version,
        sequence,
        partition,
        purged,
    } = reply
    else {
        panic!("the receiver refused: {reply:?}");
    };
    assert_eq!(purged, 1, "the key's one event left the stream");
    assert_eq!(version, 2, "the tombstone follows the key's one event");
    assert_eq!(
        partition,
        Key::new(ERASED[0]).unwrap().partition(bed.partitions)
    );
    let tombstone = Tombstone {
        version,
        sequence,
        partition,
    };

    // Asked again (a status the operator could not write): nothing more is purged, the same
    // tombstone is named.
    let again = eraser
        .erase("default".into(), "customer".into(), command(ERASED[0]))
        .await
        .unwrap();
    assert_eq!(
        again,
        ErasureReply::Erased {
            version,
            sequence,
            partition,
            purged: 0
        }
    );

    // The operator's progress rule over the real projector's report.
    wait_until(
        Duration::from_secs(30),
        "the projection to apply the tombstone",
        || async {
            let report = replica.status.report().await.unwrap();
            projection_erasure("customers", &tombstone, Ok(&report)).scrubbed
        },
    )
    .await;
    let view = rows(&bed.pool, "customers").await;
    assert!(
        view.iter()
            .all(|row| !row.contains(SECRET_NAME) && !row.contains(ERASED[0])),
        "a scrubbed projection holds nothing of the key: {view:?}"
    );

    // A key without events is refused as the HTTP API refuses it, and nothing is appended.
    let before = stream_payloads(&bed).await.len();
    let unknown = eraser
        .erase("default".into(), "customer".into(), command("never-seen"))
        .await
        .unwrap();
    assert!(
        matches!(&unknown, ErasureReply::Problem { status: 404, detail, .. } if detail.contains("never-seen")),
        "{unknown:?}"
    );
    assert_eq!(stream_payloads(&bed).await.len(), before);

    // An Entity without a running receiver: no responders, said so by subject.
    let nobody = eraser
        .erase("default".into(), "order".into(), command("o-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&nobody, EraseError::NoReceiver { subject, .. } if subject == "dreampipe.erasure.default.order"),
        "{nobody:?}"
    );

    replica.stop().await;
    shutdown.cancel();
    answering.await.unwrap();
}
