//! A Projection compiled for running: its generation hash, its filters compiled once, and what
//! the sink needs to know. Pure: no pool, no client.

use std::collections::BTreeMap;

use crds::projection::{
    AggregateFunction, Filter, OnError, PostgresSink, Projection, Sink, ViewMode, sql_type_info,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{name_of, namespace_of};
use crate::expr::{ExprError, Expression};
use crate::sql::Schema;
use crate::store::{EventType, StreamNames};

/// Bumped when DreamPipe changes how it lays out a generation's tables, so that a new release
/// rebuilds instead of reading tables it no longer understands.
const LAYOUT_VERSION: u32 = 1;

/// Everything that determines a generation's output: hashed into its name and stored with it,
/// so that replicas started with a newer configuration can keep the serving generation
/// up to date until the new one takes over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    pub namespace: String,
    pub entity: String,
    pub partitions: u32,
    pub filters: Vec<Filter>,
    pub sink: Sink,
    /// The Projection's `spec.rebuild` token, when one is set: a new token is a new generation.
    /// Left out of the hash when absent, so definitions stored before it existed keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<String>,
}

impl Definition {
    /// The definition of `projection` over an Entity with `partitions` partitions.
    pub fn of(projection: &Projection, partitions: u32) -> Self {
        Definition {
            namespace: namespace_of(&projection.metadata).to_owned(),
            entity: projection.spec.entity.clone(),
            partitions,
            filters: projection.spec.filters.clone(),
            sink: projection.spec.sink.clone(),
            rebuild: projection.spec.rebuild.clone().filter(|t| !t.is_empty()),
        }
    }

    /// The generation: a hash of everything that changes the output. Replicas and `onError`
    /// are left out on purpose: scaling must not rebuild, and switching a stopped partition to
    /// `deadLetter` should unblock it rather than replay everything (ADR 0012).
    pub fn generation(&self) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            layout: u32,
            definition: &'a Definition,
        }
        let canonical = serde_json::to_vec(&Hashed {
            layout: LAYOUT_VERSION,
            definition: self,
        })
        .expect("a definition always serialises");
        let digest = Sha256::digest(&canonical);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a definition cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("filter {index} does not compile")]
    Filter {
        index: usize,
        #[source]
        source: ExprError,
    },
    #[error("the sink sets neither postgres nor nats")]
    NoSink,
    #[error("column {column:?} has an SQL type DreamPipe does not know: {type_:?}")]
    ColumnType { column: String, type_: String },
    #[error("{what} {name:?} is not a declared column")]
    UnknownColumn { what: &'static str, name: String },
}

/// One compiled filter.
#[derive(Debug)]
pub enum Step {
    /// Passes the event when the predicate is true.
    Where(Expression),
    /// Assigns columns (by name) from expressions.
    Set(Vec<(String, Expression)>),
    /// Passes the event when its type is listed.
    Types(Vec<EventType>),
}

/// A column of a Postgres view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnPlan {
    pub name: String,
    /// Canonical lower-case SQL type.
    pub sql_type: String,
    pub jsonb: bool,
}

/// An aggregate output column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggregatePlan {
    /// Keys in the group.
    Count { name: String },
    /// Sum of a numeric column (index into `columns`).
    Sum { name: String, of: usize },
}

/// Where the projected rows go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Postgres(PostgresPlan),
    Nats { subject: String },
}

/// A Postgres view's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresPlan {
    /// The stable view readers query.
    pub view: String,
    /// This generation's table.
    pub table: String,
    /// For `aggregate`: the table of each key's current contribution.
    pub members: String,
    pub mode: ViewMode,
    pub columns: Vec<ColumnPlan>,
    /// Indexes into `columns`.
    pub group_by: Vec<usize>,
    pub aggregates: Vec<AggregatePlan>,
}

/// Which CEL variables any expression uses, so evaluation builds only those.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub key: bool,
    pub state: bool,
    pub previous: bool,
    pub event: bool,
}

/// A generation ready to run.
#[derive(Debug)]
pub struct Plan {
    /// `<namespace>/<name>` of the Projection.
    pub projection: String,
    /// The namespace's Postgres schema, where every table and view of the Projection lives.
    pub schema: Schema,
    pub definition: Definition,
    pub generation: String,
    pub steps: Vec<Step>,
    pub output: Output,
    pub needs: Needs,
    pub on_error: OnError,
}

impl Plan {
    /// Compiles the Projection's current configuration.
    pub fn new(projection: &Projection, partitions: u32) -> Result<Self, PlanError> {
        Plan::compile(
            projection_id(projection),
            Definition::of(projection, partitions),
            projection.spec.on_error,
        )
    }

    /// Compiles a stored definition.
    pub fn compile(
        projection: String,
        definition: Definition,
        on_error: OnError,
    ) -> Result<Self, PlanError> {
        let generation = definition.generation();
        let mut steps = Vec::with_capacity(definition.filters.len());
        let mut needs = Needs::default();
        let mut note = |expression: &Expression| {
            needs.key |= expression.uses("key");
            needs.state |= expression.uses("state");
            needs.previous |= expression.uses("previous");
            needs.event |= expression.uses("event");
        };
        for (index, filter) in definition.filters.iter().enumerate() {
            let compile = |source: &str| {
                Expression::compile(source).map_err(|source| PlanError::Filter { index, source })
            };
            if let Some(predicate) = &filter.where_ {
                let expression = compile(predicate)?;
                note(&expression);
                steps.push(Step::Where(expression));
            } else if let Some(assignments) = &filter.set {
                let mut compiled = Vec::with_capacity(assignments.len());
                for (column, source) in assignments {
                    let expression = compile(source)?;
                    note(&expression);
                    compiled.push((column.clone(), expression));
                }
                steps.push(Step::Set(compiled));
            } else if let Some(types) = &filter.types {
                steps.push(Step::Types(types.clone()));
            }
        }
        let output = match (&definition.sink.postgres, &definition.sink.nats) {
            (Some(postgres), _) => Output::Postgres(postgres_plan(postgres, &generation)?),
            (None, Some(nats)) => Output::Nats {
                subject: nats.subject.clone(),
            },
            (None, None) => return Err(PlanError::NoSink),
        };
        Ok(Plan {
            projection,
            schema: Schema::of_namespace(&definition.namespace),
            definition,
            generation,
            steps,
            output,
            needs,
            on_error,
        })
    }

    /// Stream names of the projected Entity.
    pub fn stream_names(&self) -> StreamNames {
        StreamNames::new(
            &self.definition.namespace,
            &self.definition.entity,
            self.definition.partitions,
        )
    }

    /// The Postgres layout, when the sink is Postgres.
    pub fn postgres(&self) -> Option<&PostgresPlan> {
        match &self.output {
            Output::Postgres(plan) => Some(plan),
            Output::Nats { .. } => None,
        }
    }

    /// Whether a build from the start needs each key's latest event only (ADR 82): in
    /// `latest` and `aggregate` modes a key's row (or contribution) is the effect of its last
    /// event alone, every earlier one being overwritten. `history` keeps every event, and a
    /// NATS sink republishes every event.
    pub fn latest_events_suffice(&self) -> bool {
        self.postgres()
            .is_some_and(|view| view.mode != ViewMode::History)
    }
}

/// `<namespace>/<name>`: how checkpoints, leases and generations name a Projection.
pub fn projection_id(projection: &Projection) -> String {
    format!(
        "{}/{}",
        namespace_of(&projection.metadata),
        name_of(&projection.metadata)
    )
}

fn postgres_plan(sink: &PostgresSink, generation: &str) -> Result<PostgresPlan, PlanError> {
    let mut columns = Vec::with_capacity(sink.columns.len());
    for column in &sink.columns {
        if sql_type_info(&column.type_).is_none() {
            return Err(PlanError::ColumnType {
                column: column.name.clone(),
                type_: column.type_.clone(),
            });
        }
        let sql_type = column.type_.trim().to_ascii_lowercase();
        columns.push(ColumnPlan {
            name: column.name.clone(),
            jsonb: sql_type == "jsonb",
            sql_type,
        });
    }
    let index_of = |what: &'static str, name: &str| {
        columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| PlanError::UnknownColumn {
                what,
                name: name.to_owned(),
            })
    };
    let group_by = sink
        .group_by
        .iter()
        .map(|name| index_of("groupBy", name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut aggregates = Vec::with_capacity(sink.aggregates.len());
    for aggregate in &sink.aggregates {
        aggregates.push(match (aggregate.function, &aggregate.of) {
            (AggregateFunction::Sum, Some(of)) => AggregatePlan::Sum {
                name: aggregate.name.clone(),
                of: index_of("sum of", of)?,
            },
            _ => AggregatePlan::Count {
                name: aggregate.name.clone(),
            },
        });
    }
    // Postgres identifiers hold 63 bytes; views are at most 63 ASCII characters, so keep room
    // for the generation and the suffix.
    let stem: String = sink.view.chars().take(36).collect();
    let table = format!("dp_{stem}_{generation}");
    Ok(PostgresPlan {
        view: sink.view.clone(),
        members: format!("{table}_keys"),
        table,
        mode: sink.mode,
        columns,
        group_by,
        aggregates,
    })
}

/// Column name -> value assignments made by `set` filters, in filter order.
pub type Assignments = BTreeMap<String, serde_json::Value>;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn projection(yaml: &str) -> Projection {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Projection
metadata: {name: customers, namespace: shop}
spec:
  entity: customer
  replicas: 2
  filters:
    - where: "state.active"
    - set: {city: "state.address.city"}
  sink:
    postgres:
      view: customers
      columns: [{name: name, type: text}, {name: city, type: text}]
"#;

    #[test]
    fn generation_ignores_replicas_and_on_error_but_not_filters() {
        let base = Plan::new(&projection(BASE), 8).unwrap();
        let scaled = projection(&BASE.replace("replicas: 2", "replicas: 5\n  onError: Skip"));
        assert_eq!(Plan::new(&scaled, 8).unwrap().generation, base.generation);
        let refiltered = projection(&BASE.replace("state.active", "!state.active"));
        assert_ne!(
            Plan::new(&refiltered, 8).unwrap().generation,
            base.generation
        );
        let retyped =
            projection(&BASE.replace("name: city, type: text", "name: city, type: jsonb"));
        assert_ne!(Plan::new(&retyped, 8).unwrap().generation, base.generation);
        assert_ne!(
            Plan::new(&projection(BASE), 4).unwrap().generation,
            base.generation
        );
        assert_eq!(base.generation.len(), 16);
    }

    #[test]
    fn a_new_rebuild_token_is_a_new_generation_and_no_token_changes_nothing() {
        let base = Plan::new(&projection(BASE), 8).unwrap();
        let asked = |token: &str| {
            let yaml = BASE.replace("replicas: 2", &format!("replicas: 2\n  rebuild: {token:?}"));
            Plan::new(&projection(&yaml), 8).unwrap().generation
        };
        assert_ne!(asked("2026-12-02"), base.generation);
        assert_ne!(asked("2026-12-03"), asked("2026-12-02"));
        assert_eq!(asked("2026-12-02"), asked("2026-12-02"));
        assert_eq!(
            asked(""),
            base.generation,
            "an empty token asks for nothing"
        );
        // Definitions stored before the token existed hash (and so name their tables) as before.
        let stored = serde_json::to_value(&base.definition).unwrap();
        assert!(stored.get("rebuild").is_none(), "{stored}");
        let read: Definition = serde_json::from_value(stored).unwrap();
        assert_eq!(read.generation(), base.generation);
    }

    #[test]
    fn tables_are_named_by_view_and_generation() {
        let plan = Plan::new(&projection(BASE), 8).unwrap();
        let postgres = plan.postgres().unwrap();
        assert_eq!(postgres.table, format!("dp_customers_{}", plan.generation));
        assert_eq!(postgres.members, format!("{}_keys", postgres.table));
        assert_eq!(plan.projection, "shop/customers");
        let long =
            projection(&BASE.replace("view: customers", &format!("view: {}", "v".repeat(63))));
        let table = Plan::new(&long, 8)
            .unwrap()
            .postgres()
            .unwrap()
            .members
            .clone();
        assert!(table.len() <= 63, "{table}");
    }

    #[test]
    fn needs_list_only_the_variables_the_filters_use() {
        let plan = Plan::new(&projection(BASE), 8).unwrap();
        assert_eq!(
            plan.needs,
            Needs {
                key: false,
                state: true,
                previous: false,
                event: false
            }
        );
    }

    #[test]
    fn a_filter_that_does_not_compile_names_its_index() {
        let broken = projection(&BASE.replace("state.address.city", "state.("));
        let error = Plan::new(&broken, 8).unwrap_err();
        assert!(
            matches!(error, PlanError::Filter { index: 1, .. }),
            "{error}"
        );
    }
}
