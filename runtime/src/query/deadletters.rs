//! A Projection's dead letters, read-only, through the projector's own queries
//! (`projector::database::dead_letters`). Served from a database URL of their own: the
//! views' URL is the analysts' role, which must never read dead letters (ADR 0052).

use sqlx::PgPool;

use super::QueryError;
use super::entities::truncate;
use crate::projector::database::{
    self, DatabaseError, DeadLetterFilter, DeadLetterPage, DeadLetterRecord,
};

/// Reads the dead letters of the Projections of one namespace.
#[derive(Debug)]
pub struct DeadLetters {
    pool: PgPool,
    namespace: String,
}

impl DeadLetters {
    pub fn new(pool: PgPool, namespace: String) -> Self {
        DeadLetters { pool, namespace }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The namespace's schema, where its projectors keep their dead letters (ADR 60).
    fn schema(&self) -> crate::sql::Schema {
        crate::sql::Schema::of_namespace(&self.namespace)
    }

    fn projection_id(&self, projection: &str) -> Result<String, QueryError> {
        if !crds::validate::is_dns_label(projection) {
            return Err(QueryError::BadRequest(format!(
                "{:?} is not a Projection name (a DNS label)",
                truncate(projection)
            )));
        }
        Ok(format!("{}/{projection}", self.namespace))
    }

    /// A page of `projection`'s dead letters; an unknown Projection has none.
    pub async fn page(
        &self,
        projection: &str,
        filter: &DeadLetterFilter,
    ) -> Result<DeadLetterPage, QueryError> {
        let id = self.projection_id(projection)?;
        let mut page = database::list_dead_letters(&self.pool, &self.schema(), &id, filter)
            .await
            .map_err(unavailable)?;
        page.projection = projection.to_owned();
        Ok(page)
    }

    /// Dead letter `id` of `projection`.
    pub async fn one(&self, projection: &str, id: i64) -> Result<DeadLetterRecord, QueryError> {
        let projection_id = self.projection_id(projection)?;
        database::dead_letter(&self.pool, &self.schema(), &projection_id, id)
            .await
            .map_err(unavailable)?
            .map(|mut record| {
                record.projection = projection.to_owned();
                record
            })
            .ok_or_else(|| {
                QueryError::NotFound(format!("projection {projection} has no dead letter {id}"))
            })
    }
}

fn unavailable(error: DatabaseError) -> QueryError {
    match error {
        DatabaseError::Query { source, .. } => QueryError::Database(source),
        other => QueryError::DeadLetters(other),
    }
}
