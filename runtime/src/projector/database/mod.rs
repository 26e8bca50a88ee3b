//! The projector's Postgres side: bookkeeping tables, generation registration and swap,
//! checkpoints written in the same transaction as the rows (compare-and-set, fenced by the
//! partition lease), partition leases, and dead letters.
//!
//! - `generations`: register, list, swap, drop a generation (and a whole projection).
//! - `commit`: a batch's rows, dead letters and fenced checkpoint in one transaction.
//! - `checkpoints`: where each partition stands; recording a partition that cannot move.
//! - `leases`: replica heartbeats and partition leases (the fence).
//! - `dead_letters`: poison events as stored, whatever bytes they hold; listing, reading and
//!   marking them handled.

mod checkpoints;
mod commit;
mod dead_letters;
mod generations;
mod leases;

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::plan::Plan;
use super::schema::{DDL_LOCK, Statements, bookkeeping, quote, statements};
use crate::sql::Schema;

pub use checkpoints::{Checkpoint, PartitionRow, Progress, checkpoint, partitions, record_stall};
pub use commit::{Batch, commit};
pub use dead_letters::{
    DeadLetter, DeadLetterCounts, DeadLetterFilter, DeadLetterPage, DeadLetterRecord,
    DeadLetterSummary, Handled, dead_letter, dead_letter_counts, list_dead_letters, mark_handled,
};
pub use generations::{
    GenerationRow, GenerationState, drop_generation, drop_projection, generations, register,
    swap_if_caught_up, view_owner,
};
pub use leases::{acquire, heartbeat, leave, release, renew};

/// Why a database step failed.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("Postgres: {action}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the reader role {role:?} does not exist and this user may not create it: run `create role \"{role}\" nologin` as an administrator, or grant the projector's user CREATEROLE (the Helm chart's Postgres init does)"
    )]
    NoReaderRole {
        role: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the role {member:?} to be made a member of the reader role {role:?} does not exist: create it, or drop it from DREAMPIPE_READER_MEMBERS"
    )]
    NoReaderMember { role: String, member: String },
    /// Another Projection of the namespace owns the view (DESIGN §10): this one is refused.
    #[error(
        "view {view:?} is owned by Projection {owner}: rename this Projection's view or delete the owner"
    )]
    ViewConflict { view: String, owner: String },
    #[error(
        "generation {generation} of {projection} has a definition this release cannot compile: {reason}"
    )]
    OldDefinition {
        projection: String,
        generation: String,
        reason: String,
    },
    #[error("generation {generation} of {projection} has a definition this release cannot read")]
    Definition {
        projection: String,
        generation: String,
        #[source]
        source: serde_json::Error,
    },
}

fn query_error(action: &'static str) -> impl FnOnce(sqlx::Error) -> DatabaseError {
    move |source| DatabaseError::Query { action, source }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The partition's checkpoint moved or its lease changed hands: another replica owns it now.
    #[error("the partition lease was lost (checkpoint or lease changed underneath)")]
    Fenced,
    /// Postgres refused a value (a data or constraint error): some event of the batch is poison.
    #[error("Postgres rejected a row of the batch")]
    Rejected(#[source] sqlx::Error),
    #[error("Postgres failed while committing a batch")]
    Database(#[source] sqlx::Error),
    /// A contribution that the effect step should have refused reached the commit.
    #[error("an aggregate contribution could not be computed")]
    Contribution(#[source] super::rows::Poison),
}

impl From<sqlx::Error> for CommitError {
    fn from(error: sqlx::Error) -> Self {
        match sqlstate(&error) {
            Some(code) if is_data_error(&code) => CommitError::Rejected(error),
            _ => CommitError::Database(error),
        }
    }
}

/// The SQLSTATE of an error Postgres returned (None for connection and driver errors).
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
}

/// Whether SQLSTATE `code` blames the values (the event) rather than the connection or the
/// server: class 22 (data exception: a bad cast, a number out of range, NUL in text), class
/// 23 (a constraint), and 54000 (a value over a limit, e.g. a key too long for its index).
/// Anything else is retried and never dead-lettered.
pub fn is_data_error(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23") || code == "54000"
}

/// Proof of a partition lease: the owner and the lease's epoch (a fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: i64,
}

/// `text` with NUL written as `\u0000`: readable, and storable in a text column (the exact
/// bytes are kept in `message`).
fn storable_text(text: &str) -> String {
    text.replace('\0', "\\u0000")
}

/// Creates the namespace's schema and the bookkeeping tables its projections share.
pub async fn prepare(pool: &PgPool, schema: &Schema) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    for statement in bookkeeping(schema) {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(query_error("create the bookkeeping tables"))?;
    }
    tx.commit().await.map_err(query_error("commit"))
}

/// Opens the projection's stable view, and nothing else, to the analysts' `role`: PUBLIC
/// loses the right to create in `public` and to create temporary tables, the role may
/// connect and use the namespace's schema (and no other DreamPipe schema: it is never granted
/// one), and it may select from the live view (each swap grants the new one). A missing
/// `role` is created as a NOLOGIN group role (ADR 61); `members` (login roles, such as the
/// query service's) are made its members. Idempotent; run at start, after [`prepare`].
pub async fn open_to_reader(
    pool: &PgPool,
    schema: &Schema,
    role: &str,
    members: &[String],
    view: Option<&str>,
) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    if !role_exists(&mut tx, role).await? {
        sqlx::query(AssertSqlSafe(format!(
            "create role {} nologin",
            quote(role)
        )))
        .execute(&mut *tx)
        .await
        .map_err(|source| DatabaseError::NoReaderRole {
            role: role.to_owned(),
            source,
        })?;
        tracing::info!(%role, "reader role created (nologin)");
    }
    for member in members {
        if !role_exists(&mut tx, member).await? {
            return Err(DatabaseError::NoReaderMember {
                role: role.to_owned(),
                member: member.clone(),
            });
        }
    }
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error("name the database"))?;
    let (database, role_name) = (quote(&database), quote(role));
    let mut statements = vec![
        "revoke create on schema public from public".to_owned(),
        format!("revoke temporary on database {database} from public"),
        format!("grant connect on database {database} to {role_name}"),
        format!("grant usage on schema {} to {role_name}", schema.quoted()),
    ];
    for member in members {
        statements.push(format!("grant {role_name} to {}", quote(member)));
    }
    if let Some(view) = view {
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(schema.table(view))
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("look up the view"))?;
        if exists {
            statements.push(format!(
                "grant select on {} to {role_name}",
                schema.table(view)
            ));
        }
    }
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(query_error("open the view to the reader role"))?;
    }
    tx.commit().await.map_err(query_error("commit"))
}

async fn role_exists(
    tx: &mut Transaction<'_, Postgres>,
    role: &str,
) -> Result<bool, DatabaseError> {
    sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
        .bind(role)
        .fetch_one(&mut **tx)
        .await
        .map_err(query_error("look up a role"))
}

async fn lock_ddl(tx: &mut Transaction<'_, Postgres>) -> Result<(), DatabaseError> {
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(DDL_LOCK)
        .execute(&mut **tx)
        .await
        .map(drop)
        .map_err(query_error("take the DDL lock"))
}

/// The statements that apply batches of `plan` (None for a NATS sink).
pub fn write_statements(plan: &Plan) -> Option<Statements> {
    plan.postgres()
        .map(|postgres| statements(&plan.schema, postgres))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_blame_the_event_and_connections_or_servers_do_not() {
        for code in [
            "22021", "22P05", "22003", "22007", "22P02", "23505", "54000",
        ] {
            assert!(is_data_error(code), "{code} is the event's fault");
        }
        for code in [
            "08006", "40001", "40P01", "42P01", "53100", "57P01", "XX000",
        ] {
            assert!(
                !is_data_error(code),
                "{code} is retried, never dead-lettered"
            );
        }
    }
}
