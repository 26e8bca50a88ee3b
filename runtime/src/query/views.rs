//! View reads from Postgres, through stable view names only: a name is served when Postgres
//! lists it as a view of the namespace's schema (ADR 60) that the connected role may select,
//! never when it is a generation's table.
//! Filters compare declared columns for equality; names are checked against the view's own
//! columns and quoted, values are always bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::QueryError;
use super::entities::truncate;
use crate::projector::database::sqlstate;
use crate::sql::{Schema, quote};

/// Longest filter value accepted, in bytes.
const MAX_FILTER_BYTES: usize = 1024;

/// Reads views.
#[derive(Debug)]
pub struct Views {
    pool: PgPool,
    /// The namespace's schema: the only place views are looked for.
    schema: Schema,
    /// Columns of the views read so far; dropped when Postgres says a view changed.
    columns: Mutex<HashMap<String, Arc<Vec<String>>>>,
}

/// One page of a view's rows, in a stable order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewPage {
    pub view: String,
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Value>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

impl Views {
    /// Views of `schema` (`Schema::of_namespace`), read through `pool`.
    pub fn new(pool: PgPool, schema: Schema) -> Self {
        Views {
            pool,
            schema,
            columns: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The columns of `view` in declared order, or `UnknownView`.
    async fn columns(&self, view: &str) -> Result<Arc<Vec<String>>, QueryError> {
        if !crds::validate::is_sql_identifier(view) {
            return Err(QueryError::UnknownView(truncate(view)));
        }
        if let Some(columns) = self.columns.lock().expect("columns lock").get(view) {
            return Ok(columns.clone());
        }
        // The catalogue directly (information_schema's joins cost more than the read itself);
        // only views, and only those the connected role may select from.
        let columns: Vec<String> = sqlx::query_scalar(
            "select a.attname::text
             from pg_class c
             join pg_namespace n on n.oid = c.relnamespace
             join pg_attribute a on a.attrelid = c.oid
             where n.nspname = $2 and c.relname = $1 and c.relkind = 'v'
               and a.attnum > 0 and not a.attisdropped
               and has_schema_privilege(n.oid, 'usage')
               and has_table_privilege(c.oid, 'select')
             order by a.attnum",
        )
        .bind(view)
        .bind(self.schema.name())
        .fetch_all(&self.pool)
        .await?;
        if columns.is_empty() {
            return Err(QueryError::UnknownView(view.to_owned()));
        }
        let columns = Arc::new(columns);
        self.columns
            .lock()
            .expect("columns lock")
            .insert(view.to_owned(), columns.clone());
        Ok(columns)
    }

    /// A page of `view`'s rows matching every `(column, value)` filter.
    pub async fn page(
        &self,
        view: &str,
        filters: &[(String, String)],
        limit: usize,
        offset: u64,
    ) -> Result<ViewPage, QueryError> {
        match self.page_once(view, filters, limit, offset).await {
            // The view was replaced (a new generation), dropped or its grant revoked since its
            // columns were cached, or it may have gained the column asked for: look again.
            Err(QueryError::UnknownColumn { .. }) => {
                self.columns.lock().expect("columns lock").remove(view);
                self.page_once(view, filters, limit, offset).await
            }
            Err(QueryError::Database(error)) if view_changed(&error) => {
                self.columns.lock().expect("columns lock").remove(view);
                self.page_once(view, filters, limit, offset).await
            }
            // Pooled connections the server ended (a restart, a failover): the pool drops
            // each one a read fails on, so reading again reaches a live one or opens one.
            // Every pooled connection may be dead, so as many times as the pool holds.
            Err(QueryError::Database(error)) if connection_lost(&error) => {
                let mut attempts = 1;
                loop {
                    match self.page_once(view, filters, limit, offset).await {
                        Err(QueryError::Database(error))
                            if connection_lost(&error)
                                && attempts <= self.pool.options().get_max_connections() =>
                        {
                            attempts += 1;
                        }
                        result => break result,
                    }
                }
            }
            result => result,
        }
    }

    async fn page_once(
        &self,
        view: &str,
        filters: &[(String, String)],
        limit: usize,
        offset: u64,
    ) -> Result<ViewPage, QueryError> {
        let columns = self.columns(view).await?;
        let mut conditions = Vec::with_capacity(filters.len());
        for (index, (column, value)) in filters.iter().enumerate() {
            if !columns.iter().any(|c| c == column) {
                return Err(QueryError::UnknownColumn {
                    view: view.to_owned(),
                    column: truncate(column),
                });
            }
            if value.len() > MAX_FILTER_BYTES {
                return Err(QueryError::BadRequest(format!(
                    "the filter on {column} is {} bytes long; at most {MAX_FILTER_BYTES} are allowed",
                    value.len()
                )));
            }
            if value.contains('\0') {
                return Err(QueryError::BadRequest(format!(
                    "the filter on {column} contains a NUL character"
                )));
            }
            conditions.push(format!("{}::text = ${}", quote(column), index + 1));
        }
        // Bookkeeping columns give latest and history views a unique order; aggregate views
        // are unique over all their columns.
        let order = ["dp_sequence", "dp_key"]
            .iter()
            .find(|c| columns.iter().any(|column| column == *c))
            .map(|c| quote(c))
            .unwrap_or_else(|| {
                columns
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        let sql = format!(
            "select to_jsonb(v) from {} v {} order by {order} limit {} offset {offset}",
            self.schema.table(view),
            if conditions.is_empty() {
                String::new()
            } else {
                format!("where {}", conditions.join(" and "))
            },
            limit + 1,
        );
        let mut query = sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(sql));
        for (_, value) in filters {
            query = query.bind(value);
        }
        let mut rows = query.fetch_all(&self.pool).await?;
        let next_page_token = (rows.len() > limit).then(|| (offset + limit as u64).to_string());
        rows.truncate(limit);
        Ok(ViewPage {
            view: view.to_owned(),
            rows,
            next_page_token,
        })
    }
}

/// Whether a read failed because its connection was gone: closed under it (I/O) or ended by
/// the server (SQLSTATE class 08, connection exception; 57P01-57P03, shutdown).
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        _ => sqlstate(error).is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
    }
}

/// Whether a database error says the view is not what was cached: undefined column or
/// relation, or insufficient privilege.
fn view_changed(error: &sqlx::Error) -> bool {
    sqlstate(error).is_some_and(|code| matches!(code.as_str(), "42703" | "42P01" | "42501"))
}
