//! The `postgres` source: change data capture from a table of an external Postgres (issue 18,
//! ADR 79), through a logical replication slot read with the SQL decoding functions
//! (`pg_logical_slot_peek_binary_changes`, plugin `pgoutput`, decoded in `pgoutput.rs`).
//!
//! - The slot keeps the position. Changes are peeked, submitted, and only then is the slot
//!   advanced to the end of the last submitted transaction: a crash before the advance makes
//!   the next adapter submit those changes again, which the receiver answers `unchanged`.
//! - The initial snapshot reads the table in one REPEATABLE READ transaction after the slot
//!   exists, and keeps that transaction's snapshot (`pg_current_snapshot()`) in the adapter's
//!   cursor: a streamed transaction the snapshot already saw is skipped, so no change is
//!   applied twice and no row goes back to an older state.
//! - The first batch after the adapter starts may hold changes a crashed predecessor already
//!   submitted (it submitted, then died before the advance). That batch is submitted as the
//!   last change of each row only: changes already stored are then `unchanged`, and no row is
//!   moved back to an older state and forward again (which would store two needless versions).
//!   Every later batch keeps every change.
//! - Records are the row's columns by name (a delete: its key columns) plus `_op`
//!   (`snapshot`, `insert`, `update` or `delete`) and `_table`; `deleteWhen` defaults to
//!   `record._op == "delete"`.

use std::time::Duration;

use crds::adapter::PostgresSource;
use futures::{StreamExt, TryStreamExt};
use process::Health;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Row};
use tokio_util::sync::CancellationToken;

use super::super::cursor::{CursorError, CursorStore};
use super::super::submit::SubmitError;
use super::pgoutput::{self, Message, Relations};
use super::{ConnectError, Feed, Setup, SetupError, Source};
use crate::nats::NatsServers;

/// The longest pause between two attempts to reach a database that is away.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the source stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

/// Why one round of following failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach the database")]
    Connect(#[source] sqlx::Error),
    #[error("{action}")]
    Sql {
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("decoding a change at {lsn} of slot {slot:?}")]
    Decode {
        slot: String,
        lsn: String,
        #[source]
        source: pgoutput::DecodeError,
    },
    #[error("the snapshot {0:?} of pg_current_snapshot() cannot be read")]
    Snapshot(String),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

fn sql(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> FollowError {
    let action = action.into();
    move |source| FollowError::Sql { action, source }
}

/// The transactions the initial snapshot saw, as `pg_current_snapshot()` said (32-bit xids,
/// compared as Postgres compares them, modulo 2^32).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMark {
    pub xmin: u32,
    pub xmax: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xip: Vec<u32>,
}

impl SnapshotMark {
    /// Reads `xmin:xmax:xip,...` (the text of a `pg_snapshot`, 64-bit xids).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xid = |s: &str| s.parse::<u64>().ok().map(|x| x as u32);
        let xmin = xid(parts.next()?)?;
        let xmax = xid(parts.next()?)?;
        let xip = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list.split(',').map(xid).collect::<Option<_>>()?,
        };
        Some(SnapshotMark { xmin, xmax, xip })
    }

    /// Whether the transaction `xid` had committed when the snapshot was taken.
    pub fn saw(&self, xid: u32) -> bool {
        let precedes = |a: u32, b: u32| (a.wrapping_sub(b) as i32) < 0;
        precedes(xid, self.xmin) || (precedes(xid, self.xmax) && !self.xip.contains(&xid))
    }
}

/// A followed table.
#[derive(Debug)]
pub struct PostgresCdc {
    url: String,
    schema: String,
    table: String,
    publication: String,
    slot: String,
    snapshot: bool,
    batch_size: u32,
    interval: Duration,
    nats_url: NatsServers,
    namespace: String,
    adapter: String,
}

impl PostgresCdc {
    /// The source `spec` asks for, its URL read from its Secret.
    pub fn new(spec: &PostgresSource, setup: &Setup<'_>) -> Result<Self, SetupError> {
        let (schema, table) = spec
            .table
            .split_once('.')
            .unwrap_or(("public", &spec.table));
        let default_name = format!("dreampipe_{}", setup.adapter.replace('-', "_"));
        Ok(PostgresCdc {
            url: setup.secret(&spec.url_secret_ref)?,
            schema: schema.to_owned(),
            table: table.to_owned(),
            publication: spec
                .publication
                .clone()
                .unwrap_or_else(|| default_name.clone()),
            slot: spec.slot.clone().unwrap_or(default_name),
            snapshot: spec.snapshot,
            batch_size: setup.spec.batch_size.max(1),
            interval: setup.interval.min(Duration::from_secs(5)),
            nats_url: setup.nats_url.clone(),
            namespace: setup.namespace.to_owned(),
            adapter: setup.adapter.to_owned(),
        })
    }

    /// `"schema"."table"`: both are checked identifiers (crds validation).
    fn qualified(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }

    async fn connect(&self) -> Result<PgPool, FollowError> {
        let options: PgConnectOptions = self.url.parse().map_err(FollowError::Connect)?;
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.application_name(&format!("dreampipe-{}", self.adapter)))
            .await
            .map_err(FollowError::Connect)
    }

    /// The publication and the slot, created when missing.
    async fn prepare(&self, pool: &PgPool) -> Result<(), FollowError> {
        let published: bool =
            sqlx::query_scalar("select exists (select 1 from pg_publication where pubname = $1)")
                .bind(&self.publication)
                .fetch_one(pool)
                .await
                .map_err(sql(format!("looking up publication {}", self.publication)))?;
        if !published {
            // Both names are checked identifiers (crds validation), quoted.
            sqlx::query(AssertSqlSafe(format!(
                "create publication \"{}\" for table {}",
                self.publication,
                self.qualified()
            )))
            .execute(pool)
            .await
            .map_err(sql(format!(
                "creating publication {} for {}",
                self.publication,
                self.qualified()
            )))?;
            tracing::info!(publication = %self.publication, table = %self.qualified(), "publication created");
        }
        let slotted: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_replication_slots where slot_name = $1)",
        )
        .bind(&self.slot)
        .fetch_one(pool)
        .await
        .map_err(sql(format!("looking up replication slot {}", self.slot)))?;
        if !slotted {
            sqlx::query("select pg_create_logical_replication_slot($1, 'pgoutput')")
                .bind(&self.slot)
                .execute(pool)
                .await
                .map_err(sql(format!("creating replication slot {}", self.slot)))?;
            tracing::info!(slot = %self.slot, "replication slot created");
        }
        Ok(())
    }

    /// Submits every row of the table as of one snapshot; answers that snapshot.
    async fn snapshot(
        &self,
        pool: &PgPool,
        feed: &Feed,
        shutdown: &CancellationToken,
    ) -> Result<SnapshotMark, FollowError> {
        let mut tx = pool.begin().await.map_err(sql("beginning the snapshot"))?;
        sqlx::query("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await
            .map_err(sql("beginning the snapshot"))?;
        let text: String = sqlx::query_scalar("select pg_current_snapshot()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql("reading the snapshot"))?;
        let mark = SnapshotMark::parse(&text).ok_or(FollowError::Snapshot(text))?;
        let query = format!("select to_jsonb(t) from {} t", self.qualified());
        let mut rows = sqlx::query_scalar::<_, Json>(AssertSqlSafe(query))
            .fetch(&mut *tx)
            .try_chunks(self.batch_size as usize);
        let mut count = 0;
        while let Some(chunk) = rows.next().await {
            let chunk = chunk
                .map_err(|error| error.1)
                .map_err(sql(format!("reading {}", self.qualified())))?;
            count += chunk.len();
            let records: Vec<Json> = chunk
                .into_iter()
                .map(|row| self.record(row.as_object().cloned().unwrap_or_default(), "snapshot"))
                .collect();
            feed.deliver(&records, shutdown).await?;
        }
        drop(rows);
        tx.commit().await.map_err(sql("ending the snapshot"))?;
        tracing::info!(table = %self.qualified(), rows = count, "initial snapshot submitted");
        Ok(mark)
    }

    fn record(&self, mut row: Map<String, Json>, op: &str) -> Json {
        row.insert("_op".to_owned(), Json::from(op));
        row.insert(
            "_table".to_owned(),
            Json::from(format!("{}.{}", self.schema, self.table)),
        );
        Json::Object(row)
    }

    /// Peeks the next complete transactions, submits their rows and advances the slot past
    /// them. Answers how many changes were submitted.
    async fn step(
        &self,
        pool: &PgPool,
        feed: &Feed,
        seen: Option<&SnapshotMark>,
        first: bool,
        shutdown: &CancellationToken,
    ) -> Result<usize, FollowError> {
        let rows = sqlx::query(
            "select lsn::text as lsn, data from pg_logical_slot_peek_binary_changes(
                 $1, null, $2, 'proto_version', '1', 'publication_names', $3)",
        )
        .bind(&self.slot)
        .bind(i32::try_from(self.batch_size).unwrap_or(i32::MAX))
        .bind(&self.publication)
        .fetch_all(pool)
        .await
        .map_err(sql(format!("reading the changes of slot {}", self.slot)))?;
        let mut relations = Relations::default();
        let mut records = Vec::new();
        let mut pending = Vec::new();
        let mut skip = false;
        let mut end = None;
        for row in &rows {
            let lsn: String = row.get("lsn");
            let data: Vec<u8> = row.get("data");
            let message = pgoutput::decode(&data).map_err(|source| FollowError::Decode {
                slot: self.slot.clone(),
                lsn: lsn.clone(),
                source,
            })?;
            match message {
                Message::Begin { xid } => {
                    pending.clear();
                    skip = seen.is_some_and(|mark| mark.saw(xid));
                }
                Message::Relation(relation) => relations.learn(relation),
                Message::Change(change) => {
                    let Some(relation) = relations.get(change.relation) else {
                        continue;
                    };
                    if relation.schema != self.schema || relation.name != self.table {
                        continue;
                    }
                    if let Some(row) = relations.row(&change) {
                        let key: Vec<&Json> = relation
                            .columns
                            .iter()
                            .filter(|c| c.key)
                            .filter_map(|c| row.get(&c.name))
                            .collect();
                        let key = serde_json::to_string(&key).expect("JSON serialises");
                        pending.push((key, self.record(row, change.op.as_str())));
                    }
                }
                Message::Commit { end_lsn } => {
                    if !skip {
                        records.append(&mut pending);
                    }
                    pending.clear();
                    end = Some(end_lsn);
                }
                Message::Other(_) => {}
            }
        }
        let Some(end) = end else {
            return Ok(0);
        };
        if first {
            records = last_per_row(records);
        }
        let records: Vec<Json> = records.into_iter().map(|(_, record)| record).collect();
        let submitted = records.len();
        feed.deliver(&records, shutdown).await?;
        sqlx::query("select pg_replication_slot_advance($1, $2::pg_lsn)")
            .bind(&self.slot)
            .bind(format_lsn(end))
            .execute(pool)
            .await
            .map_err(sql(format!("advancing slot {}", self.slot)))?;
        Ok(submitted)
    }

    /// The WAL the slot holds that the adapter has not confirmed, in bytes.
    async fn lag_bytes(&self, pool: &PgPool) -> Result<u64, FollowError> {
        let lag: Option<i64> = sqlx::query_scalar(
            "select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
             from pg_replication_slots where slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(pool)
        .await
        .map_err(sql(format!("reading the lag of slot {}", self.slot)))?
        .flatten();
        Ok(lag.unwrap_or(0).max(0) as u64)
    }

    /// Connects, prepares, snapshots once and follows until `shutdown` or an error.
    async fn follow(
        &self,
        cursors: &CursorStore,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), FollowError> {
        let pool = self.connect().await?;
        self.prepare(&pool).await?;
        health.set_ready(true);
        let mut cursor = cursors.load().await?;
        if self.snapshot && cursor.snapshot.is_none() {
            let mark = self.snapshot(&pool, feed, shutdown).await?;
            cursor.snapshot = Some(mark);
            cursors.save(&cursor).await?;
        }
        let mut first = true;
        loop {
            let submitted = self
                .step(&pool, feed, cursor.snapshot.as_ref(), first, shutdown)
                .await?;
            first = first && submitted == 0;
            feed.stats().source_lag_bytes(self.lag_bytes(&pool).await?);
            feed.stats().synced();
            if submitted == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.interval) => {}
                }
            } else if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// Only the last of each row's changes, in the order of those last changes. Pure.
fn last_per_row(records: Vec<(String, Json)>) -> Vec<(String, Json)> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<(String, Json)> = records
        .into_iter()
        .rev()
        .filter(|(key, _)| seen.insert(key.clone()))
        .collect();
    kept.reverse();
    kept
}

/// An LSN as Postgres writes it: `X/Y`, the high and low 32 bits in hex.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

impl Source for PostgresCdc {
    const KIND: &'static str = "postgres";
    type Error = PostgresError;

    /// Follows the table until `shutdown`; a database that is away, or refuses, is retried
    /// with backoff, and its reason is the Adapter's last error meanwhile.
    async fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), PostgresError> {
        let client = super::connect(&self.nats_url).await?;
        let cursors = CursorStore::open(&client, &self.namespace, &self.adapter).await?;
        let mut backoff = process::Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
        loop {
            match self.follow(&cursors, feed, health, shutdown).await {
                Ok(()) | Err(FollowError::Submit(SubmitError::ShutDown)) => return Ok(()),
                Err(error) => {
                    let message = crate::error_chain(&error);
                    tracing::warn!(error = %message, table = %self.qualified(), "following the table failed");
                    feed.stats().error(message);
                    health.set_ready(false);
                    if !backoff.wait(shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_saw_what_had_committed_and_nothing_in_progress() {
        let mark = SnapshotMark::parse("100:105:101,103").unwrap();
        assert_eq!(mark.xip, [101, 103]);
        for (xid, saw) in [
            (99, true),
            (100, true),
            (101, false),
            (102, true),
            (103, false),
            (104, true),
            (105, false),
            (200, false),
        ] {
            assert_eq!(mark.saw(xid), saw, "xid {xid}");
        }
        assert_eq!(SnapshotMark::parse("7:7:").unwrap().xip, Vec::<u32>::new());
        assert!(SnapshotMark::parse("garbage").is_none());
    }

    #[test]
    fn xids_compare_across_the_32_bit_wraparound() {
        // 2^32 + 5 as a 64-bit xid is 5 after the wraparound.
        let mark = SnapshotMark::parse("4294967290:4294967301:").unwrap();
        assert!(mark.saw(4_294_967_289));
        assert!(mark.saw(4_294_967_295));
        assert!(mark.saw(3));
        assert!(!mark.saw(5));
    }

    #[test]
    fn a_replayed_batch_keeps_each_rows_last_change() {
        let change = |key: &str, n: u64| (key.to_owned(), serde_json::json!({"id": key, "n": n}));
        let kept = last_per_row(vec![
            change("a", 1),
            change("b", 2),
            change("a", 3),
            change("c", 4),
        ]);
        assert_eq!(kept, [change("b", 2), change("a", 3), change("c", 4)]);
    }

    #[test]
    fn lsns_are_written_as_postgres_writes_them() {
        assert_eq!(format_lsn(0x1_6B37_4890), "1/6B374890");
        assert_eq!(format_lsn(0x16B3748), "0/16B3748");
    }
}
