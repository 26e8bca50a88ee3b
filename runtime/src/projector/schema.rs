//! SQL of the projector: the bookkeeping tables every projection of a namespace shares, and the statements of
//! one generation's tables, built once per generation. Identifiers from YAML are validated by
//! `crds` and always quoted here; SQL types are the canonical ones `crds` accepts; values are
//! always bound. Pure: builds text, runs nothing.

use crds::projection::ViewMode;

use super::plan::{AggregatePlan, PostgresPlan};
pub use crate::sql::quote;
use crate::sql::{Schema, tables};

/// Serialises DDL of every projector on a database: `create table if not exists` racing in two
/// sessions can fail on the catalog's unique index.
pub const DDL_LOCK: i64 = 0x6470_5f64_646c; // "dp_ddl"

/// The bookkeeping tables every projection of a namespace shares, created at start in the
/// namespace's schema (ADR 60), and the schema itself.
pub fn bookkeeping(schema: &Schema) -> Vec<String> {
    let generations = schema.table(tables::GENERATIONS);
    let checkpoints = schema.table(tables::CHECKPOINTS);
    let leases = schema.table(tables::LEASES);
    let replicas = schema.table(tables::REPLICAS);
    let dead_letters = schema.table(tables::DEAD_LETTERS);
    let views = schema.table(tables::VIEWS);
    vec![
        format!("create schema if not exists {}", schema.quoted()),
        format!(
            "create table if not exists {generations} (
        projection text not null,
        generation text not null,
        state text not null,
        definition jsonb not null,
        created_at timestamptz not null default now(),
        live_at timestamptz,
        retired_at timestamptz,
        primary key (projection, generation))"
        ),
        format!(
            "create table if not exists {checkpoints} (
        projection text not null,
        generation text not null,
        partition integer not null,
        sequence bigint not null default 0,
        events bigint not null default 0,
        lag bigint,
        stopped text,
        failing text,
        updated_at timestamptz not null default now(),
        primary key (projection, generation, partition))"
        ),
        // Added after the first release; a table created before keeps its rows.
        format!("alter table {checkpoints} add column if not exists failing text"),
        format!(
            "create table if not exists {leases} (
        projection text not null,
        partition integer not null,
        owner text not null,
        epoch bigint not null,
        expires_at timestamptz not null,
        primary key (projection, partition))"
        ),
        format!(
            "create table if not exists {replicas} (
        projection text not null,
        replica text not null,
        seen_at timestamptz not null,
        primary key (projection, replica))"
        ),
        format!(
            "create table if not exists {dead_letters} (
        projection text not null,
        generation text not null,
        partition integer not null,
        sequence bigint not null,
        key text,
        version bigint,
        event jsonb,
        payload text,
        message bytea,
        reason text not null,
        recorded_at timestamptz not null default now(),
        primary key (projection, generation, sequence))"
        ),
        // `message` (the payload byte for byte) came later: jsonb and text cannot hold every
        // payload.
        format!("alter table {dead_letters} add column if not exists message bytea"),
        // One owner per view name of the namespace (DESIGN §10): claimed before a generation's
        // tables are created, checked again in the swap's transaction.
        format!(
            "create table if not exists {views} (
        view text primary key,
        projection text not null,
        claimed_at timestamptz not null default now())"
        ),
    ]
}

/// Statements of one generation's Postgres tables.
#[derive(Clone, Debug)]
pub struct Statements {
    pub create: Vec<String>,
    pub drop: Vec<String>,
    /// `drop view` + `create view` of the stable view over this generation's table.
    pub publish_view: Vec<String>,
    pub write: Write,
}

/// The statements that apply a batch, per mode.
#[derive(Clone, Debug)]
pub enum Write {
    Latest {
        /// `$1` keys, `$2` versions, `$3` sequences, `$4..` column texts.
        upsert: String,
        /// `$1` keys.
        delete: String,
    },
    History {
        /// `$1` sequences, `$2` keys, `$3` versions, `$4` types, `$5..` column texts.
        insert: String,
    },
    Aggregate {
        /// `$1` keys -> `dp_key, dp_group, dp_sums`.
        select_members: String,
        /// `$1` keys, `$2` groups, `$3` sums.
        upsert_members: String,
        /// `$1` keys.
        delete_members: String,
        /// `$1` groups, `$2` counts, `$3..` sum literals.
        apply_deltas: String,
        /// `$1` groups.
        delete_empty: String,
    },
}

/// Builds the statements of `plan`'s tables, every relation in `schema`.
pub fn statements(schema: &Schema, plan: &PostgresPlan) -> Statements {
    let table = schema.table(&plan.table);
    let members = schema.table(&plan.members);
    let columns: Vec<String> = plan.columns.iter().map(|c| quote(&c.name)).collect();
    let typed: Vec<String> = plan
        .columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), c.sql_type))
        .collect();
    let casts: Vec<String> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("u.c{i}::{}", c.sql_type))
        .collect();
    let aliases: Vec<String> = (0..plan.columns.len()).map(|i| format!("c{i}")).collect();
    let text_params = |first: usize| -> Vec<String> {
        (0..plan.columns.len())
            .map(|i| format!("${}::text[]", first + i))
            .collect()
    };
    let with_columns = |fixed: &str, extra: &[String]| {
        let mut all = vec![fixed.to_owned()];
        all.extend(extra.iter().cloned());
        all.join(", ")
    };

    let (create, write, view_columns) = match plan.mode {
        ViewMode::Latest => {
            let create = format!(
                "create table {table} ({})",
                with_columns(
                    "dp_key text primary key, dp_version bigint not null, dp_sequence bigint not null",
                    &typed
                )
            );
            let updates: Vec<String> = columns
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            let upsert = format!(
                "insert into {table} ({}) select {} from unnest({}) as u({}) on conflict (dp_key) do update set {}",
                with_columns("dp_key, dp_version, dp_sequence", &columns),
                with_columns("u.k, u.v, u.s", &casts),
                with_columns("$1::text[], $2::bigint[], $3::bigint[]", &text_params(4)),
                with_columns("k, v, s", &aliases),
                with_columns(
                    "dp_version = excluded.dp_version, dp_sequence = excluded.dp_sequence",
                    &updates
                ),
            );
            let delete = format!("delete from {table} where dp_key = any($1::text[])");
            (
                vec![create],
                Write::Latest { upsert, delete },
                with_columns("dp_key, dp_version", &columns),
            )
        }
        ViewMode::History => {
            let create = format!(
                "create table {table} ({})",
                with_columns(
                    "dp_sequence bigint primary key, dp_key text not null, dp_version bigint not null, dp_type text not null",
                    &typed
                )
            );
            let insert = format!(
                "insert into {table} ({}) select {} from unnest({}) as u({}) on conflict (dp_sequence) do nothing",
                with_columns("dp_sequence, dp_key, dp_version, dp_type", &columns),
                with_columns("u.s, u.k, u.v, u.t", &casts),
                with_columns(
                    "$1::bigint[], $2::text[], $3::bigint[], $4::text[]",
                    &text_params(5)
                ),
                with_columns("s, k, v, t", &aliases),
            );
            (
                vec![create],
                Write::History { insert },
                with_columns("dp_sequence, dp_key, dp_version, dp_type", &columns),
            )
        }
        ViewMode::Aggregate => aggregate_statements(plan, &table, &members),
    };

    let mut drop = vec![format!("drop table if exists {table}")];
    if plan.mode == ViewMode::Aggregate {
        drop.push(format!("drop table if exists {members}"));
    }
    let view = schema.table(&plan.view);
    Statements {
        create,
        drop,
        publish_view: vec![
            format!("drop view if exists {view}"),
            format!("create view {view} as select {view_columns} from {table}"),
        ],
        write,
    }
}

fn aggregate_statements(
    plan: &PostgresPlan,
    table: &str,
    members: &str,
) -> (Vec<String>, Write, String) {
    let groups: Vec<&super::plan::ColumnPlan> =
        plan.group_by.iter().map(|&i| &plan.columns[i]).collect();
    let mut definitions = vec!["dp_group text primary key".to_owned()];
    definitions.extend(
        groups
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), c.sql_type)),
    );
    definitions.push("dp_count bigint not null".to_owned());
    let mut outputs: Vec<String> = groups.iter().map(|c| quote(&c.name)).collect();
    let mut selects: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, c)| format!("(d.g::jsonb->>{i})::{}", c.sql_type))
        .collect();
    let mut updates = vec![format!("dp_count = {table}.dp_count + excluded.dp_count")];
    let mut sum_index = 0;
    for aggregate in &plan.aggregates {
        let (name, sql_type, select) = match aggregate {
            AggregatePlan::Count { name } => (name, "bigint", "sum(d.c)::bigint".to_owned()),
            AggregatePlan::Sum { name, .. } => {
                sum_index += 1;
                (
                    name,
                    "numeric",
                    format!("sum(d.s{}::numeric)", sum_index - 1),
                )
            }
        };
        let column = quote(name);
        definitions.push(format!("{column} {sql_type} not null"));
        updates.push(format!("{column} = {table}.{column} + excluded.{column}"));
        outputs.push(column);
        selects.push(select);
    }
    let sum_params: Vec<String> = (0..sum_index)
        .map(|i| format!("${}::text[]", i + 3))
        .collect();
    let sum_aliases: Vec<String> = (0..sum_index).map(|i| format!("s{i}")).collect();
    let create = vec![
        format!("create table {table} ({})", definitions.join(", ")),
        format!(
            "create table {members} (dp_key text primary key, dp_group text not null, dp_sums text not null)"
        ),
    ];
    let mut params = vec!["$1::text[]".to_owned(), "$2::bigint[]".to_owned()];
    params.extend(sum_params);
    let mut aliases = vec!["g".to_owned(), "c".to_owned()];
    aliases.extend(sum_aliases);
    let mut insert_columns = vec!["dp_group".to_owned()];
    insert_columns.extend(groups.iter().map(|c| quote(&c.name)));
    insert_columns.push("dp_count".to_owned());
    insert_columns.extend(plan.aggregates.iter().map(|a| match a {
        AggregatePlan::Count { name } | AggregatePlan::Sum { name, .. } => quote(name),
    }));
    let mut select_list = vec!["d.g".to_owned()];
    select_list.extend(selects.iter().take(groups.len()).cloned());
    select_list.push("sum(d.c)::bigint".to_owned());
    select_list.extend(selects.iter().skip(groups.len()).cloned());
    // Sorted so that partitions updating the same groups lock them in the same order.
    let apply_deltas = format!(
        "insert into {table} ({}) select {} from unnest({}) as d({}) group by d.g order by d.g on conflict (dp_group) do update set {}",
        insert_columns.join(", "),
        select_list.join(", "),
        params.join(", "),
        aliases.join(", "),
        updates.join(", "),
    );
    let write = Write::Aggregate {
        select_members: format!(
            "select dp_key, dp_group, dp_sums from {members} where dp_key = any($1::text[])"
        ),
        upsert_members: format!(
            "insert into {members} (dp_key, dp_group, dp_sums) select * from unnest($1::text[], $2::text[], $3::text[]) on conflict (dp_key) do update set dp_group = excluded.dp_group, dp_sums = excluded.dp_sums"
        ),
        delete_members: format!("delete from {members} where dp_key = any($1::text[])"),
        apply_deltas,
        delete_empty: format!(
            "delete from {table} where dp_group = any($1::text[]) and dp_count = 0"
        ),
    };
    (create, write, outputs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::plan::Plan;

    fn plan(sink: &str) -> Plan {
        let yaml = format!(
            "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {{name: p}}\nspec:\n  entity: customer\n  sink:\n    postgres:\n{sink}"
        );
        Plan::new(&serde_yaml::from_str(&yaml).unwrap(), 4).unwrap()
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote("select"), "\"select\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn latest_upserts_cast_bound_text_to_the_declared_types() {
        let plan = plan(
            "      view: customers\n      columns: [{name: name, type: text}, {name: spend, type: 'numeric(10,2)'}]\n",
        );
        let statements = statements(&plan.schema, plan.postgres().unwrap());
        let table = format!("\"dp_default\".\"dp_customers_{}\"", plan.generation);
        assert_eq!(
            statements.create,
            [format!(
                "create table {table} (dp_key text primary key, dp_version bigint not null, dp_sequence bigint not null, \"name\" text, \"spend\" numeric(10,2))"
            )]
        );
        let Write::Latest { upsert, delete } = &statements.write else {
            panic!("latest")
        };
        assert_eq!(
            upsert,
            &format!(
                "insert into {table} (dp_key, dp_version, dp_sequence, \"name\", \"spend\") select u.k, u.v, u.s, u.c0::text, u.c1::numeric(10,2) from unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) as u(k, v, s, c0, c1) on conflict (dp_key) do update set dp_version = excluded.dp_version, dp_sequence = excluded.dp_sequence, \"name\" = excluded.\"name\", \"spend\" = excluded.\"spend\""
            )
        );
        assert_eq!(
            delete,
            &format!("delete from {table} where dp_key = any($1::text[])")
        );
        assert_eq!(
            statements.publish_view,
            [
                "drop view if exists \"dp_default\".\"customers\"".to_owned(),
                format!(
                    "create view \"dp_default\".\"customers\" as select dp_key, dp_version, \"name\", \"spend\" from {table}"
                )
            ]
        );
    }

    #[test]
    fn aggregates_sum_signed_deltas_per_group_in_group_order() {
        let plan = plan(
            "      view: by_city\n      mode: aggregate\n      columns: [{name: city, type: text}, {name: spend, type: numeric}]\n      groupBy: [city]\n      aggregates: [{name: n, function: count}, {name: total, function: sum, of: spend}]\n",
        );
        let statements = statements(&plan.schema, plan.postgres().unwrap());
        let table = format!("\"dp_default\".\"dp_by_city_{}\"", plan.generation);
        let Write::Aggregate { apply_deltas, .. } = &statements.write else {
            panic!("aggregate")
        };
        assert_eq!(
            apply_deltas,
            &format!(
                "insert into {table} (dp_group, \"city\", dp_count, \"n\", \"total\") select d.g, (d.g::jsonb->>0)::text, sum(d.c)::bigint, sum(d.c)::bigint, sum(d.s0::numeric) from unnest($1::text[], $2::bigint[], $3::text[]) as d(g, c, s0) group by d.g order by d.g on conflict (dp_group) do update set dp_count = {table}.dp_count + excluded.dp_count, \"n\" = {table}.\"n\" + excluded.\"n\", \"total\" = {table}.\"total\" + excluded.\"total\""
            )
        );
        assert_eq!(statements.drop.len(), 2);
        assert!(
            statements.publish_view[1]
                .ends_with(&format!("select \"city\", \"n\", \"total\" from {table}"))
        );
    }
}
