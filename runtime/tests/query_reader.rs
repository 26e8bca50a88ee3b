//! The analysts' read-only role: it reads the stable views a real projector publishes, across
//! a generation swap, and nothing else.

mod projector_support;

use std::time::Duration;

use projector_support::*;
use runtime::projector::Options;
use runtime::query::views::Views;
use serde_json::json;
use sqlx::{ConnectOptions, Connection};

const PASSWORD: &str = "reader-secret";

fn customers(filter: &str) -> crds::Projection {
    projection(
        "customers",
        &format!(
            "  filters:\n    - where: '{filter}'\n  sink:\n    postgres:\n      view: customers\n      columns:\n        - {{name: name, type: text}}\n        - {{name: city, type: text}}\n"
        ),
    )
}

/// The SQLSTATE of a statement run as `connection`, or None when it succeeds.
async fn refusal(connection: &mut sqlx::PgConnection, statement: &str) -> Option<String> {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut *connection)
        .await
    {
        Ok(_) => None,
        Err(error) => Some(
            error
                .as_database_error()
                .and_then(|e| e.code())
                .map(|c| c.into_owned())
                .unwrap_or_else(|| error.to_string()),
        ),
    }
}

#[tokio::test]
async fn the_reader_role_reads_the_views_and_nothing_else() {
    let mut bed = Bed::start(2).await;
    let role = format!("reader_{}", bed.database.name());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create role {role} login password '{PASSWORD}'"
    )))
    .execute(&bed.pool)
    .await
    .unwrap();
    bed.producer
        .publish([
            (
                "c1".to_owned(),
                Some(json!({"id": "c1", "name": "Ada", "city": "Lyon"})),
            ),
            (
                "c2".to_owned(),
                Some(json!({"id": "c2", "name": "Bo", "city": "Oslo"})),
            ),
        ])
        .await;
    let options = || Options {
        reader_role: Some(role.clone()),
        ..fast_options()
    };
    let everyone = customers("true");
    let replica = bed.replica(&everyone, "r1", options()).await;
    bed.caught_up(&bed.pool, &everyone, Duration::from_secs(60))
        .await;
    wait_until(Duration::from_secs(30), "the view to go live", || {
        view_exists(&bed.pool, "customers")
    })
    .await;

    let as_reader = bed
        .database
        .options()
        .clone()
        .username(&role)
        .password(PASSWORD);
    let mut reader = as_reader.connect().await.unwrap();
    let count: i64 = sqlx::query_scalar("select count(*) from dp_default.customers")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(count, 2, "the reader reads the view");

    let tables: Vec<String> =
        sqlx::query_scalar("select tablename::text from pg_tables where schemaname = $1")
            .bind(SCHEMA)
            .fetch_all(&bed.pool)
            .await
            .unwrap();
    assert!(
        tables.iter().any(|t| t == "dp_checkpoints")
            && tables.iter().any(|t| t == "dp_dead_letters")
    );
    assert!(
        tables.len() >= 3,
        "a generation table exists too: {tables:?}"
    );
    for table in &tables {
        assert_eq!(
            refusal(&mut reader, &format!("select * from {SCHEMA}.\"{table}\""))
                .await
                .as_deref(),
            Some("42501"),
            "reading {table}"
        );
    }
    let writes = [
        "insert into dp_default.customers (dp_key, dp_version, name, city) values ('x', 1, 'x', 'x')",
        "update dp_default.customers set name = 'x'",
        "delete from dp_default.customers",
        "create table mine (a int)",
        "create table dp_default.mine (a int)",
        "create temporary table scratch (a int)",
        "create schema mine",
        "create view mine as select 1",
    ];
    for statement in writes {
        assert_eq!(
            refusal(&mut reader, statement).await.as_deref(),
            Some("42501"),
            "{statement}"
        );
    }

    // The query service, connected as the reader, serves the view and not the tables.
    let views = Views::new(
        sqlx::postgres::PgPoolOptions::new()
            .connect_with(as_reader.clone())
            .await
            .unwrap(),
        runtime::sql::Schema::of_namespace(NAMESPACE),
    );
    assert_eq!(
        views
            .page("customers", &[], 10, 0)
            .await
            .unwrap()
            .rows
            .len(),
        2
    );
    for table in &tables {
        assert!(
            views.page(table, &[], 10, 0).await.is_err(),
            "{table} is not served"
        );
    }

    // A new generation replaces the view; the reader keeps reading it.
    let in_lyon = customers("state.city == \"Lyon\"");
    let successor = bed.replica(&in_lyon, "r2", options()).await;
    replica.stop().await;
    wait_until(
        Duration::from_secs(60),
        "the new generation to serve the view",
        || async {
            let mut admin = bed.database.options().connect().await.unwrap();
            sqlx::query_scalar::<_, i64>("select count(*) from dp_default.customers")
                .fetch_one(&mut admin)
                .await
                .unwrap_or(0)
                == 1
        },
    )
    .await;
    let count: i64 = sqlx::query_scalar("select count(*) from dp_default.customers")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(count, 1, "the reader reads the new generation");
    let _ = reader.close().await;
    successor.stop().await;
}
