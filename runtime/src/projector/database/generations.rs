//! Generations of a projection: registration (and the rebuild of one the configuration went
//! back to), the swap to a caught-up generation, and dropping retired ones.

use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::super::plan::{Definition, Plan};
use super::super::schema::{quote, statements};
use super::{DatabaseError, lock_ddl, prepare, query_error};
use crate::sql::{Schema, tables};

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
/// from scratch. The view name is claimed first: when another Projection of the namespace
/// owns it, nothing is created and the answer is [`DatabaseError::ViewConflict`].
pub async fn register(pool: &PgPool, plan: &Plan) -> Result<(), DatabaseError> {
    let schema = &plan.schema;
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    if let Some(postgres) = plan.postgres() {
        sqlx::query(AssertSqlSafe(format!(
            "insert into {} (view, projection) values ($1, $2) on conflict (view) do nothing",
            schema.table(tables::VIEWS)
        )))
        .bind(&postgres.view)
        .bind(&plan.projection)
        .execute(&mut *tx)
        .await
        .map_err(query_error("claim the view"))?;
        refuse_other_owner(&mut tx, plan, &postgres.view).await?;
    }
    let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select state from {} where projection = $1 and generation = $2",
        schema.table(tables::GENERATIONS)
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .fetch_optional(&mut *tx)
    .await
    .map_err(query_error("read the generation"))?;
    let state = state.as_deref().map(GenerationState::parse);
    let statements = plan.postgres().map(|postgres| statements(schema, postgres));
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
        for table in [tables::CHECKPOINTS, tables::DEAD_LETTERS] {
            sqlx::query(AssertSqlSafe(format!(
                "delete from {} where projection = $1 and generation = $2",
                schema.table(table)
            )))
            .bind(&plan.projection)
            .bind(&plan.generation)
            .execute(&mut *tx)
            .await
            .map_err(query_error("reset the generation"))?;
        }
        let definition =
            serde_json::to_value(&plan.definition).expect("a definition always serialises");
        sqlx::query(AssertSqlSafe(format!(
            "insert into {} (projection, generation, state, definition)
             values ($1, $2, 'building', $3)
             on conflict (projection, generation) do update
             set state = 'building', definition = excluded.definition, created_at = now(),
                 live_at = null, retired_at = null",
            schema.table(tables::GENERATIONS)
        )))
        .bind(&plan.projection)
        .bind(&plan.generation)
        .bind(definition)
        .execute(&mut *tx)
        .await
        .map_err(query_error("record the generation"))?;
        tracing::info!(projection = %plan.projection, generation = %plan.generation, "new generation: building from sequence 1");
    }
    sqlx::query(AssertSqlSafe(format!(
        "insert into {} (projection, generation, partition)
         select $1, $2, p from generate_series(0, $3 - 1) as p
         on conflict do nothing",
        schema.table(tables::CHECKPOINTS)
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(plan.definition.partitions as i32)
    .execute(&mut *tx)
    .await
    .map_err(query_error("create the checkpoints"))?;
    tx.commit().await.map_err(query_error("commit"))
}

/// Fails with [`DatabaseError::ViewConflict`] unless `plan`'s projection owns `view`; the
/// claim's row stays locked until the transaction ends, so the owner cannot change meanwhile.
async fn refuse_other_owner(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    plan: &Plan,
    view: &str,
) -> Result<(), DatabaseError> {
    let owner: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select projection from {} where view = $1 for update",
        plan.schema.table(tables::VIEWS)
    )))
    .bind(view)
    .fetch_optional(&mut **tx)
    .await
    .map_err(query_error("read the view's owner"))?;
    match owner {
        Some(owner) if owner != plan.projection => Err(DatabaseError::ViewConflict {
            view: view.to_owned(),
            owner,
        }),
        _ => Ok(()),
    }
}

/// The Projection (`<namespace>/<name>`) that owns `view` in `schema`, if any.
pub async fn view_owner(
    pool: &PgPool,
    schema: &Schema,
    view: &str,
) -> Result<Option<String>, DatabaseError> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "select projection from {} where view = $1",
        schema.table(tables::VIEWS)
    )))
    .bind(view)
    .fetch_optional(pool)
    .await
    .map_err(query_error("read the view's owner"))
}

/// The generations of `projection` that are not dropped.
pub async fn generations(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
) -> Result<Vec<GenerationRow>, DatabaseError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "select generation, state, definition,
                extract(epoch from now() - retired_at)::float8 as retired_for
         from {} where projection = $1 and state <> 'dropped'
         order by created_at",
        schema.table(tables::GENERATIONS)
    )))
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
    let schema = &plan.schema;
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select state from {} where projection = $1 and generation = $2 for update",
        schema.table(tables::GENERATIONS)
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .fetch_optional(&mut *tx)
    .await
    .map_err(query_error("read the generation"))?;
    if state.as_deref() != Some("building") {
        return Ok(false);
    }
    let caught_up: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "select count(*) = $3 and coalesce(bool_and(lag is not null and lag <= $4 and stopped is null and failing is null), false)
         from {} where projection = $1 and generation = $2",
        schema.table(tables::CHECKPOINTS)
    )))
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
        // The view is switched only by its owner, whatever happened since registration.
        refuse_other_owner(&mut tx, plan, &postgres.view).await?;
        for statement in statements(schema, postgres).publish_view {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(query_error("switch the view"))?;
        }
        // A re-created view has lost its grants; the analysts keep reading across the swap.
        if let Some(role) = reader_role {
            let grant = format!(
                "grant select on {} to {}",
                schema.table(&postgres.view),
                quote(role)
            );
            sqlx::query(AssertSqlSafe(grant))
                .execute(&mut *tx)
                .await
                .map_err(query_error("grant the reader role the view"))?;
        }
    }
    sqlx::query(AssertSqlSafe(format!(
        "update {} set state = 'retired', retired_at = now()
         where projection = $1 and state = 'live' and generation <> $2",
        schema.table(tables::GENERATIONS)
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .execute(&mut *tx)
    .await
    .map_err(query_error("retire the previous generation"))?;
    sqlx::query(AssertSqlSafe(format!(
        "update {} set state = 'live', live_at = now()
         where projection = $1 and generation = $2",
        schema.table(tables::GENERATIONS)
    )))
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
    let schema = &plan.schema;
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let updated = sqlx::query(AssertSqlSafe(format!(
        "update {} set state = 'dropped'
         where projection = $1 and generation = $2 and state = 'retired'",
        schema.table(tables::GENERATIONS)
    )))
    .bind(&plan.projection)
    .bind(&plan.generation)
    .execute(&mut *tx)
    .await
    .map_err(query_error("mark the generation dropped"))?;
    if updated.rows_affected() == 0 {
        return Ok(()); // another replica dropped it, or it was revived
    }
    if let Some(postgres) = plan.postgres() {
        for statement in statements(schema, postgres).drop {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(query_error("drop the generation's tables"))?;
        }
    }
    sqlx::query(AssertSqlSafe(format!(
        "delete from {} where projection = $1 and generation = $2",
        schema.table(tables::CHECKPOINTS)
    )))
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
/// DDL lock; running it again finds nothing to drop. The view is dropped only when this
/// projection owns it, and its claim is released with the rest. Returns the generations
/// dropped.
pub async fn drop_projection(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    view: Option<&str>,
) -> Result<Vec<String>, DatabaseError> {
    prepare(pool, schema).await?;
    let mut tx = pool.begin().await.map_err(query_error("begin"))?;
    lock_ddl(&mut tx).await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "select generation, definition from {}
         where projection = $1 and state <> 'dropped'",
        schema.table(tables::GENERATIONS)
    )))
    .bind(projection)
    .fetch_all(&mut *tx)
    .await
    .map_err(query_error("read the generations"))?;
    let mut drops = Vec::new();
    if let Some(view) = view {
        let owner: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "select projection from {} where view = $1",
            schema.table(tables::VIEWS)
        )))
        .bind(view)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_error("read the view's owner"))?;
        // Another Projection's view is left alone: this one was refused and never served it.
        if owner.as_deref().is_none_or(|owner| owner == projection) {
            drops.push(format!("drop view if exists {}", schema.table(view)));
        }
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
            drops.extend(statements(schema, postgres).drop);
        }
        generations.push(generation);
    }
    for statement in drops {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(query_error("drop the projection's view and tables"))?;
    }
    for table in tables::PER_PROJECTION.iter().chain(&[tables::VIEWS]) {
        sqlx::query(AssertSqlSafe(format!(
            "delete from {} where projection = $1",
            schema.table(table)
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
