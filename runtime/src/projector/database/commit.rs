//! A batch's commit: rows, dead letters and the checkpoint compare-and-set in one transaction,
//! fenced by the partition lease.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::super::plan::{Plan, PostgresPlan};
use super::super::rows::{
    Erasures, Projected, aggregate_changes, erasures, history_rows, latest_changes,
    stored_contribution, touched_keys,
};
use super::super::schema::Write;
use super::dead_letters::{record_dead_letters, scrub_dead_letters};
use super::{CommitError, DeadLetter, Fence, Progress, storable_text};
use crate::sql::tables;

/// One batch of a partition, as [`commit`] writes it.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    pub partition: u32,
    /// The lease the commit is fenced by.
    pub fence: &'a Fence,
    /// The checkpoint the batch starts from: the compare-and-set's expected value.
    pub from: u64,
    /// The rows for the generation's tables (a Postgres sink).
    pub rows: &'a [&'a Projected],
    pub dead_letters: &'a [DeadLetter],
    /// The erasures' tombstones the batch met (either sink): the projection's dead letters of
    /// those keys before them are scrubbed.
    pub erased: &'a Erasures,
    /// The new checkpoint and the figures recorded with it.
    pub progress: Progress,
    /// Why the partition stops after this batch (`onError: Stop`), if it does.
    pub stopped: Option<&'a str>,
}

/// Applies `batch` to the generation's tables (when `write` is given), records its dead
/// letters, and moves the checkpoint from `batch.from` to `batch.progress.sequence`: all in
/// one transaction, and only while `batch.fence` still holds the partition's lease.
pub async fn commit(
    pool: &PgPool,
    plan: &Plan,
    write: Option<&Write>,
    batch: &Batch<'_>,
) -> Result<(), CommitError> {
    let Batch {
        partition,
        fence,
        from,
        rows,
        dead_letters,
        erased,
        progress,
        stopped,
    } = batch;
    let checkpoints = plan.schema.table(tables::CHECKPOINTS);
    let leases = plan.schema.table(tables::LEASES);
    let mut tx = pool.begin().await?;
    if let (Some(write), Some(view)) = (write, plan.postgres())
        && !rows.is_empty()
    {
        apply(&mut tx, view, write, rows).await?;
    }
    if !dead_letters.is_empty() {
        record_dead_letters(&mut tx, plan, *partition, dead_letters).await?;
    }
    // After recording: a poison event of an erased key in this very batch goes too.
    if !erased.is_empty() {
        scrub_dead_letters(&mut tx, plan, erased).await?;
    }
    let moved = sqlx::query(AssertSqlSafe(format!(
        "update {checkpoints} c
         set sequence = $5, events = c.events + $6, lag = $7, stopped = $8, failing = null,
             updated_at = now()
         where c.projection = $1 and c.generation = $2 and c.partition = $3 and c.sequence = $4
           and exists (select 1 from {leases} l
                       where l.projection = $1 and l.partition = $3
                         and l.owner = $9 and l.epoch = $10)"
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(*partition as i32)
    .bind(*from as i64)
    .bind(progress.sequence as i64)
    .bind(progress.events as i64)
    .bind(progress.lag as i64)
    .bind(stopped.map(storable_text))
    .bind(&fence.owner)
    .bind(fence.epoch)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(CommitError::Fenced);
    }
    tx.commit().await?;
    Ok(())
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    view: &PostgresPlan,
    write: &Write,
    projected: &[&Projected],
) -> Result<(), CommitError> {
    match write {
        Write::Latest { upsert, delete } => {
            let changes = latest_changes(view, projected.iter().copied());
            if !changes.keys.is_empty() {
                let mut query = sqlx::query(AssertSqlSafe(upsert.as_str()))
                    .bind(&changes.keys)
                    .bind(&changes.versions)
                    .bind(&changes.sequences);
                for column in &changes.columns {
                    query = query.bind(column);
                }
                query.execute(&mut **tx).await?;
            }
            if !changes.deletes.is_empty() {
                sqlx::query(AssertSqlSafe(delete.as_str()))
                    .bind(&changes.deletes)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Write::History { insert, erase } => {
            let rows = history_rows(view, projected.iter().copied());
            if !rows.sequences.is_empty() {
                let mut query = sqlx::query(AssertSqlSafe(insert.as_str()))
                    .bind(&rows.sequences)
                    .bind(&rows.keys)
                    .bind(&rows.versions)
                    .bind(&rows.types);
                for column in &rows.columns {
                    query = query.bind(column);
                }
                query.execute(&mut **tx).await?;
            }
            // After the insert, so rows of the key earlier in this batch go as well.
            let erased = erasures(projected.iter().copied());
            if !erased.is_empty() {
                sqlx::query(AssertSqlSafe(erase.as_str()))
                    .bind(&erased.keys)
                    .bind(&erased.sequences)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Write::Aggregate {
            select_members,
            upsert_members,
            delete_members,
            apply_deltas,
            delete_empty,
        } => {
            let keys = touched_keys(projected.iter().copied());
            let old: HashMap<String, _> = sqlx::query_as::<_, (String, String, String)>(
                AssertSqlSafe(select_members.as_str()),
            )
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(key, group, sums)| (key, stored_contribution(group, &sums)))
            .collect();
            // Contributions were checked when the effects were computed.
            let changes = aggregate_changes(view, &old, projected.iter().copied())
                .map_err(CommitError::Contribution)?;
            if !changes.member_keys.is_empty() {
                sqlx::query(AssertSqlSafe(upsert_members.as_str()))
                    .bind(&changes.member_keys)
                    .bind(&changes.member_groups)
                    .bind(&changes.member_sums)
                    .execute(&mut **tx)
                    .await?;
            }
            if !changes.member_deletes.is_empty() {
                sqlx::query(AssertSqlSafe(delete_members.as_str()))
                    .bind(&changes.member_deletes)
                    .execute(&mut **tx)
                    .await?;
            }
            if !changes.delta_groups.is_empty() {
                let mut query = sqlx::query(AssertSqlSafe(apply_deltas.as_str()))
                    .bind(&changes.delta_groups)
                    .bind(&changes.delta_counts);
                for sums in &changes.delta_sums {
                    query = query.bind(sums);
                }
                query.execute(&mut **tx).await?;
                sqlx::query(AssertSqlSafe(delete_empty.as_str()))
                    .bind(&changes.delta_groups)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}
