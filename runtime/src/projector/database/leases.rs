//! Replica heartbeats and partition leases: the epoch of a lease is the fence every commit
//! checks.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};

use super::{DatabaseError, Fence, query_error};
use crate::sql::{Schema, tables};

/// Announces `replica` as alive and returns the live replicas of `projection`, sorted.
pub async fn heartbeat(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    replica: &str,
    ttl: Duration,
) -> Result<Vec<String>, DatabaseError> {
    let replicas = schema.table(tables::REPLICAS);
    sqlx::query(AssertSqlSafe(format!(
        "insert into {replicas} (projection, replica, seen_at) values ($1, $2, now())
         on conflict (projection, replica) do update set seen_at = now()"
    )))
    .bind(projection)
    .bind(replica)
    .execute(pool)
    .await
    .map_err(query_error("record the heartbeat"))?;
    sqlx::query_scalar(AssertSqlSafe(format!(
        "select replica from {replicas}
         where projection = $1 and seen_at > now() - make_interval(secs => $2)
         order by replica"
    )))
    .bind(projection)
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(query_error("read the live replicas"))
}

/// Forgets `replica` (on a graceful stop) so the others rebalance at once.
pub async fn leave(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    replica: &str,
) -> Result<(), DatabaseError> {
    let (leases, replicas) = (schema.table(tables::LEASES), schema.table(tables::REPLICAS));
    sqlx::query(AssertSqlSafe(format!(
        "delete from {leases} where projection = $1 and owner = $2"
    )))
    .bind(projection)
    .bind(replica)
    .execute(pool)
    .await
    .map_err(query_error("release the leases"))?;
    sqlx::query(AssertSqlSafe(format!(
        "delete from {replicas} where projection = $1 and replica = $2"
    )))
    .bind(projection)
    .bind(replica)
    .execute(pool)
    .await
    .map_err(query_error("leave"))?;
    Ok(())
}

/// Takes the lease of `partition` if it is free, expired, or already ours; returns its fence.
pub async fn acquire(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    partition: u32,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Fence>, DatabaseError> {
    let leases = schema.table(tables::LEASES);
    let epoch: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "insert into {leases} as l (projection, partition, owner, epoch, expires_at)
         values ($1, $2, $3, 1, now() + make_interval(secs => $4))
         on conflict (projection, partition) do update
         set owner = excluded.owner, epoch = l.epoch + 1, expires_at = excluded.expires_at
         where l.owner = excluded.owner or l.expires_at < now()
         returning epoch"
    )))
    .bind(projection)
    .bind(partition as i32)
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await
    .map_err(query_error("acquire a lease"))?;
    Ok(epoch.map(|epoch| Fence {
        owner: owner.to_owned(),
        epoch,
    }))
}

/// Extends the leases `owned` (partition -> epoch); returns the partitions still held.
pub async fn renew(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    owner: &str,
    owned: &[(u32, i64)],
    ttl: Duration,
) -> Result<Vec<u32>, DatabaseError> {
    let leases = schema.table(tables::LEASES);
    let partitions: Vec<i32> = owned.iter().map(|(p, _)| *p as i32).collect();
    let epochs: Vec<i64> = owned.iter().map(|(_, e)| *e).collect();
    let held: Vec<i32> = sqlx::query_scalar(
        AssertSqlSafe(format!("update {leases} l set expires_at = now() + make_interval(secs => $3)
         from unnest($4::int[], $5::bigint[]) as o(partition, epoch)
         where l.projection = $1 and l.owner = $2 and l.partition = o.partition and l.epoch = o.epoch
         returning l.partition")),
    )
    .bind(projection)
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .bind(&partitions)
    .bind(&epochs)
    .fetch_all(pool)
    .await
    .map_err(query_error("renew the leases"))?;
    Ok(held.into_iter().map(|p| p as u32).collect())
}

/// Gives up the lease of `partition`.
pub async fn release(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    partition: u32,
    fence: &Fence,
) -> Result<(), DatabaseError> {
    let leases = schema.table(tables::LEASES);
    sqlx::query(
        AssertSqlSafe(format!("delete from {leases} where projection = $1 and partition = $2 and owner = $3 and epoch = $4")),
    )
    .bind(projection)
    .bind(partition as i32)
    .bind(&fence.owner)
    .bind(fence.epoch)
    .execute(pool)
    .await
    .map(drop)
    .map_err(query_error("release a lease"))
}
