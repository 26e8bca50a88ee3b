//! Crash safety: the projector is aborted at random points of a 50k-event run, 20 times.
//! After every crash the view equals the replay of exactly the events its checkpoints cover
//! (nothing lost, nothing applied twice), and the final view equals a fresh replay. A
//! partition's first pass, from the start, reads each key's latest event only (ADR 82); every
//! pass after reads every event after its checkpoint.

mod projector_support;

use std::collections::BTreeMap;
use std::time::Duration;

use projector_support::*;
use runtime::expr::Evaluator;
use runtime::projector::Plan;
use runtime::projector::rows::{Effect, effect, sql_text};
use sqlx::PgPool;

const SPEC: &str = "  filters:\n    - where: \"state.active || state.spend > 400\"\n    - set: {label: \"state.city + ':' + string(state.spend)\"}\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: city, type: text}, {name: label, type: text}]\n";

type Row = (String, i64, Option<String>, Option<String>, Option<String>);

/// Each logged event's effect on the view (computed once; they are deterministic).
fn effects(plan: &Plan, log: &[(u32, u64, runtime::store::Event)]) -> Vec<Effect> {
    let view = plan.postgres().unwrap();
    let evaluator = Evaluator::default();
    log.iter()
        .map(|(_, _, event)| effect(plan, view, &evaluator, event).unwrap())
        .collect()
}

/// How far each partition's first pass (from the start, reading only each key's latest
/// event) went: the checkpoint it left, having read everything the stream held then.
type FirstPass = BTreeMap<u32, u64>;

/// The rows a replay of the events up to each partition's checkpoint gives, computed in memory:
/// up to the end of its first pass only the keys' latest events, then every event.
fn expected(
    log: &[(u32, u64, runtime::store::Event)],
    effects: &[Effect],
    checkpoints: &BTreeMap<u32, u64>,
    first_pass: &FirstPass,
) -> Vec<Row> {
    // The first pass read each key's latest event of those in the stream when it began.
    let first_pass_over = |partition: &u32| first_pass.get(partition).copied().unwrap_or(0);
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for (partition, sequence, event) in log {
        if *sequence <= first_pass_over(partition) {
            latest.insert(event.key.as_str(), *sequence);
        }
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for ((partition, sequence, event), effect) in log.iter().zip(effects) {
        if *sequence > checkpoints.get(partition).copied().unwrap_or(0) {
            continue;
        }
        let in_first_pass = *sequence <= first_pass_over(partition);
        if in_first_pass && latest.get(event.key.as_str()) != Some(sequence) {
            continue;
        }
        match effect {
            Effect::Row(values) => {
                let text: Vec<Option<String>> = values.iter().map(|v| sql_text(v, false)).collect();
                rows.insert(
                    event.key.clone(),
                    (
                        event.key.clone(),
                        event.version as i64,
                        text[0].clone(),
                        text[1].clone(),
                        text[2].clone(),
                    ),
                );
            }
            Effect::Remove | Effect::Nothing | Effect::Erase => {
                rows.remove(&event.key);
            }
        }
    }
    rows.into_values().collect()
}

/// The table and the checkpoints, read in one snapshot.
async fn snapshot(pool: &PgPool, plan: &Plan) -> (Vec<Row>, BTreeMap<u32, u64>) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("set transaction isolation level repeatable read")
        .execute(&mut *tx)
        .await
        .unwrap();
    let checkpoints: Vec<(i32, i64)> = sqlx::query_as(
        "select partition, sequence from dp_checkpoints where projection = $1 and generation = $2",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select dp_key, dp_version, name, city, label from \"{}\" order by dp_key",
        plan.postgres().unwrap().table
    )))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut rows = rows;
    rows.sort();
    (
        rows,
        checkpoints
            .into_iter()
            .map(|(p, s)| (p as u32, s as u64))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_the_projector_20_times_in_a_50k_event_run_never_loses_or_repeats_an_event() {
    let mut bed = Bed::start(4).await;
    let projection = projection("customers", SPEC);
    let plan = Plan::new(&projection, 4).unwrap();
    let seed = fastrand::u64(..);
    eprintln!("crash points seeded with {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut options = fast_options();
    options.worker.batch_size = 200; // more commits, more places to be cut off

    // A pass from the start reads each key's latest event only (ADR 82), and quickly: the
    // first pass runs over a first 500 changes, so that the crashes below cut passes that
    // read every event.
    bed.producer
        .publish(random_changes(&mut rng, 5000, 500))
        .await;
    let replica = bed.replica(&projection, "r1", options.clone()).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(60))
        .await;
    replica.crash().await;
    let (_, mut first_pass) = snapshot(&bed.pool, &plan).await;
    assert_eq!(first_pass.len(), 4, "every partition passed once");
    bed.producer
        .publish(random_changes(&mut rng, 5000, 50_000))
        .await;
    assert!(bed.producer.published > 49_500);
    let effects = effects(&plan, &bed.producer.log);
    let (first_rows, checkpoints) = snapshot(&bed.pool, &plan).await;
    assert_eq!(
        first_rows,
        expected(&bed.producer.log, &effects, &checkpoints, &first_pass),
        "the first pass applied each key's latest event of those it read"
    );

    let mut progressed = vec![checkpoints.values().sum::<u64>()];
    let total: u64 = bed.producer.last_sequence.values().sum();
    for crash in 0..20 {
        let replica = bed.replica(&projection, "r1", options.clone()).await;
        // Crash at a random instant once this run is under way (whatever the machine's speed).
        let before = *progressed.last().unwrap();
        wait_until(Duration::from_secs(30), "progress", || async {
            let sum: i64 = sqlx::query_scalar(
                "select coalesce(sum(sequence), 0)::bigint from dp_checkpoints where generation = $1",
            )
            .bind(&plan.generation)
            .fetch_one(&bed.pool)
            .await
            .unwrap_or(0); // the tables appear with the first start
            sum as u64 > before || sum as u64 == total
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..150))).await;
        replica.crash().await;
        let (rows, checkpoints) = snapshot(&bed.pool, &plan).await;
        for (partition, checkpoint) in &checkpoints {
            // A partition still at 0 starts its next pass from the start again.
            let first = first_pass.entry(*partition).or_default();
            if *first == 0 {
                *first = *checkpoint;
            }
        }
        let want = expected(&bed.producer.log, &effects, &checkpoints, &first_pass);
        assert!(
            rows == want,
            "after crash {crash} (checkpoints {checkpoints:?}) the view holds {} rows, a replay of what the checkpoints cover holds {}",
            rows.len(),
            want.len()
        );
        progressed.push(checkpoints.values().sum::<u64>());
    }
    eprintln!("sum of checkpoints after each crash: {progressed:?}");
    assert!(
        progressed.windows(2).all(|w| w[0] <= w[1]),
        "checkpoints never go back"
    );
    let mid_run = progressed.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(
        mid_run >= 10,
        "most crashes should cut a run that was making progress"
    );

    let replica = bed.replica(&projection, "r1", options).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(120))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "customers")
    })
    .await;
    let view = rows(&bed.pool, "customers").await;
    replica.stop().await;
    let (final_rows, checkpoints) = snapshot(&bed.pool, &plan).await;
    assert_eq!(
        final_rows,
        expected(&bed.producer.log, &effects, &checkpoints, &first_pass)
    );
    let fresh = bed.fresh_replay(&projection, "customers").await;
    assert!(!fresh.is_empty());
    assert!(view == fresh, "the final view differs from a fresh replay");
}
