//! Where a namespace's relations live in Postgres (DESIGN §10, ADR 60): the one type that
//! renders a schema-qualified, quoted name, so no statement reaches a relation by a search
//! path. The projector's bookkeeping, its generation tables, the stable views and the query
//! service's reads all name their relations through a [`Schema`].

/// The relations DreamPipe keeps in every namespace's schema beside the views.
pub mod tables {
    pub const GENERATIONS: &str = "dp_generations";
    pub const CHECKPOINTS: &str = "dp_checkpoints";
    pub const LEASES: &str = "dp_leases";
    pub const REPLICAS: &str = "dp_replicas";
    pub const DEAD_LETTERS: &str = "dp_dead_letters";
    /// Which Projection owns each view name of the namespace.
    pub const VIEWS: &str = "dp_views";
    /// Every bookkeeping table, for a projection's drop.
    pub const PER_PROJECTION: &[&str] = &[GENERATIONS, CHECKPOINTS, LEASES, REPLICAS, DEAD_LETTERS];
}

/// A namespace's Postgres schema: `dp_<namespace>` (`crds::projection::postgres_schema`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Schema {
    name: String,
}

impl Schema {
    /// The schema of Kubernetes namespace `namespace`.
    pub fn of_namespace(namespace: &str) -> Self {
        Schema {
            name: crds::projection::postgres_schema(namespace),
        }
    }

    /// The schema's name as Postgres stores it (for binding, e.g. against `pg_namespace`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema's name as a quoted identifier.
    pub fn quoted(&self) -> String {
        quote(&self.name)
    }

    /// `relation` in this schema: `"dp_shop"."customers"`.
    pub fn table(&self, relation: &str) -> String {
        format!("{}.{}", self.quoted(), quote(relation))
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_qualified_by_the_namespace_schema_and_quoted() {
        let schema = Schema::of_namespace("team-a");
        assert_eq!(schema.name(), "dp_team_a");
        assert_eq!(schema.table("customers"), "\"dp_team_a\".\"customers\"");
        assert_eq!(schema.table("a\"b"), "\"dp_team_a\".\"a\"\"b\"");
    }
}
