//! Values Postgres refuses (NUL in text or jsonb, numbers out of range, text a typed column
//! cannot cast), against real NATS JetStream and Postgres: they land in the dead letters
//! whatever they hold, their partition moves on, and a partition that cannot move says so.

mod projector_support;

use std::time::Duration;

use crds::projection::Phase;
use crds::report::ProjectorReport;
use projector_support::*;
use runtime::projector::Plan;
use runtime::store::{Event, Key};
use serde_json::{Value, json};
use sqlx::PgPool;

fn change(key: &str, state: Value) -> (String, Option<Value>) {
    (key.to_owned(), Some(state))
}

/// A row of `dp_dead_letters` as the tests read it.
#[derive(Debug)]
struct Letter {
    sequence: i64,
    key: Option<String>,
    reason: String,
    kept_as_json: bool,
    message: Vec<u8>,
}

async fn dead_letters(pool: &PgPool, projection: &str) -> Vec<Letter> {
    sqlx::query_as::<_, (i64, Option<String>, String, bool, Option<Vec<u8>>)>(
        "select sequence, key, reason, event is not null, message from dp_dead_letters
         where projection = $1 order by sequence",
    )
    .bind(projection)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(sequence, key, reason, kept_as_json, message)| Letter {
        sequence,
        key,
        reason,
        kept_as_json,
        message: message.expect("every dead letter keeps its message"),
    })
    .collect()
}

/// `n` keys of `partition` (of 2) that start with `prefix`.
fn keys_of_partition(prefix: &str, partition: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| Key::new(k.as_str()).unwrap().partition(2) == partition)
        .take(n)
        .collect()
}

async fn report(replica: &Replica) -> ProjectorReport {
    replica.status.report().await.unwrap()
}

#[tokio::test]
async fn every_value_postgres_refuses_is_dead_lettered_and_the_first_generation_goes_live_past_it()
{
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "customers",
        "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: spend, type: integer}, {name: born, type: date}, {name: tags, type: jsonb}]\n",
    );
    let good = |i: usize| {
        change(
            &format!("k{i}"),
            json!({"id": format!("k{i}"), "name": format!("customer {i}"), "city": "Lyon",
                   "spend": i, "born": "1990-01-02", "tags": {"n": i}}),
        )
    };
    // All of it is in the stream before the projector starts: its first generation has to
    // build past the refused values to go live at all.
    bed.producer.publish((0..20).map(good)).await;
    let refused = [
        (
            "nul1",
            json!({"id": "nul1", "name": "a\u{0}b", "city": "Paris"}),
            "invalid byte sequence for encoding \"UTF8\": 0x00",
        ),
        (
            "nultags",
            json!({"id": "nultags", "tags": {"note": "a\u{0}"}}),
            "unsupported Unicode escape sequence",
        ),
        (
            "big",
            json!({"id": "big", "spend": 12_345_678_901_i64}),
            "out of range for type integer",
        ),
        (
            "baddate",
            json!({"id": "baddate", "born": "the 31st of never"}),
            "invalid input syntax for type date",
        ),
    ];
    bed.producer
        .publish(refused.iter().map(|(k, s, _)| change(k, s.clone())))
        .await;
    // Written by a producer other than the receiver (which refuses control characters in keys).
    let mut nul_key = bed
        .producer
        .event("nulkey", Some(json!({"id": "n\u{0}l"})))
        .unwrap();
    nul_key.key = "n\u{0}l".into();
    let nul_key_payload = serde_json::to_vec(&nul_key).unwrap();
    let nul_key_sequence = bed
        .producer
        .publish_payload("nulkey", nul_key_payload.clone())
        .await;
    bed.producer.publish((20..40).map(good)).await;

    let replica = bed.replica(&projection, "r1", fast_options()).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(
        Duration::from_secs(10),
        "the first generation to go live",
        || view_exists(&bed.pool, "customers"),
    )
    .await;
    let keys: Vec<String> = sqlx::query_scalar("select dp_key from customers order by dp_key")
        .fetch_all(&bed.pool)
        .await
        .unwrap();
    let mut expected: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "every good key of both partitions is in the view, and no refused one"
    );

    let letters = dead_letters(&bed.pool, "default/customers").await;
    assert_eq!(
        letters.len(),
        5,
        "one dead letter per refused event: {letters:#?}"
    );
    for (key, state, postgres_says) in &refused {
        let letter = letters
            .iter()
            .find(|l| l.key.as_deref() == Some(*key))
            .unwrap_or_else(|| panic!("no dead letter for {key}: {letters:#?}"));
        assert!(
            letter
                .reason
                .contains("the database rejected the row (SQLSTATE 22")
                && letter.reason.contains(postgres_says),
            "{key}: {}",
            letter.reason
        );
        let kept: Event = serde_json::from_slice(&letter.message).unwrap();
        assert_eq!(
            kept.state.as_ref(),
            Some(state),
            "{key}: the event is kept whole"
        );
    }
    let by_key = letters
        .iter()
        .find(|l| l.sequence == nul_key_sequence as i64)
        .unwrap();
    assert_eq!(
        by_key.key.as_deref(),
        Some("n\\u0000l"),
        "a NUL in the key is written as \\u0000"
    );
    assert_eq!(
        by_key.message, nul_key_payload,
        "the message is kept byte for byte"
    );
    assert!(by_key.reason.contains("0x00"), "{}", by_key.reason);
    let as_json: Vec<(Option<&str>, bool)> = letters
        .iter()
        .map(|l| (l.key.as_deref(), l.kept_as_json))
        .collect();
    assert_eq!(
        as_json,
        [
            (Some("nul1"), false),
            (Some("nultags"), false),
            (Some("big"), true),
            (Some("baddate"), true),
            (Some("n\\u0000l"), false),
        ],
        "jsonb holds every event but those with NUL"
    );

    let report = report(&replica).await;
    let generation = &report.generations[0];
    assert_eq!(
        (generation.phase, generation.lag, generation.dead_letters),
        (Phase::Live, 0, 5),
        "{generation:#?}"
    );
    assert_eq!(
        report.active_generation.as_deref(),
        Some(generation.generation.as_str())
    );
    assert_eq!(
        report.lag_seconds,
        Some(0.0),
        "caught up: not behind in time"
    );
    let name = generation.generation.clone();
    let scraped = replica.scrape();
    assert_eq!(
        sample(
            &scraped,
            &format!(
                "dreampipe_projector_dead_letters_total{{generation=\"{name}\",reason=\"sink_rejected\"}}"
            )
        ),
        Some(5.0),
        "dead letters are counted by reason:\n{scraped}"
    );
    for partition in 0..2 {
        assert_eq!(
            sample(
                &scraped,
                &format!(
                    "dreampipe_projector_lag_seconds{{generation=\"{name}\",partition=\"{partition}\"}}"
                )
            ),
            Some(0.0),
            "a partition that caught up is 0 s behind:\n{scraped}"
        );
    }
    wait_until(
        Duration::from_secs(10),
        "the live generation's build progress to leave the metrics",
        || async {
            !replica
                .scrape()
                .contains("dreampipe_projector_build_progress_ratio{")
        },
    )
    .await;

    // The same kinds of value, arriving while the view is live, go the same way.
    bed.producer
        .publish([
            change("nul2", json!({"id": "nul2", "city": "Ly\u{0}on"})),
            change("big2", json!({"id": "big2", "spend": -3_000_000_000_i64})),
            change("baddate2", json!({"id": "baddate2", "born": "2026-02-30"})),
        ])
        .await;
    bed.producer.publish((40..45).map(good)).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    let live: i64 = sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&bed.pool)
        .await
        .unwrap();
    assert_eq!(
        live, 45,
        "the good keys that came later are in the view too"
    );
    let later: Vec<Option<String>> = dead_letters(&bed.pool, "default/customers")
        .await
        .into_iter()
        .skip(5)
        .map(|l| l.key)
        .collect();
    assert_eq!(
        later,
        [
            Some("nul2".into()),
            Some("big2".into()),
            Some("baddate2".into())
        ]
    );
    let generation = &replica.status.report().await.unwrap().generations[0];
    assert_eq!(
        (generation.phase, generation.lag, generation.dead_letters),
        (Phase::Live, 0, 8),
        "{generation:#?}"
    );
    replica.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_history_or_an_aggregate_view_is_dead_lettered_and_the_rest_is_applied() {
    let mut bed = Bed::start(2).await;
    let history = projection(
        "changes",
        "  sink:\n    postgres:\n      view: customer_changes\n      mode: history\n      columns: [{name: city, type: text}]\n",
    );
    let by_city = projection(
        "by-city",
        "  sink:\n    postgres:\n      view: customers_by_city\n      mode: aggregate\n      columns: [{name: city, type: text}]\n      groupBy: [city]\n      aggregates: [{name: customers, function: count}]\n",
    );
    let replicas = [
        bed.replica(&history, "r1", fast_options()).await,
        bed.replica(&by_city, "r1", fast_options()).await,
    ];
    bed.producer
        .publish([
            change("a", json!({"id": "a", "city": "Lyon"})),
            change("b", json!({"id": "b", "city": "Oslo"})),
            change("nul", json!({"id": "nul", "city": "Pa\u{0}ris"})),
            change("c", json!({"id": "c", "city": "Lyon"})),
        ])
        .await;
    for projection in [&history, &by_city] {
        bed.caught_up(&bed.pool, projection, Duration::from_secs(30))
            .await;
    }
    for view in ["customer_changes", "customers_by_city"] {
        wait_until(Duration::from_secs(10), view, || {
            view_exists(&bed.pool, view)
        })
        .await;
    }
    let changes: Vec<(String, String)> =
        sqlx::query_as("select dp_key, city from customer_changes order by dp_sequence")
            .fetch_all(&bed.pool)
            .await
            .unwrap();
    assert_eq!(
        changes,
        [
            ("a".into(), "Lyon".into()),
            ("b".into(), "Oslo".into()),
            ("c".into(), "Lyon".into())
        ]
    );
    let cities: Vec<(String, i64)> =
        sqlx::query_as("select city, customers from customers_by_city order by city")
            .fetch_all(&bed.pool)
            .await
            .unwrap();
    assert_eq!(cities, [("Lyon".into(), 2), ("Oslo".into(), 1)]);
    for (projection, postgres_says) in [
        ("default/changes", "0x00"),
        ("default/by-city", "unsupported Unicode escape sequence"),
    ] {
        let letters = dead_letters(&bed.pool, projection).await;
        assert_eq!(letters.len(), 1, "{projection}: {letters:#?}");
        assert_eq!(letters[0].key.as_deref(), Some("nul"));
        assert!(
            letters[0].reason.contains(postgres_says),
            "{projection}: {}",
            letters[0].reason
        );
    }
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test]
async fn on_error_skip_drops_a_refused_value_without_a_dead_letter() {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "lenient",
        "  onError: Skip\n  sink:\n    postgres:\n      view: lenient\n      columns: [{name: name, type: text}]\n",
    );
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    bed.producer
        .publish([
            change("a", json!({"id": "a", "name": "Ada"})),
            change("nul", json!({"id": "nul", "name": "a\u{0}b"})),
            change("b", json!({"id": "b", "name": "Bob"})),
        ])
        .await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "lenient")
    })
    .await;
    let keys: Vec<String> = sqlx::query_scalar("select dp_key from lenient order by dp_key")
        .fetch_all(&bed.pool)
        .await
        .unwrap();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(dead_letters(&bed.pool, "default/lenient").await.len(), 0);
    let generation = &report(&replica).await.generations[0];
    assert_eq!((generation.phase, generation.lag), (Phase::Live, 0));
    replica.stop().await;
}

#[tokio::test]
async fn on_error_stop_at_a_refused_value_is_degraded_and_its_lag_keeps_growing() {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "strict",
        "  onError: Stop\n  sink:\n    postgres:\n      view: strict\n      columns: [{name: name, type: text}]\n",
    );
    let plan = Plan::new(&projection, 2).unwrap();
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    let stopped_partition = Key::new("nul1").unwrap().partition(2);
    let same = keys_of_partition("s", stopped_partition, 8);
    let other = keys_of_partition("o", 1 - stopped_partition, 4);
    let named = |k: &String| change(k, json!({"id": k, "name": "fine"}));
    bed.producer.publish(other.iter().map(named)).await;
    bed.producer.publish(same[..2].iter().map(named)).await;
    bed.producer
        .publish([change("nul1", json!({"id": "nul1", "name": "a\u{0}b"}))])
        .await;
    bed.producer.publish(same[2..4].iter().map(named)).await;

    let mut healthy = bed.producer.last_sequence.clone();
    healthy.remove(&stopped_partition);
    wait_for_checkpoints(&bed.pool, &plan, &healthy, Duration::from_secs(30)).await;
    wait_until(
        Duration::from_secs(10),
        "the stop to be reported",
        || async { report(&replica).await.generations[0].phase == Phase::Degraded },
    )
    .await;
    let partition_lag = |report: &ProjectorReport| {
        report.generations[0].partitions[stopped_partition as usize]
            .lag
            .unwrap_or_default()
    };
    let before = report(&replica).await;
    let stopped = &before.generations[0].partitions[stopped_partition as usize];
    assert!(
        stopped
            .stopped
            .as_deref()
            .unwrap_or_default()
            .contains("the database rejected the row (SQLSTATE 22021)"),
        "{stopped:?}"
    );
    assert_eq!(
        partition_lag(&before),
        3,
        "the refused event and the two after it wait"
    );
    // Behind in time too: the refused event's age, as the report and the metrics tell it.
    let generation = before.generations[0].generation.clone();
    let lag_seconds_of = |partition: u32| {
        format!(
            "dreampipe_projector_lag_seconds{{generation=\"{generation}\",partition=\"{partition}\"}}"
        )
    };
    let stopped_series = lag_seconds_of(stopped_partition);
    wait_until(
        Duration::from_secs(10),
        "the stopped partition's lag in seconds to be exported",
        || async { sample(&replica.scrape(), &stopped_series).is_some_and(|s| s > 0.0) },
    )
    .await;
    let first_age = before
        .lag_seconds
        .expect("the report tells the lag in seconds");
    assert!(first_age > 0.0, "{before:#?}");
    let scraped = replica.scrape();
    assert_eq!(
        sample(&scraped, &lag_seconds_of(1 - stopped_partition)),
        Some(0.0),
        "the partition that caught up is not behind:\n{scraped}"
    );
    assert_eq!(
        sample(
            &scraped,
            &format!(
                "dreampipe_projector_lag_events{{generation=\"{generation}\",partition=\"{stopped_partition}\"}}"
            )
        ),
        Some(3.0),
        "{scraped}"
    );
    let progress = sample(
        &scraped,
        &format!("dreampipe_projector_build_progress_ratio{{generation=\"{generation}\"}}"),
    )
    .expect("a generation that cannot catch up is still building");
    assert!((0.0..1.0).contains(&progress), "{scraped}");

    bed.producer.publish(same[4..].iter().map(named)).await;
    wait_until(
        Duration::from_secs(10),
        "the stopped partition's lag to grow by 4",
        || async { partition_lag(&report(&replica).await) == 7 },
    )
    .await;
    let after = report(&replica).await;
    assert!(
        after.lag_seconds.unwrap_or_default() > first_age,
        "the lag in seconds grows while the partition stands still: {:?} then {:?}",
        before.lag_seconds,
        after.lag_seconds
    );
    let generation = &after.generations[0];
    assert_eq!(
        (generation.phase, generation.lag, generation.dead_letters),
        (Phase::Degraded, 7, 0),
        "{generation:#?}"
    );
    let applied: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select dp_key from \"{}\" order by dp_key",
        plan.postgres().unwrap().table
    )))
    .fetch_all(&bed.pool)
    .await
    .unwrap();
    let mut expected: Vec<String> = other.iter().chain(&same[..2]).cloned().collect();
    expected.sort();
    assert_eq!(
        applied, expected,
        "nothing from the refused event on is applied in its partition"
    );
    let metrics = replica.metrics.clone();
    replica.stop().await;
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        !text.contains("dreampipe_projector_lag_seconds{"),
        "a stopped worker leaves no stale lag behind:\n{text}"
    );
}

#[tokio::test]
async fn a_partition_that_keeps_failing_is_degraded_with_its_lag_growing_and_recovers() {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "customers",
        "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n",
    );
    let plan = Plan::new(&projection, 2).unwrap();
    let table = plan.postgres().unwrap().table.clone();
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    let named = |i: usize| {
        change(
            &format!("k{i}"),
            json!({"id": format!("k{i}"), "name": "n"}),
        )
    };
    bed.producer.publish((0..10).map(named)).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "customers")
    })
    .await;

    // A server-side failure no event is to blame for: the table is gone.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter table \"{table}\" rename to moved_away"
    )))
    .execute(&bed.pool)
    .await
    .unwrap();
    bed.producer.publish((10..14).map(named)).await;
    let degraded_with_lag = |lag: u64| {
        let replica = &replica;
        async move {
            let report = report(replica).await;
            let generation = &report.generations[0];
            generation.phase == Phase::Degraded
                && generation.lag >= lag
                && generation.partitions.iter().any(|p| {
                    p.failing
                        .as_deref()
                        .is_some_and(|f| f.contains("does not exist"))
                })
        }
    };
    wait_until(
        Duration::from_secs(20),
        "the failing partitions to be reported with lag 4",
        || degraded_with_lag(4),
    )
    .await;
    bed.producer.publish((14..20).map(named)).await;
    wait_until(
        Duration::from_secs(30),
        "the lag to grow to 10 while nothing moves",
        || degraded_with_lag(10),
    )
    .await;
    assert_eq!(
        dead_letters(&bed.pool, "default/customers").await.len(),
        0,
        "a server-side failure is never the event's fault"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter table moved_away rename to \"{table}\""
    )))
    .execute(&bed.pool)
    .await
    .unwrap();
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    wait_until(
        Duration::from_secs(10),
        "the generation to be Live again",
        || async {
            let report = report(&replica).await;
            let generation = &report.generations[0];
            generation.phase == Phase::Live
                && generation.lag == 0
                && generation.partitions.iter().all(|p| p.failing.is_none())
        },
    )
    .await;
    assert_eq!(rows(&bed.pool, "customers").await.len(), 20);
    replica.stop().await;
}

#[tokio::test]
async fn a_database_of_an_earlier_release_gains_the_new_columns_and_keeps_its_dead_letters() {
    use runtime::projector::database::{self, Batch, DeadLetter, Progress};
    let database = testbed::TestDatabase::create().await.unwrap();
    let pool = database.pool_in_schema(SCHEMA).await.unwrap();
    // The two tables as the release before `message` and `failing` created them.
    for statement in [
        "create schema dp_default",
        "create table dp_checkpoints (projection text not null, generation text not null,
            partition integer not null, sequence bigint not null default 0,
            events bigint not null default 0, lag bigint, stopped text,
            updated_at timestamptz not null default now(),
            primary key (projection, generation, partition))",
        "create table dp_dead_letters (projection text not null, generation text not null,
            partition integer not null, sequence bigint not null, key text, version bigint,
            event jsonb, payload text, reason text not null,
            recorded_at timestamptz not null default now(),
            primary key (projection, generation, sequence))",
        "insert into dp_dead_letters (projection, generation, partition, sequence, key, event, reason)
         values ('default/customers', 'old', 0, 3, 'before', '{\"key\": \"before\"}', 'a filter failed')",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let schema = runtime::sql::Schema::of_namespace(NAMESPACE);
    database::prepare(&pool, &schema).await.unwrap();
    database::prepare(&pool, &schema).await.unwrap();

    let projection = projection(
        "customers",
        "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n",
    );
    let plan = Plan::new(&projection, 2).unwrap();
    database::register(&pool, &plan).await.unwrap();
    let fence = database::acquire(
        &pool,
        &plan.schema,
        &plan.projection,
        0,
        "r1",
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .unwrap();
    let message = br#"{"key":"nul1","state":{"name":"a\u0000b"}}"#;
    let letter = DeadLetter::new(
        9,
        Some("nul1".into()),
        Some(1),
        bytes::Bytes::from_static(message),
        "the database rejected the row",
    );
    let batch = Batch {
        partition: 0,
        fence: &fence,
        from: 0,
        rows: &[],
        dead_letters: &[letter],
        erased: &runtime::projector::rows::Erasures::default(),
        progress: Progress {
            sequence: 9,
            events: 1,
            lag: 0,
        },
        stopped: None,
    };
    database::commit(&pool, &plan, None, &batch).await.unwrap();
    assert_eq!(
        database::checkpoint(&pool, &plan, 0)
            .await
            .unwrap()
            .sequence,
        9
    );
    // key, event, payload, message
    type Stored = (String, Option<String>, Option<String>, Option<Vec<u8>>);
    let letters: Vec<Stored> = sqlx::query_as(
        "select key, event::text, payload, message from dp_dead_letters order by sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        letters,
        [
            (
                "before".into(),
                Some(r#"{"key": "before"}"#.into()),
                None,
                None
            ),
            (
                "nul1".into(),
                None,
                Some(String::from_utf8(message.to_vec()).unwrap()),
                Some(message.to_vec())
            ),
        ],
        "the old dead letter reads as before; the new one is kept whole"
    );
}
