//! `Projection`: a read model. An ordered chain of filters over one Entity's events into a
//! Postgres view or a NATS subject, replayed from the start and swapped by generation.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, PodOverlay, conditions_schema};
use crate::validate::{Invalid, Problems, is_nats_subject};

/// A read model kept up to date from one Entity's events.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "dreampipe.io",
    version = "v1alpha1",
    kind = "Projection",
    doc = "A Projection: a chain of filters over an Entity's events into a Postgres view or a NATS subject.",
    namespaced,
    status = "ProjectionStatus",
    shortname = "proj",
    category = "dreampipe",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Lag","type":"number","jsonPath":".status.lagSeconds","description":"Seconds the serving generation is behind its stream"}"#,
    printcolumn = r#"{"name":"Behind","type":"integer","jsonPath":".status.lag","description":"Events the serving generation is behind its stream","priority":1}"#,
    printcolumn = r#"{"name":"View","type":"string","jsonPath":".status.view"}"#,
    printcolumn = r#"{"name":"Generation","type":"string","jsonPath":".status.activeGeneration","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionSpec {
    /// Name of the Entity (same namespace) whose events are projected.
    #[schemars(length(min = 1, max = 63))]
    pub entity: String,

    /// Filters applied in order to every event; an event that a filter drops goes no further.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub filters: Vec<Filter>,

    /// Where the projected rows or events go: exactly one of `postgres` or `nats`.
    pub sink: Sink,

    /// Projector pods; the stream's partitions are shared among them. Scalable with
    /// `kubectl scale projection/<name> --replicas=N`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1024))]
    pub replicas: i32,

    /// What a poison event (a CEL error, a value the sink rejects) does: `DeadLetter` records
    /// it and goes on (the default), `Skip` drops it, `Stop` halts its partition.
    #[serde(default)]
    pub on_error: OnError,

    /// What deleting the Projection does to what it wrote to Postgres: `Retain` (the default)
    /// keeps the view and its tables; `Delete` drops the view, every generation's tables and
    /// the projection's bookkeeping before the Projection goes.
    #[serde(default)]
    pub deletion_policy: ProjectionDeletionPolicy,

    /// A free-form token; changing it (to a date, a ticket number) asks for a fresh generation
    /// replayed from the start of the stream, exactly as a filter change does, e.g. after bad
    /// data upstream was fixed. The serving generation keeps the view until the new one is
    /// Live. Omitted or empty, no rebuild is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rebuild: Option<String>,
    /// Pod settings of the projector pods: resources, placement, spread, labels and annotations,
    /// image pull secrets, ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverlay>,
    /// The Postgres database the projector writes, by reference to a Secret of the
    /// Projection's namespace. Omitted: the operator's default Secret (the chart's
    /// `dreampipe-database`, key `writer-url`). The operator never reads the Secret; the
    /// projector's pod does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<ProjectionDatabase>,
    /// Scale the projector on its lag in seconds: the operator owns the replicas between
    /// `minReplicas` and `maxReplicas` (never above the Entity's partitions) and
    /// `spec.replicas` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
}

/// Bounds and target of a projector scaled on its lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not be above maxReplicas"))]
pub struct Autoscale {
    /// Fewest projector pods, at least 1.
    #[schemars(range(min = 1, max = 1024))]
    pub min_replicas: i32,
    /// Most projector pods; the Entity's partitions bound it too (a replica without a
    /// partition does nothing).
    #[schemars(range(min = 1, max = 1024))]
    pub max_replicas: i32,
    /// The lag, in seconds behind the stream head, the projector should keep below: above it
    /// replicas are added, well below it (half) one is taken away.
    #[schemars(range(min = 1, max = 86400))]
    pub target_lag_seconds: u32,
}

/// Where a projector finds its database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionDatabase {
    /// The Secret (in the Projection's namespace) and key holding the `postgres://` URL of a
    /// role that may create schemas and tables (the chart's writer).
    pub secret_ref: DatabaseSecretRef,
}

/// A key of a Secret in the Projection's namespace holding a database URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret holding the URL; `writer-url` when omitted.
    #[serde(default = "default_database_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_database_key() -> String {
    "writer-url".to_owned()
}

fn default_replicas() -> i32 {
    1
}

/// What deleting a Projection does to its view and tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProjectionDeletionPolicy {
    /// Keep the view and its tables; analysts keep reading the last rows.
    #[default]
    Retain,
    /// Drop the view, its tables and the projection's bookkeeping rows.
    Delete,
}

/// One step of a projection; exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.where), has(self.set), has(self.types)].filter(x, x).size() == 1").message("a filter sets exactly one of where, set or types"))]
pub struct Filter {
    /// CEL predicate over `key`, `state`, `previous` and `event`; the event passes when true.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub where_: Option<String>,
    /// Column -> CEL expression computing its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, String>>,
    /// Event types that pass: `created`, `updated`, `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3))]
    pub types: Option<Vec<EventType>>,
}

/// The type of an event in an Entity stream.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Created,
    Updated,
    Deleted,
}

/// Where a projection writes; exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.postgres) != has(self.nats)").message("set exactly one of postgres or nats"))]
pub struct Sink {
    /// A Postgres view, maintained in a table per generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSink>,
    /// A NATS subject the filtered events are republished to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSink>,
}

/// A Postgres view kept equal to a function of the Entity's states.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'aggregate' || (size(self.groupBy) == 0 && size(self.aggregates) == 0)").message("groupBy and aggregates belong to mode aggregate"))]
#[x_kube(validation = Rule::new("self.mode != 'aggregate' || size(self.aggregates) > 0").message("mode aggregate needs at least one aggregate"))]
pub struct PostgresSink {
    /// Name of the stable view readers query, e.g. `customers`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub view: String,
    /// `latest` (one row per key whose current state passes), `history` (one row per passing
    /// event) or `aggregate` (grouped count and sum).
    #[serde(default)]
    pub mode: ViewMode,
    /// The view's columns, each filled by a `set` filter or else by the state field of the same name.
    #[schemars(length(min = 1, max = 256))]
    pub columns: Vec<Column>,
    /// Columns the aggregate groups by (mode `aggregate`).
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub group_by: Vec<String>,
    /// Aggregates computed per group (mode `aggregate`).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub aggregates: Vec<Aggregate>,
}

/// How a Postgres view relates to the events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ViewMode {
    #[default]
    Latest,
    History,
    Aggregate,
}

/// A column of a projected view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    /// Column name, `[a-z_][a-z0-9_]{0,62}`; names starting with `dp_` are DreamPipe's own.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// SQL type: text, varchar(n), boolean, smallint, integer, bigint, real, double precision,
    /// numeric, numeric(p,s), date, timestamp, timestamptz, uuid or jsonb.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 32))]
    pub type_: String,
}

/// A grouped aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.function == 'count' ? !has(self.of) : has(self.of)").message("sum needs `of`; count takes none"))]
pub struct Aggregate {
    /// Output column name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// `count` of keys in the group, or `sum` of a numeric column.
    pub function: AggregateFunction,
    /// The numeric column summed (for `sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub of: Option<String>,
}

/// Aggregate functions a view can maintain incrementally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AggregateFunction {
    Count,
    Sum,
}

/// A NATS subject events are republished to, for chaining pipelines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsSink {
    /// Subject the filtered events are published to; no wildcards.
    #[schemars(length(min = 1, max = 256))]
    pub subject: String,
}

/// What a projection does with a poison event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnError {
    #[default]
    DeadLetter,
    Skip,
    Stop,
}

/// Lifecycle of a projection's active generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Replaying the stream into a new generation; nothing serves yet.
    #[default]
    Building,
    /// Caught up and serving.
    Live,
    /// Serving, but some partitions are stopped or failing.
    Degraded,
}

/// What DreamPipe observed of a Projection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, one of each at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Projector pods running (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Projector pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the projector pods (the scale subresource reads this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Building`, `Live` or `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Events the serving generation is behind the stream head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Seconds the serving generation is behind: the age of its oldest event not yet
    /// applied, 0 when caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Hash of the generation that serves the view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_generation: Option<String>,
    /// Hash of a generation being built to replace the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_generation: Option<String>,
    /// Percentage of the stream the building generation has replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_progress: Option<u8>,
    /// The stable view (or subject) readers use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// Poison events recorded in the dead-letter table.
    #[serde(default)]
    pub dead_letters: u64,
    /// Dead letters nobody marked handled yet; `dreampipe deadletters list` shows them.
    #[serde(default)]
    pub unhandled_dead_letters: u64,
    /// With `spec.autoscale`: the replicas the operator chose and when it last changed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleStatus>,
}

/// What the operator decided for an autoscaled projector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleStatus {
    /// Projector pods the operator asks for.
    pub replicas: i32,
    /// When it last changed them (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Why it holds or changes them, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// SQL types a column may declare, in their canonical spelling.
pub const SQL_TYPES: &[&str] = &[
    "text",
    "boolean",
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "numeric",
    "date",
    "timestamp",
    "timestamptz",
    "uuid",
    "jsonb",
];

/// Whether `type_` is an SQL type DreamPipe columns accept (including `varchar(n)` and
/// `numeric(p,s)`), and whether it is numeric, so it can be summed.
pub fn sql_type_info(type_: &str) -> Option<SqlTypeInfo> {
    let type_ = type_.trim().to_ascii_lowercase();
    let numeric = |t: &str| {
        matches!(
            t,
            "smallint" | "integer" | "bigint" | "real" | "double precision" | "numeric"
        )
    };
    if SQL_TYPES.contains(&type_.as_str()) {
        return Some(SqlTypeInfo {
            numeric: numeric(&type_),
        });
    }
    let params = |prefix: &str, max: usize| {
        type_
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|inner| inner.split(',').map(str::trim).collect::<Vec<_>>())
            .is_some_and(|ps| {
                (1..=max).contains(&ps.len())
                    && ps.iter().all(|p| {
                        !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit())
                    })
            })
    };
    if params("varchar(", 1) {
        return Some(SqlTypeInfo { numeric: false });
    }
    if params("numeric(", 2) {
        return Some(SqlTypeInfo { numeric: true });
    }
    None
}

/// What validation needs to know of a column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlTypeInfo {
    /// Whether values of the type can be summed.
    pub numeric: bool,
}

/// Reports every problem of a Projection at once: names, filters' CEL, the sink's identifiers,
/// SQL types, and the shape of aggregates.
pub fn validate_projection(projection: &Projection) -> Result<(), Invalid> {
    let mut problems = Problems::default();
    problems.check_name("metadata.name", projection.metadata.name.as_deref());
    let spec = &projection.spec;
    problems.check_reference("spec.entity", &spec.entity);

    let columns = match (&spec.sink.postgres, &spec.sink.nats) {
        (Some(postgres), None) => check_postgres(&mut problems, postgres),
        (None, Some(nats)) => {
            if !is_nats_subject(&nats.subject, false) {
                problems.add(
                    "spec.sink.nats.subject",
                    format!("{:?} is not a NATS subject without wildcards", nats.subject),
                );
            }
            None
        }
        _ => {
            problems.add("spec.sink", "set exactly one of postgres or nats");
            None
        }
    };

    for (i, filter) in spec.filters.iter().enumerate() {
        let path = format!("spec.filters[{i}]");
        let set = [
            filter.where_.is_some(),
            filter.set.is_some(),
            filter.types.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            problems.add(&path, "a filter sets exactly one of where, set or types");
        }
        if let Some(predicate) = &filter.where_ {
            problems.check_cel(&format!("{path}.where"), predicate);
        }
        if let Some(assignments) = &filter.set {
            if assignments.is_empty() {
                problems.add(format!("{path}.set"), "assign at least one column");
            }
            for (column, expression) in assignments {
                let column_path = format!("{path}.set.{column}");
                if let Some(columns) = &columns {
                    if !columns.contains(column.as_str()) {
                        problems.add(
                            &column_path,
                            format!("{column:?} is not a column of spec.sink.postgres.columns"),
                        );
                    }
                } else {
                    problems.check_identifier(&column_path, column);
                }
                problems.check_cel(&column_path, expression);
            }
        }
        if let Some(types) = &filter.types {
            if types.is_empty() {
                problems.add(
                    format!("{path}.types"),
                    "list at least one of created, updated, deleted",
                );
            }
            let distinct: BTreeSet<_> = types.iter().collect();
            if distinct.len() != types.len() {
                problems.add(format!("{path}.types"), "lists an event type twice");
            }
        }
    }
    if spec.replicas < 0 {
        problems.add("spec.replicas", "must not be negative");
    }
    if let Some(autoscale) = &spec.autoscale {
        if autoscale.min_replicas < 1 {
            problems.add("spec.autoscale.minReplicas", "must be at least 1");
        }
        if autoscale.min_replicas > autoscale.max_replicas {
            problems.add(
                "spec.autoscale.maxReplicas",
                format!("must not be below minReplicas ({})", autoscale.min_replicas),
            );
        }
        if autoscale.target_lag_seconds == 0 {
            problems.add("spec.autoscale.targetLagSeconds", "must be at least 1");
        }
    }
    if let Some(pod) = &spec.pod {
        pod.check(&mut problems, "spec.pod");
    }
    problems.finish("Projection", projection.metadata.name.as_deref())
}

/// Checks a Postgres sink; returns its declared column names for the filters' checks.
fn check_postgres<'a>(
    problems: &mut Problems,
    sink: &'a PostgresSink,
) -> Option<BTreeSet<&'a str>> {
    let base = "spec.sink.postgres";
    problems.check_identifier(&format!("{base}.view"), &sink.view);
    if sink.columns.is_empty() {
        problems.add(format!("{base}.columns"), "declare at least one column");
    }
    let mut names = BTreeSet::new();
    let mut numeric = BTreeSet::new();
    for (i, column) in sink.columns.iter().enumerate() {
        let path = format!("{base}.columns[{i}]");
        problems.check_identifier(&format!("{path}.name"), &column.name);
        if column.name.starts_with("dp_") {
            problems.add(
                format!("{path}.name"),
                "names starting with dp_ are reserved for DreamPipe's own columns",
            );
        }
        if !names.insert(column.name.as_str()) {
            problems.add(
                format!("{path}.name"),
                format!("column {:?} is declared twice", column.name),
            );
        }
        match sql_type_info(&column.type_) {
            Some(info) if info.numeric => {
                numeric.insert(column.name.as_str());
            }
            Some(_) => {}
            None => problems.add(
                format!("{path}.type"),
                format!(
                    "unknown SQL type {:?}; use one of {}, varchar(n) or numeric(p,s)",
                    column.type_,
                    SQL_TYPES.join(", ")
                ),
            ),
        }
    }

    let aggregate = sink.mode == ViewMode::Aggregate;
    if !aggregate && !sink.group_by.is_empty() {
        problems.add(format!("{base}.groupBy"), "only mode aggregate groups rows");
    }
    if !aggregate && !sink.aggregates.is_empty() {
        problems.add(
            format!("{base}.aggregates"),
            "only mode aggregate computes aggregates",
        );
    }
    if aggregate && sink.aggregates.is_empty() {
        problems.add(
            format!("{base}.aggregates"),
            "mode aggregate needs at least one aggregate",
        );
    }
    for (i, group) in sink.group_by.iter().enumerate() {
        if !names.contains(group.as_str()) {
            problems.add(
                format!("{base}.groupBy[{i}]"),
                format!("{group:?} is not a declared column"),
            );
        }
    }
    let mut outputs: BTreeSet<&str> = sink.group_by.iter().map(String::as_str).collect();
    for (i, aggregate) in sink.aggregates.iter().enumerate() {
        let path = format!("{base}.aggregates[{i}]");
        problems.check_identifier(&format!("{path}.name"), &aggregate.name);
        if !outputs.insert(aggregate.name.as_str()) {
            problems.add(
                format!("{path}.name"),
                format!("{:?} is already an output column", aggregate.name),
            );
        }
        match (aggregate.function, &aggregate.of) {
            (AggregateFunction::Count, Some(_)) => problems.add(
                format!("{path}.of"),
                "count counts keys and takes no column",
            ),
            (AggregateFunction::Sum, None) => {
                problems.add(format!("{path}.of"), "sum needs the column to add up")
            }
            (AggregateFunction::Sum, Some(of)) if !names.contains(of.as_str()) => problems.add(
                format!("{path}.of"),
                format!("{of:?} is not a declared column"),
            ),
            (AggregateFunction::Sum, Some(of)) if !numeric.contains(of.as_str()) => problems.add(
                format!("{path}.of"),
                format!("{of:?} is not a numeric column"),
            ),
            _ => {}
        }
    }
    Some(names)
}

/// The Postgres schema holding a namespace's views, generation tables and bookkeeping
/// (DESIGN §10, ADR 60): `dp_<namespace>` with `-` written `_` (`dp_team_b` for `team-b`), the
/// one name the projector writes, the query service reads and the analysts' role is granted.
/// A namespace is a DNS label (no `_`), so the mapping keeps namespaces apart, and the name
/// is a plain SQL identifier analysts need not quote. Postgres keeps only 63 bytes of a name;
/// a namespace longer than 60 is shortened and given its FNV-1a hash, so two long namespaces
/// never share a schema.
pub fn postgres_schema(namespace: &str) -> String {
    const MAX: usize = 63;
    let namespace = &namespace.replace('-', "_");
    let schema = format!("dp_{namespace}");
    if schema.len() <= MAX {
        return schema;
    }
    let hash = format!("{:016x}", crate::hash::fnv1a64(namespace.as_bytes()));
    let keep = MAX - "dp_".len() - 1 - hash.len();
    format!("dp_{}_{hash}", prefix(namespace, keep))
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary
/// (a Kubernetes namespace is ASCII, `dreampipe dev --namespace` need not be).
fn prefix(text: &str, bytes: usize) -> &str {
    let end = (0..=bytes.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

/// The NOLOGIN group role that may read a namespace's stable views and nothing else
/// (ADR 0004, ADR 61): `<schema>_reader`, so `dp_shop_reader` for namespace `shop`. Analysts'
/// login roles are made members of it.
pub fn reader_role(namespace: &str) -> String {
    let schema = postgres_schema(namespace);
    let namespace = &namespace.replace('-', "_");
    let suffix = "_reader";
    if schema.len() + suffix.len() <= 63 {
        return format!("{schema}{suffix}");
    }
    let hash = format!("{:016x}", crate::hash::fnv1a64(namespace.as_bytes()));
    let keep = 63 - "dp_".len() - 1 - hash.len() - suffix.len();
    format!("dp_{}_{hash}{suffix}", prefix(namespace, keep))
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    #[test]
    fn a_namespace_gets_its_own_schema_and_reader_role() {
        assert_eq!(postgres_schema("shop"), "dp_shop");
        assert_eq!(postgres_schema("team-a"), "dp_team_a");
        assert_eq!(reader_role("shop"), "dp_shop_reader");
        assert_eq!(reader_role("team-b"), "dp_team_b_reader");
        for name in [postgres_schema("team-b"), reader_role("1-team-b")] {
            assert!(crate::validate::is_sql_identifier(&name), "{name}");
        }
    }

    #[test]
    fn long_namespaces_stay_within_postgres_names_and_apart() {
        let a = "a".repeat(62) + "x";
        let b = "a".repeat(62) + "y";
        for name in [postgres_schema(&a), reader_role(&a)] {
            assert!(name.len() <= 63, "{name} is {} bytes", name.len());
        }
        assert_ne!(postgres_schema(&a), postgres_schema(&b));
        assert_ne!(reader_role(&a), reader_role(&b));
        assert_eq!(postgres_schema(&"n".repeat(60)).len(), 63);
        let wide = "é".repeat(40);
        assert!(postgres_schema(&wide).len() <= 63 && reader_role(&wide).len() <= 63);
    }
}
