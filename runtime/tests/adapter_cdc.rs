//! The postgres source (change data capture, ADR 79) against a real external Postgres with
//! `wal_level=logical`: existing rows first, then inserts, updates and deletes while the
//! adapter runs; the adapter process is killed with SIGKILL mid-stream and started again. In
//! the end the Entity's states equal the table's rows, and every key's versions are gap-free
//! with no change counted twice.

mod adapter_support;
mod role_support;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use adapter_support::{ENTITY, events_of, receiver};
use serde_json::{Value, json};
use testbed::{NatsServer, TestDatabase};
use tokio_util::sync::CancellationToken;

const ADAPTER: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {name: crm-cdc, namespace: shop}
spec:
  entity: customer
  interval: 200ms
  batchSize: 25
  source:
    postgres:
      urlSecretRef: {name: crm-db, key: url}
      table: crm.accounts
  mapping:
    id: record.id
    name: record.name
"#;

/// The adapter as its pod runs it: a `dreampipe adapter` process.
fn start_adapter(dir: &std::path::Path, receiver_url: &str, nats_url: &str) -> (Child, u16) {
    role_support::start(
        "adapter",
        dir,
        &[
            ("DREAMPIPE_NAMESPACE", "shop".to_owned()),
            ("DREAMPIPE_RECEIVER_URL", receiver_url.to_owned()),
            ("NATS_URL", nats_url.to_owned()),
            (
                "DREAMPIPE_SECRETS_DIR",
                dir.join("secrets").display().to_string(),
            ),
        ],
    )
}

/// The table's rows, by id.
async fn table(pool: &sqlx::PgPool) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>("select id, name from crm.accounts")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// One random change to the table in its own transaction: an insert, an update (to a name
/// never used before) or a delete. Answers the key it changed, if it changed one (a delete of
/// an absent row changes nothing).
async fn change(pool: &sqlx::PgPool, rng: &mut fastrand::Rng, n: u64) -> Option<String> {
    let id = format!("a{}", rng.u32(0..40));
    let name = format!("name-{n}");
    match rng.u8(0..10) {
        0..=1 => {
            let deleted = sqlx::query("delete from crm.accounts where id = $1")
                .bind(&id)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected();
            if deleted == 0 {
                return None;
            }
        }
        _ => {
            sqlx::query(
                "insert into crm.accounts (id, name) values ($1, $2)
                 on conflict (id) do update set name = excluded.name",
            )
            .bind(&id)
            .bind(&name)
            .execute(pool)
            .await
            .unwrap();
        }
    }
    Some(id)
}

/// Every key's latest stored state (`None` once deleted), from the Entity's stream.
async fn entity_states(nats: &NatsServer, keys: &[String]) -> BTreeMap<String, Option<String>> {
    let mut states = BTreeMap::new();
    for key in keys {
        let events = events_of(nats, key).await;
        if let Some(last) = events.last() {
            let name = last
                .state
                .as_ref()
                .and_then(|s| s["name"].as_str())
                .map(str::to_owned);
            states.insert(key.clone(), name);
        }
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_followed_through_a_kill_ends_equal_with_gap_free_versions_counted_once() {
    let source = TestDatabase::on_private_server().await.unwrap();
    let pool = source.pool().await.unwrap();
    sqlx::query("create schema crm")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("create table crm.accounts (id text primary key, name text not null)")
        .execute(&pool)
        .await
        .unwrap();
    // Rows from before the adapter: they come from the initial snapshot.
    for i in 0..30 {
        sqlx::query("insert into crm.accounts values ($1, $2)")
            .bind(format!("a{i}"))
            .bind(format!("initial-{i}"))
            .execute(&pool)
            .await
            .unwrap();
    }

    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("{ENTITY}---{ADAPTER}"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/crm-db")).unwrap();
    std::fs::write(dir.path().join("secrets/crm-db/url"), source.url()).unwrap();

    let (mut adapter, _) = start_adapter(dir.path(), &receiver_url, nats.url());
    let mut rng = fastrand::Rng::with_seed(79);
    let mut changes: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0;
    let mut write = async |rng: &mut fastrand::Rng, count: u64| {
        for _ in 0..count {
            n += 1;
            if let Some(key) = change(&pool, rng, n).await {
                *changes.entry(key).or_default() += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    write(&mut rng, 150).await;

    // SIGKILL mid-stream; the table keeps changing while no adapter runs.
    adapter.kill().unwrap();
    adapter.wait().unwrap();
    write(&mut rng, 100).await;
    let (mut adapter, port) = start_adapter(dir.path(), &receiver_url, nats.url());
    write(&mut rng, 100).await;

    let keys: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = table(&pool).await;
        let states = entity_states(&nats, &keys).await;
        let expected: BTreeMap<String, Option<String>> = keys
            .iter()
            .filter(|k| rows.contains_key(*k) || states.contains_key(*k))
            .map(|k| (k.clone(), rows.get(k).cloned()))
            .collect();
        if states == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Entity never matched the table\nentity: {states:?}\ntable:  {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Versions are gap-free, and no key has more events than the changes it had (plus its
    // snapshot row): nothing was counted twice across the kill. A delete of a row that never
    // existed, or an upsert to the same state, appends nothing, so fewer is possible.
    let (mut stored, mut made_total) = (0, 0);
    for key in &keys {
        let events = events_of(&nats, key).await;
        stored += events.len() as u64;
        made_total += changes.get(key).copied().unwrap_or(0)
            + u64::from(key[1..].parse::<u32>().unwrap() < 30);
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(versions, expected, "{key}: gap-free versions");
        let initial = u64::from(key[1..].parse::<u32>().unwrap() < 30);
        let made = changes.get(key).copied().unwrap_or(0) + initial;
        assert!(
            events.len() as u64 <= made,
            "{key}: {} events for {made} changes: a change was counted twice",
            events.len()
        );
        for pair in events.windows(2) {
            assert_ne!(pair[0].state, pair[1].state, "{key}: a repeated state");
        }
    }
    // Only the first batch of each adapter start (25 changes at most each) may be merged per
    // row: the one a killed predecessor may have submitted already.
    assert!(
        stored + 2 * 25 >= made_total && stored <= made_total,
        "{stored} events for {made_total} changes"
    );
    // The status reports the slot's lag, and the adapter reads nothing it should not have.
    let (code, body) = testbed::child::http(port, "GET", "/v1/status", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert!(status["sourceLagBytes"].is_u64(), "{status}");
    assert_eq!(status["rejected"], 0, "{status}");
    let slot: Value = sqlx::query_scalar(
        "select to_jsonb(s) from pg_replication_slots s where slot_name = 'dreampipe_crm_cdc'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(slot["plugin"], json!("pgoutput"), "{slot}");

    adapter.kill().unwrap();
    adapter.wait().unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn an_unreachable_database_shows_in_the_status_and_the_adapter_keeps_trying() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/crm-db")).unwrap();
    let port = testbed::child::free_port();
    std::fs::write(
        dir.path().join("secrets/crm-db/url"),
        format!("postgres://nobody:secret@127.0.0.1:{port}/crm"),
    )
    .unwrap();
    let adapter =
        adapter_support::start_adapter(dir.path(), ADAPTER, &receiver_url, nats.url()).await;
    let status =
        adapter_support::wait_for(&adapter, "the failure", |s| s.last_error.is_some()).await;
    let error = status.last_error.unwrap();
    assert!(error.contains("cannot reach the database"), "{error}");
    assert!(
        !error.contains("secret"),
        "the password is not in the status: {error}"
    );
    assert_eq!(status.records_read, 0);
    adapter.stop().await;
    shutdown.cancel();
}
