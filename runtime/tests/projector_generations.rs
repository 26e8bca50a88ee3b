//! Changing a filter builds a new generation beside the serving one and switches the stable
//! view to it with no downtime, while events keep arriving.

mod projector_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use projector_support::*;
use runtime::projector::Plan;

const COLUMNS: &str = "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: spend, type: bigint}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_filter_swaps_generations_while_readers_never_see_an_error_or_an_empty_view() {
    let mut bed = Bed::start(4).await;
    let v1 = projection(
        "customers",
        &format!("  filters:\n    - where: \"state.active\"\n{COLUMNS}"),
    );
    let v2 = projection(
        "customers",
        &format!(
            "  filters:\n    - where: \"state.spend > 100\"\n    - set: {{city: \"'in ' + state.city\"}}\n{COLUMNS}"
        ),
    );
    let (g1, g2) = (Plan::new(&v1, 4).unwrap(), Plan::new(&v2, 4).unwrap());
    assert_ne!(g1.generation, g2.generation);

    let old = bed.replica(&v1, "old-pod", fast_options()).await;
    let mut rng = fastrand::Rng::with_seed(3);
    bed.producer
        .publish(random_changes(&mut rng, 1000, 4000))
        .await;
    bed.caught_up(&bed.pool, &v1, Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(10), "generation 1 to serve", || {
        view_exists(&bed.pool, "customers")
    })
    .await;

    // A reader queries the stable view throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let pool = bed.database.pool_in_schema(SCHEMA).await.unwrap();
        let (stop, reads) = (stop.clone(), reads.clone());
        tokio::spawn(async move {
            let mut problems = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match sqlx::query_scalar::<_, i64>("select count(*) from customers")
                    .fetch_one(&pool)
                    .await
                {
                    Ok(0) => problems.push("the view was empty".to_owned()),
                    Ok(_) => {}
                    Err(error) => problems.push(error.to_string()),
                }
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            problems
        })
    };

    // Events keep arriving while the new generation builds and takes over.
    let writer = {
        let mut producer =
            std::mem::replace(&mut bed.producer, Producer::new(&bed.client, 4).await);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(4);
            while !stop.load(Ordering::SeqCst) {
                producer.publish(random_changes(&mut rng, 1000, 100)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            producer
        })
    };

    // A rolling update: the new pod starts beside the old one, then the old one goes.
    let new = bed.replica(&v2, "new-pod", fast_options()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.stop().await;
    wait_until(
        Duration::from_secs(60),
        "generation 2 to go live",
        || async {
            let report = new.status.report().await.unwrap();
            report.active_generation.as_deref() == Some(g2.generation.as_str())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    bed.producer = writer.await.unwrap();
    let problems = reader.await.unwrap();
    assert!(reads.load(Ordering::SeqCst) > 20, "the reader kept reading");
    assert!(problems.is_empty(), "readers saw: {problems:?}");

    bed.caught_up(&bed.pool, &v2, Duration::from_secs(60)).await;
    let view = rows(&bed.pool, "customers").await;
    let g1_table = g1.postgres().unwrap().table.clone();
    wait_until(
        Duration::from_secs(20),
        "the retired table to be dropped",
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
    new.stop().await;

    let fresh = bed.fresh_replay(&v2, "customers").await;
    assert!(!fresh.is_empty());
    assert!(
        view == fresh,
        "the swapped view differs from a fresh replay of the new definition"
    );
    assert!(
        view.iter().all(|row| row.contains("\"city\": \"in ")),
        "rows come from the new definition"
    );
}

#[tokio::test]
async fn a_build_from_the_start_reads_each_keys_latest_event_and_a_history_view_every_event() {
    let mut bed = Bed::start(2).await;
    let mut rng = fastrand::Rng::with_seed(11);
    bed.producer
        .publish(random_changes(&mut rng, 40, 600))
        .await;
    let log: Vec<_> = bed.producer.log.iter().map(|(_, _, e)| e.clone()).collect();
    let keys: std::collections::BTreeSet<&str> = log.iter().map(|e| e.key.as_str()).collect();
    assert!(log.len() > 10 * keys.len(), "many events per key");

    let latest = projection("customers", &format!("  filters: []\n{COLUMNS}"));
    let history = projection(
        "customer-history",
        "  sink:\n    postgres:\n      view: customer_history\n      mode: history\n      columns: [{name: city, type: text}]\n",
    );
    let (latest_replica, history_replica) = (
        bed.replica(&latest, "r1", fast_options()).await,
        bed.replica(&history, "r2", fast_options()).await,
    );
    bed.caught_up(&bed.pool, &latest, Duration::from_secs(60))
        .await;
    bed.caught_up(&bed.pool, &history, Duration::from_secs(60))
        .await;
    let applied = |replica: &Replica, plan: &Plan| {
        let series = format!(
            "dreampipe_projector_events_total{{generation=\"{}\",outcome=\"applied\"}}",
            plan.generation
        );
        sample(&replica.scrape(), &series).unwrap_or_else(|| panic!("no {series}"))
    };
    let (latest_plan, history_plan) = (
        Plan::new(&latest, 2).unwrap(),
        Plan::new(&history, 2).unwrap(),
    );
    assert_eq!(
        applied(&latest_replica, &latest_plan),
        keys.len() as f64,
        "the latest view read one event per key"
    );
    assert_eq!(
        applied(&history_replica, &history_plan),
        log.len() as f64,
        "the history view read every event"
    );

    // The latest view holds every live key at its latest version, as a full read would.
    let table = &latest_plan.postgres().unwrap().table;
    let versions: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select dp_key, dp_version from \"{table}\" order by dp_key"
    )))
    .fetch_all(&bed.pool)
    .await
    .unwrap();
    let mut expected: Vec<(String, i64)> = bed
        .producer
        .states()
        .keys()
        .map(|key| {
            let last = log.iter().rev().find(|e| &e.key == key).unwrap();
            (key.clone(), last.version as i64)
        })
        .collect();
    expected.sort();
    assert_eq!(versions, expected);
    let history_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from \"{}\"",
        history_plan.postgres().unwrap().table
    )))
    .fetch_one(&bed.pool)
    .await
    .unwrap();
    assert_eq!(history_rows, log.len() as i64);

    // Events after the build are all read, one by one, as they arrive.
    let before = applied(&latest_replica, &latest_plan);
    bed.producer.publish(random_changes(&mut rng, 40, 30)).await;
    bed.caught_up(&bed.pool, &latest, Duration::from_secs(60))
        .await;
    let arrived = bed.producer.log.len() - log.len();
    assert_eq!(
        applied(&latest_replica, &latest_plan) - before,
        arrived as f64
    );
    latest_replica.stop().await;
    history_replica.stop().await;
}
