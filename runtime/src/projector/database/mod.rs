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
use super::schema::{BOOKKEEPING, DDL_LOCK, Statements, quote, statements};

pub use checkpoints::{Checkpoint, PartitionRow, Progress, checkpoint, partitions, record_stall};
pub use commit::{Batch, commit};
pub use dead_letters::{
    DeadLetter, DeadLetterCounts, DeadLetterFilter, DeadLetterPage, DeadLetterRecord,
    DeadLetterSummary, Handled, dead_letter, dead_letter_counts, list_dead_letters, mark_handled,
};
pub use generations::{
    GenerationRow, GenerationState, drop_generation, drop_projection, generations, register,
    swap_if_caught_up,
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
        "the reader role {0:?} does not exist: create it (the Helm chart's Postgres init does)"
    )]
    NoReaderRole(String),
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

/// Creates the shared bookkeeping tables.
pub async fn prepare(pool: &PgPool) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    for statement in BOOKKEEPING {
        sqlx::query(*statement)
            .execute(&mut *tx)
            .await
            .map_err(query_error("create the bookkeeping tables"))?;
    }
    tx.commit().await.map_err(query_error("commit"))
}

/// Opens the projection's stable view, and nothing else, to the analysts' `role`: PUBLIC
/// loses the right to create in `public` and to create temporary tables, the role may
/// connect and use the schema, and it may select from the live view (each swap grants the
/// new one). Idempotent; run at start.
pub async fn open_to_reader(
    pool: &PgPool,
    role: &str,
    view: Option<&str>,
) -> Result<(), DatabaseError> {
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
            .bind(role)
            .fetch_one(pool)
            .await
            .map_err(query_error("look up the reader role"))?;
    if !exists {
        return Err(DatabaseError::NoReaderRole(role.to_owned()));
    }
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error("name the database"))?;
    let (database, role_name) = (quote(&database), quote(role));
    let mut statements = vec![
        "revoke create on schema public from public".to_owned(),
        format!("revoke temporary on database {database} from public"),
        format!("grant connect on database {database} to {role_name}"),
        format!("grant usage on schema public to {role_name}"),
    ];
    if let Some(view) = view {
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(quote(view))
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("look up the view"))?;
        if exists {
            statements.push(format!("grant select on {} to {role_name}", quote(view)));
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
    plan.postgres().map(statements)
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
