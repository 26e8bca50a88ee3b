//! Where each partition of a generation stands, and recording one that cannot move.

use sqlx::{AssertSqlSafe, PgPool, Row};

use super::super::plan::Plan;
use super::{DatabaseError, Fence, query_error, storable_text};
use crate::sql::{Schema, tables};

/// Where a partition of a generation stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Last applied stream sequence (0: none).
    pub sequence: u64,
    /// Events left in the partition at the last commit, when known.
    pub lag: Option<u64>,
    /// Recorded as failing (cleared by the next commit).
    pub failing: bool,
}

/// What a commit records besides the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The new checkpoint: the last stream sequence the batch covers.
    pub sequence: u64,
    /// Events the batch consumed (applied, filtered out or poison).
    pub events: u64,
    /// Events left in the partition after the batch.
    pub lag: u64,
}

/// The checkpoint of one partition of a generation.
pub async fn checkpoint(
    pool: &PgPool,
    plan: &Plan,
    partition: u32,
) -> Result<Checkpoint, DatabaseError> {
    let checkpoints = plan.schema.table(tables::CHECKPOINTS);
    let row: Option<(i64, Option<i64>, bool)> = sqlx::query_as(AssertSqlSafe(format!(
        "select sequence, lag, failing is not null from {checkpoints}
         where projection = $1 and generation = $2 and partition = $3"
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(partition as i32)
    .fetch_optional(pool)
    .await
    .map_err(query_error("read the checkpoint"))?;
    Ok(
        row.map_or_else(Checkpoint::default, |(sequence, lag, failing)| Checkpoint {
            sequence: sequence as u64,
            lag: lag.map(|l| l as u64),
            failing,
        }),
    )
}

/// Records where a partition that cannot move stands: its lag (when counted) and the error it
/// keeps failing with (None: it is stopped, not failing). Only while `fence` holds the lease
/// and the checkpoint is still `at`; returns whether it was recorded.
#[allow(clippy::too_many_arguments)]
pub async fn record_stall(
    pool: &PgPool,
    plan: &Plan,
    partition: u32,
    fence: &Fence,
    at: u64,
    lag: Option<u64>,
    failing: Option<&str>,
) -> Result<bool, DatabaseError> {
    let checkpoints = plan.schema.table(tables::CHECKPOINTS);
    let leases = plan.schema.table(tables::LEASES);
    let recorded = sqlx::query(AssertSqlSafe(format!(
        "update {checkpoints} c
         set lag = coalesce($5, c.lag), failing = $6, updated_at = now()
         where c.projection = $1 and c.generation = $2 and c.partition = $3 and c.sequence = $4
           and exists (select 1 from {leases} l
                       where l.projection = $1 and l.partition = $3
                         and l.owner = $7 and l.epoch = $8)"
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(partition as i32)
    .bind(at as i64)
    .bind(lag.map(|l| l as i64))
    .bind(failing.map(storable_text))
    .bind(&fence.owner)
    .bind(fence.epoch)
    .execute(pool)
    .await
    .map_err(query_error("record a partition that cannot move"))?;
    Ok(recorded.rows_affected() == 1)
}

/// One partition's checkpoint row, for the status endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRow {
    pub generation: String,
    pub partition: u32,
    pub sequence: u64,
    pub events: u64,
    pub lag: Option<u64>,
    pub stopped: Option<String>,
    /// The error a worker keeps failing with, while it cannot move.
    pub failing: Option<String>,
    pub owner: Option<String>,
}

/// Checkpoints (with the lease owner) of every generation of `projection`.
pub async fn partitions(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
) -> Result<Vec<PartitionRow>, DatabaseError> {
    let checkpoints = schema.table(tables::CHECKPOINTS);
    let leases = schema.table(tables::LEASES);
    let rows = sqlx::query(AssertSqlSafe(format!(
        "select c.generation, c.partition, c.sequence, c.events, c.lag, c.stopped, c.failing,
                case when l.expires_at > now() then l.owner end as owner
         from {checkpoints} c
         left join {leases} l on l.projection = c.projection and l.partition = c.partition
         where c.projection = $1
         order by c.generation, c.partition"
    )))
    .bind(projection)
    .fetch_all(pool)
    .await
    .map_err(query_error("read the checkpoints"))?;
    Ok(rows
        .into_iter()
        .map(|row| PartitionRow {
            generation: row.get("generation"),
            partition: row.get::<i32, _>("partition") as u32,
            sequence: row.get::<i64, _>("sequence") as u64,
            events: row.get::<i64, _>("events") as u64,
            lag: row.get::<Option<i64>, _>("lag").map(|l| l as u64),
            stopped: row.get("stopped"),
            failing: row.get("failing"),
            owner: row.get("owner"),
        })
        .collect())
}
