//! The projector's Postgres side: bookkeeping tables, generation registration and swap,
//! checkpoints written in the same transaction as the rows (compare-and-set, fenced by the
//! partition lease), partition leases, and dead letters.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};

use super::plan::{Definition, Plan};
use super::rows::{
    Projected, aggregate_changes, history_rows, latest_changes, stored_contribution, touched_keys,
};
use super::schema::{BOOKKEEPING, DDL_LOCK, Statements, Write, quote, statements};

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

/// A poison event, recorded with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub sequence: u64,
    pub key: Option<String>,
    pub version: Option<u64>,
    /// The message's payload exactly as the stream holds it.
    pub message: bytes::Bytes,
    pub reason: String,
}

/// A dead letter as bound to `dp_dead_letters`, every value in a form its column accepts
/// whatever the event holds: Postgres text cannot hold NUL, nor jsonb a `\u0000` escape.
#[derive(Debug, PartialEq)]
struct StoredDeadLetter {
    key: Option<String>,
    /// The message as JSON, for jsonb, when jsonb can hold it.
    event: Option<String>,
    /// Otherwise a readable copy (invalid UTF-8 replaced, NUL escaped).
    payload: Option<String>,
    reason: String,
}

impl StoredDeadLetter {
    fn of(letter: &DeadLetter) -> Self {
        let event = serde_json::from_slice::<Json>(&letter.message)
            .ok()
            .filter(|json| !holds_nul(json))
            .map(|json| json.to_string());
        let payload = match &event {
            Some(_) => None,
            None => Some(storable_text(&String::from_utf8_lossy(&letter.message))),
        };
        StoredDeadLetter {
            key: letter.key.as_deref().map(storable_text),
            event,
            payload,
            reason: storable_text(&letter.reason),
        }
    }
}

/// `text` with NUL written as `\u0000`: readable, and storable in a text column (the exact
/// bytes are kept in `message`).
fn storable_text(text: &str) -> String {
    text.replace('\0', "\\u0000")
}

/// Whether a string (or an object's key) anywhere in `json` holds NUL.
fn holds_nul(json: &Json) -> bool {
    match json {
        Json::String(text) => text.contains('\0'),
        Json::Array(items) => items.iter().any(holds_nul),
        Json::Object(fields) => fields
            .iter()
            .any(|(name, value)| name.contains('\0') || holds_nul(value)),
        Json::Null | Json::Bool(_) | Json::Number(_) => false,
    }
}

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The new checkpoint: the last stream sequence the batch covers.
    pub sequence: u64,
    /// Events the batch consumed (applied, filtered out or poison).
    pub events: u64,
    /// Events left in the partition after the batch.
    pub lag: u64,
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

/// Lifecycle of a generation in `dp_generations`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationState {
    Building,
    Live,
    Retired,
    Dropped,
}

impl GenerationState {
    /// The name stored in `dp_generations.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationState::Building => "building",
            GenerationState::Live => "live",
            GenerationState::Retired => "retired",
            GenerationState::Dropped => "dropped",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "live" => GenerationState::Live,
            "retired" => GenerationState::Retired,
            "dropped" => GenerationState::Dropped,
            _ => GenerationState::Building,
        }
    }
}

/// A generation as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationRow {
    pub generation: String,
    pub state: GenerationState,
    pub definition: Definition,
    /// Seconds since it was retired (for dropping after the grace period).
    pub retired_for: Option<f64>,
}

/// Records `plan` as a generation of its projection and creates its tables, unless it exists.
/// A generation that was retired or dropped (the configuration went back to it) is rebuilt
/// from scratch.
pub async fn register(pool: &PgPool, plan: &Plan) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let state: Option<String> = sqlx::query_scalar(
        "select state from dp_generations where projection = $1 and generation = $2",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .fetch_optional(&mut *tx)
    .await
    .map_err(query_error("read the generation"))?;
    let state = state.as_deref().map(GenerationState::parse);
    let statements = plan.postgres().map(statements);
    if matches!(
        state,
        None | Some(GenerationState::Retired | GenerationState::Dropped)
    ) {
        if let Some(statements) = &statements {
            for statement in statements.drop.iter().chain(&statements.create) {
                sqlx::query(AssertSqlSafe(statement.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("create the generation's tables"))?;
            }
        }
        for statement in [
            "delete from dp_checkpoints where projection = $1 and generation = $2",
            "delete from dp_dead_letters where projection = $1 and generation = $2",
        ] {
            sqlx::query(statement)
                .bind(&plan.projection)
                .bind(&plan.generation)
                .execute(&mut *tx)
                .await
                .map_err(query_error("reset the generation"))?;
        }
        let definition =
            serde_json::to_value(&plan.definition).expect("a definition always serialises");
        sqlx::query(
            "insert into dp_generations (projection, generation, state, definition)
             values ($1, $2, 'building', $3)
             on conflict (projection, generation) do update
             set state = 'building', definition = excluded.definition, created_at = now(),
                 live_at = null, retired_at = null",
        )
        .bind(&plan.projection)
        .bind(&plan.generation)
        .bind(definition)
        .execute(&mut *tx)
        .await
        .map_err(query_error("record the generation"))?;
        tracing::info!(projection = %plan.projection, generation = %plan.generation, "new generation: building from sequence 1");
    }
    sqlx::query(
        "insert into dp_checkpoints (projection, generation, partition)
         select $1, $2, p from generate_series(0, $3 - 1) as p
         on conflict do nothing",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(plan.definition.partitions as i32)
    .execute(&mut *tx)
    .await
    .map_err(query_error("create the checkpoints"))?;
    tx.commit().await.map_err(query_error("commit"))
}

/// The generations of `projection` that are not dropped.
pub async fn generations(
    pool: &PgPool,
    projection: &str,
) -> Result<Vec<GenerationRow>, DatabaseError> {
    let rows = sqlx::query(
        "select generation, state, definition,
                extract(epoch from now() - retired_at)::float8 as retired_for
         from dp_generations where projection = $1 and state <> 'dropped'
         order by created_at",
    )
    .bind(projection)
    .fetch_all(pool)
    .await
    .map_err(query_error("read the generations"))?;
    rows.into_iter()
        .map(|row| {
            let generation: String = row.get("generation");
            let definition: Json = row.get("definition");
            let definition =
                serde_json::from_value(definition).map_err(|source| DatabaseError::Definition {
                    projection: projection.to_owned(),
                    generation: generation.clone(),
                    source,
                })?;
            Ok(GenerationRow {
                state: GenerationState::parse(row.get("state")),
                retired_for: row.get("retired_for"),
                generation,
                definition,
            })
        })
        .collect()
}

/// Makes `plan` the live generation if every partition has caught up (lag at most
/// `max_lag`): the stable view switches to its table and the previous live generation is
/// retired, in one transaction. Returns whether it switched.
pub async fn swap_if_caught_up(
    pool: &PgPool,
    plan: &Plan,
    max_lag: u64,
    reader_role: Option<&str>,
) -> Result<bool, DatabaseError> {
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let state: Option<String> = sqlx::query_scalar(
        "select state from dp_generations where projection = $1 and generation = $2 for update",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .fetch_optional(&mut *tx)
    .await
    .map_err(query_error("read the generation"))?;
    if state.as_deref() != Some("building") {
        return Ok(false);
    }
    let caught_up: bool = sqlx::query_scalar(
        "select count(*) = $3 and coalesce(bool_and(lag is not null and lag <= $4 and stopped is null and failing is null), false)
         from dp_checkpoints where projection = $1 and generation = $2",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(i64::from(plan.definition.partitions))
    .bind(max_lag as i64)
    .fetch_one(&mut *tx)
    .await
    .map_err(query_error("check the build's progress"))?;
    if !caught_up {
        return Ok(false);
    }
    if let Some(postgres) = plan.postgres() {
        for statement in statements(postgres).publish_view {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(query_error("switch the view"))?;
        }
        // A re-created view has lost its grants; the analysts keep reading across the swap.
        if let Some(role) = reader_role {
            let grant = format!(
                "grant select on {} to {}",
                quote(&postgres.view),
                quote(role)
            );
            sqlx::query(AssertSqlSafe(grant))
                .execute(&mut *tx)
                .await
                .map_err(query_error("grant the reader role the view"))?;
        }
    }
    sqlx::query(
        "update dp_generations set state = 'retired', retired_at = now()
         where projection = $1 and state = 'live' and generation <> $2",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .execute(&mut *tx)
    .await
    .map_err(query_error("retire the previous generation"))?;
    sqlx::query(
        "update dp_generations set state = 'live', live_at = now()
         where projection = $1 and generation = $2",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .execute(&mut *tx)
    .await
    .map_err(query_error("make the generation live"))?;
    tx.commit().await.map_err(query_error("commit"))?;
    tracing::info!(projection = %plan.projection, generation = %plan.generation, "generation is live");
    Ok(true)
}

/// Drops the tables of a retired generation and forgets its checkpoints.
pub async fn drop_generation(pool: &PgPool, plan: &Plan) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let updated = sqlx::query(
        "update dp_generations set state = 'dropped'
         where projection = $1 and generation = $2 and state = 'retired'",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .execute(&mut *tx)
    .await
    .map_err(query_error("mark the generation dropped"))?;
    if updated.rows_affected() == 0 {
        return Ok(()); // another replica dropped it, or it was revived
    }
    if let Some(postgres) = plan.postgres() {
        for statement in statements(postgres).drop {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(query_error("drop the generation's tables"))?;
        }
    }
    sqlx::query("delete from dp_checkpoints where projection = $1 and generation = $2")
        .bind(&plan.projection)
        .bind(&plan.generation)
        .execute(&mut *tx)
        .await
        .map_err(query_error("forget the checkpoints"))?;
    tx.commit().await.map_err(query_error("commit"))?;
    tracing::info!(projection = %plan.projection, generation = %plan.generation, "retired generation dropped");
    Ok(())
}

/// Drops everything `projection` wrote to Postgres: its stable `view`, the tables of every
/// generation it registered, and its rows in the bookkeeping tables. One transaction under the
/// DDL lock; running it again finds nothing to drop. Returns the generations dropped.
pub async fn drop_projection(
    pool: &PgPool,
    projection: &str,
    view: Option<&str>,
) -> Result<Vec<String>, DatabaseError> {
    prepare(pool).await?;
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let rows = sqlx::query(
        "select generation, definition from dp_generations
         where projection = $1 and state <> 'dropped'",
    )
    .bind(projection)
    .fetch_all(&mut *tx)
    .await
    .map_err(query_error("read the generations"))?;
    let mut drops = Vec::new();
    if let Some(view) = view {
        drops.push(format!("drop view if exists {}", quote(view)));
    }
    let mut generations = Vec::with_capacity(rows.len());
    for row in rows {
        let generation: String = row.get("generation");
        let definition: Definition =
            serde_json::from_value(row.get("definition")).map_err(|source| {
                DatabaseError::Definition {
                    projection: projection.to_owned(),
                    generation: generation.clone(),
                    source,
                }
            })?;
        // The tables are named after the definition (view stem and generation hash).
        let plan = Plan::compile(projection.to_owned(), definition, Default::default()).map_err(
            |source| DatabaseError::OldDefinition {
                projection: projection.to_owned(),
                generation: generation.clone(),
                reason: source.to_string(),
            },
        )?;
        if let Some(postgres) = plan.postgres() {
            drops.extend(statements(postgres).drop);
        }
        generations.push(generation);
    }
    for statement in drops {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(query_error("drop the projection's view and tables"))?;
    }
    for table in [
        "dp_generations",
        "dp_checkpoints",
        "dp_leases",
        "dp_replicas",
        "dp_dead_letters",
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "delete from {table} where projection = $1"
        )))
        .bind(projection)
        .execute(&mut *tx)
        .await
        .map_err(query_error("forget the projection's bookkeeping"))?;
    }
    tx.commit().await.map_err(query_error("commit"))?;
    tracing::info!(%projection, ?generations, "projection dropped from Postgres");
    Ok(generations)
}

/// The checkpoint of one partition of a generation.
pub async fn checkpoint(
    pool: &PgPool,
    plan: &Plan,
    partition: u32,
) -> Result<Checkpoint, DatabaseError> {
    let row: Option<(i64, Option<i64>, bool)> = sqlx::query_as(
        "select sequence, lag, failing is not null from dp_checkpoints
         where projection = $1 and generation = $2 and partition = $3",
    )
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

/// Applies a batch to the generation's tables (when `write` is given), records its dead
/// letters, and moves the checkpoint from `expected` to `progress.sequence`: all in one
/// transaction, and only while `fence` still holds the partition's lease.
#[allow(clippy::too_many_arguments)]
pub async fn commit(
    pool: &PgPool,
    plan: &Plan,
    write: Option<&Write>,
    partition: u32,
    fence: &Fence,
    expected: u64,
    projected: &[&Projected],
    dead_letters: &[DeadLetter],
    progress: &Progress,
    stopped: Option<&str>,
) -> Result<(), CommitError> {
    let mut tx = pool.begin().await?;
    if let (Some(write), Some(view)) = (write, plan.postgres())
        && !projected.is_empty()
    {
        apply(&mut tx, view, write, projected).await?;
    }
    if !dead_letters.is_empty() {
        record_dead_letters(&mut tx, plan, partition, dead_letters).await?;
    }
    let moved = sqlx::query(
        "update dp_checkpoints c
         set sequence = $5, events = c.events + $6, lag = $7, stopped = $8, failing = null,
             updated_at = now()
         where c.projection = $1 and c.generation = $2 and c.partition = $3 and c.sequence = $4
           and exists (select 1 from dp_leases l
                       where l.projection = $1 and l.partition = $3
                         and l.owner = $9 and l.epoch = $10)",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(partition as i32)
    .bind(expected as i64)
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
    let recorded = sqlx::query(
        "update dp_checkpoints c
         set lag = coalesce($5, c.lag), failing = $6, updated_at = now()
         where c.projection = $1 and c.generation = $2 and c.partition = $3 and c.sequence = $4
           and exists (select 1 from dp_leases l
                       where l.projection = $1 and l.partition = $3
                         and l.owner = $7 and l.epoch = $8)",
    )
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

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    view: &super::plan::PostgresPlan,
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
        Write::History { insert } => {
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

async fn record_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    partition: u32,
    dead_letters: &[DeadLetter],
) -> Result<(), CommitError> {
    let sequences: Vec<i64> = dead_letters.iter().map(|d| d.sequence as i64).collect();
    let versions: Vec<Option<i64>> = dead_letters
        .iter()
        .map(|d| d.version.map(|v| v as i64))
        .collect();
    let messages: Vec<&[u8]> = dead_letters.iter().map(|d| d.message.as_ref()).collect();
    let stored: Vec<StoredDeadLetter> = dead_letters.iter().map(StoredDeadLetter::of).collect();
    let mut keys = Vec::with_capacity(stored.len());
    let mut events = Vec::with_capacity(stored.len());
    let mut payloads = Vec::with_capacity(stored.len());
    let mut reasons = Vec::with_capacity(stored.len());
    for letter in stored {
        keys.push(letter.key);
        events.push(letter.event);
        payloads.push(letter.payload);
        reasons.push(letter.reason);
    }
    sqlx::query(
        "insert into dp_dead_letters (projection, generation, partition, sequence, key, version, event, payload, message, reason)
         select $1, $2, $3, s, k, v, e::jsonb, p, m, r
         from unnest($4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bytea[], $10::text[])
              as d(s, k, v, e, p, m, r)
         on conflict do nothing",
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(partition as i32)
    .bind(&sequences)
    .bind(&keys)
    .bind(&versions)
    .bind(&events)
    .bind(&payloads)
    .bind(&messages)
    .bind(&reasons)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The statements that apply batches of `plan` (None for a NATS sink).
pub fn write_statements(plan: &Plan) -> Option<Statements> {
    plan.postgres().map(statements)
}

/// Announces `replica` as alive and returns the live replicas of `projection`, sorted.
pub async fn heartbeat(
    pool: &PgPool,
    projection: &str,
    replica: &str,
    ttl: Duration,
) -> Result<Vec<String>, DatabaseError> {
    sqlx::query(
        "insert into dp_replicas (projection, replica, seen_at) values ($1, $2, now())
         on conflict (projection, replica) do update set seen_at = now()",
    )
    .bind(projection)
    .bind(replica)
    .execute(pool)
    .await
    .map_err(query_error("record the heartbeat"))?;
    sqlx::query_scalar(
        "select replica from dp_replicas
         where projection = $1 and seen_at > now() - make_interval(secs => $2)
         order by replica",
    )
    .bind(projection)
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(query_error("read the live replicas"))
}

/// Forgets `replica` (on a graceful stop) so the others rebalance at once.
pub async fn leave(pool: &PgPool, projection: &str, replica: &str) -> Result<(), DatabaseError> {
    sqlx::query("delete from dp_leases where projection = $1 and owner = $2")
        .bind(projection)
        .bind(replica)
        .execute(pool)
        .await
        .map_err(query_error("release the leases"))?;
    sqlx::query("delete from dp_replicas where projection = $1 and replica = $2")
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
    projection: &str,
    partition: u32,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Fence>, DatabaseError> {
    let epoch: Option<i64> = sqlx::query_scalar(
        "insert into dp_leases as l (projection, partition, owner, epoch, expires_at)
         values ($1, $2, $3, 1, now() + make_interval(secs => $4))
         on conflict (projection, partition) do update
         set owner = excluded.owner, epoch = l.epoch + 1, expires_at = excluded.expires_at
         where l.owner = excluded.owner or l.expires_at < now()
         returning epoch",
    )
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
    projection: &str,
    owner: &str,
    owned: &[(u32, i64)],
    ttl: Duration,
) -> Result<Vec<u32>, DatabaseError> {
    let partitions: Vec<i32> = owned.iter().map(|(p, _)| *p as i32).collect();
    let epochs: Vec<i64> = owned.iter().map(|(_, e)| *e).collect();
    let held: Vec<i32> = sqlx::query_scalar(
        "update dp_leases l set expires_at = now() + make_interval(secs => $3)
         from unnest($4::int[], $5::bigint[]) as o(partition, epoch)
         where l.projection = $1 and l.owner = $2 and l.partition = o.partition and l.epoch = o.epoch
         returning l.partition",
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
    projection: &str,
    partition: u32,
    fence: &Fence,
) -> Result<(), DatabaseError> {
    sqlx::query(
        "delete from dp_leases where projection = $1 and partition = $2 and owner = $3 and epoch = $4",
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
    projection: &str,
) -> Result<Vec<PartitionRow>, DatabaseError> {
    let rows = sqlx::query(
        "select c.generation, c.partition, c.sequence, c.events, c.lag, c.stopped, c.failing,
                case when l.expires_at > now() then l.owner end as owner
         from dp_checkpoints c
         left join dp_leases l on l.projection = c.projection and l.partition = c.partition
         where c.projection = $1
         order by c.generation, c.partition",
    )
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

/// Dead letters per generation of `projection`.
pub async fn dead_letter_counts(
    pool: &PgPool,
    projection: &str,
) -> Result<HashMap<String, u64>, DatabaseError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select generation, count(*) from dp_dead_letters where projection = $1 group by generation",
    )
    .bind(projection)
    .fetch_all(pool)
    .await
    .map_err(query_error("count the dead letters"))?;
    Ok(rows.into_iter().map(|(g, n)| (g, n as u64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(key: Option<&str>, message: &[u8], reason: &str) -> DeadLetter {
        DeadLetter {
            sequence: 7,
            key: key.map(str::to_owned),
            version: Some(1),
            message: bytes::Bytes::copy_from_slice(message),
            reason: reason.to_owned(),
        }
    }

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

    #[test]
    fn an_event_holding_nul_is_kept_as_text_with_nul_escaped() {
        let message = br#"{"key":"nul1","state":{"name":"a\u0000b"}}"#;
        let stored = StoredDeadLetter::of(&letter(Some("n\0l"), message, "bad \0 value"));
        assert_eq!(stored.event, None, "jsonb cannot hold \\u0000");
        assert_eq!(
            stored.payload.as_deref(),
            Some(r#"{"key":"nul1","state":{"name":"a\u0000b"}}"#)
        );
        assert_eq!(stored.key.as_deref(), Some("n\\u0000l"));
        assert_eq!(stored.reason, "bad \\u0000 value");
    }

    #[test]
    fn an_event_jsonb_can_hold_is_kept_as_json() {
        let stored = StoredDeadLetter::of(&letter(Some("k"), br#"{"a": [1, "x"]}"#, "r"));
        assert_eq!(stored.event.as_deref(), Some(r#"{"a":[1,"x"]}"#));
        assert_eq!(stored.payload, None);
    }

    #[test]
    fn a_payload_that_is_not_json_is_kept_as_readable_text() {
        let stored = StoredDeadLetter::of(&letter(None, b"not json \xff\x00", "r"));
        assert_eq!(stored.event, None);
        assert_eq!(stored.payload.as_deref(), Some("not json \u{fffd}\\u0000"));
        assert_eq!(stored.key, None);
    }
}
