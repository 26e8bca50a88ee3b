//! Many teams on one database (DESIGN §10, ADR 60): each namespace's views, generation tables
//! and bookkeeping live in its own schema, and a view name has one owner per namespace.

mod projector_support;

use std::time::Duration;

use crds::report::ViewConflict;
use projector_support::*;
use runtime::projector::database;
use runtime::sql::Schema;
use serde_json::json;

const VIEW: &str =
    "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n";

fn customer(id: &str, name: &str) -> (String, Option<serde_json::Value>) {
    (id.to_owned(), Some(json!({"id": id, "name": name})))
}

/// The names in `schema.customers`, sorted.
async fn names(pool: &sqlx::PgPool, schema: &Schema) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select name from {} order by name",
        schema.table("customers")
    )))
    .fetch_all(pool)
    .await
}

#[tokio::test]
async fn the_same_view_in_two_namespaces_fills_two_schemas_of_one_database() {
    let bed = Bed::start(2).await;
    let mut team_a = Producer::in_namespace(&bed.client, "team-a", 2).await;
    let mut team_b = Producer::in_namespace(&bed.client, "team-b", 2).await;
    team_a
        .publish([customer("c1", "Ada"), customer("c2", "Bo")])
        .await;
    team_b
        .publish([
            customer("c1", "Cy"),
            customer("c3", "Di"),
            customer("c4", "Ed"),
        ])
        .await;
    let a = projection_in("team-a", "customers", VIEW);
    let b = projection_in("team-b", "customers", VIEW);
    let replica_a = bed.replica(&a, "a1", fast_options()).await;
    let replica_b = bed.replica(&b, "b1", fast_options()).await;

    let (schema_a, schema_b) = (
        Schema::of_namespace("team-a"),
        Schema::of_namespace("team-b"),
    );
    let plain = bed.database.pool().await.unwrap();
    let wait_for = |schema: Schema, want: Vec<&'static str>| {
        let plain = plain.clone();
        async move {
            wait_until(
                Duration::from_secs(60),
                &format!("{schema}.customers to hold {want:?}"),
                || async { names(&plain, &schema).await.is_ok_and(|n| n == want) },
            )
            .await;
        }
    };
    wait_for(schema_a.clone(), vec!["Ada", "Bo"]).await;
    wait_for(schema_b.clone(), vec!["Cy", "Di", "Ed"]).await;

    // One team's change reaches its own view only.
    team_a.publish([customer("c1", "Ann")]).await;
    wait_for(schema_a.clone(), vec!["Ann", "Bo"]).await;
    assert_eq!(
        names(&plain, &schema_b).await.unwrap(),
        ["Cy", "Di", "Ed"],
        "team-b's view is untouched by team-a's events"
    );

    // Nothing of either pipeline lands in public.
    let in_public: Vec<String> = sqlx::query_scalar(
        "select relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'v')",
    )
    .fetch_all(&plain)
    .await
    .unwrap();
    assert!(in_public.is_empty(), "public holds {in_public:?}");
    for (namespace, schema) in [("team-a", &schema_a), ("team-b", &schema_b)] {
        let projections: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select distinct projection from {}",
            schema.table("dp_checkpoints")
        )))
        .fetch_all(&plain)
        .await
        .unwrap();
        assert_eq!(projections, [format!("{namespace}/customers")]);
    }
    replica_a.stop().await;
    replica_b.stop().await;
}

#[tokio::test]
async fn a_second_projection_claiming_a_view_is_refused_and_the_owner_keeps_serving() {
    let mut bed = Bed::start(2).await;
    bed.producer
        .publish([customer("c1", "Ada"), customer("c2", "Bo")])
        .await;
    let owner = projection("customers", VIEW);
    let owning = bed.replica(&owner, "owner-1", fast_options()).await;
    bed.caught_up(&bed.pool, &owner, Duration::from_secs(60))
        .await;
    wait_until(Duration::from_secs(30), "the owner's view", || {
        view_exists(&bed.pool, "customers")
    })
    .await;

    // Same view name, another Projection of the same namespace, another filter.
    let rival = projection(
        "rival",
        "  filters:\n    - where: 'state.name == \"Bo\"'\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}]\n",
    );
    let rivalling = bed.replica(&rival, "rival-1", fast_options()).await;
    wait_until(Duration::from_secs(30), "the rival's refusal", || {
        let status = rivalling.status.clone();
        async move {
            status
                .report()
                .await
                .is_ok_and(|r| r.view_conflict.is_some())
        }
    })
    .await;
    assert_eq!(
        rivalling.status.report().await.unwrap().view_conflict,
        Some(ViewConflict {
            view: "customers".into(),
            owner: "default/customers".into(),
        })
    );
    let rival_generations: i64 = sqlx::query_scalar(
        "select count(*) from dp_generations where projection = 'default/rival'",
    )
    .fetch_one(&bed.pool)
    .await
    .unwrap();
    assert_eq!(rival_generations, 0, "the refused projection built nothing");

    // The owner keeps serving, and keeps following the stream.
    bed.producer.publish([customer("c3", "Cy")]).await;
    bed.caught_up(&bed.pool, &owner, Duration::from_secs(60))
        .await;
    let schema = Schema::of_namespace(NAMESPACE);
    assert_eq!(
        names(&bed.pool, &schema).await.unwrap(),
        ["Ada", "Bo", "Cy"]
    );
    let owner_report = owning.status.report().await.unwrap();
    assert_eq!(owner_report.view_conflict, None);
    assert!(owner_report.active_generation.is_some());

    // Once the owner is gone (its drop releases the claim), the rival takes the view over.
    owning.stop().await;
    database::drop_projection(&bed.pool, &schema, "default/customers", Some("customers"))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the rival to serve the view",
        || async { names(&bed.pool, &schema).await.is_ok_and(|n| n == ["Bo"]) },
    )
    .await;
    assert_eq!(rivalling.status.report().await.unwrap().view_conflict, None);
    rivalling.stop().await;
}

/// The SQLSTATE of `statement` run as `connection`, or None when it succeeds.
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
async fn a_namespace_reader_reads_its_own_views_and_nothing_else() {
    use sqlx::{ConnectOptions, Connection};
    const PASSWORD: &str = "analyst-secret";
    let bed = Bed::start(2).await;
    // Login roles are cluster-wide: named after this test's database.
    let analyst_a = format!("analyst_a_{}", bed.database.name());
    let analyst_b = format!("analyst_b_{}", bed.database.name());
    for role in [&analyst_a, &analyst_b] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create role {role} login password '{PASSWORD}'"
        )))
        .execute(&bed.pool)
        .await
        .unwrap();
    }
    let mut producers = Vec::new();
    let mut replicas = Vec::new();
    for (namespace, member) in [("iso-a", &analyst_a), ("iso-b", &analyst_b)] {
        let mut producer = Producer::in_namespace(&bed.client, namespace, 2).await;
        producer
            .publish([(
                "c1".to_owned(),
                Some(json!({"id": "c1", "name": format!("only in {namespace}")})),
            )])
            .await;
        // A poison event, so that the namespace's dead-letter table holds a row.
        producer.publish_raw("c2", b"not an event").await;
        producers.push(producer);
        let options = runtime::projector::Options {
            reader_role: Some(crds::projection::reader_role(namespace)),
            reader_members: vec![member.clone()],
            ..fast_options()
        };
        // onError defaults to dead-lettering.
        let projection = projection_in(namespace, "customers", VIEW);
        replicas.push(bed.replica(&projection, "r1", options).await);
    }
    let plain = bed.database.pool().await.unwrap();
    let (a, b) = (Schema::of_namespace("iso-a"), Schema::of_namespace("iso-b"));
    for schema in [&a, &b] {
        wait_until(
            Duration::from_secs(60),
            &format!("{schema}: the view and a dead letter"),
            || async {
                let letters: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "select count(*) from {}",
                    schema.table("dp_dead_letters")
                )))
                .fetch_one(&plain)
                .await;
                names(&plain, schema).await.is_ok_and(|n| n.len() == 1)
                    && letters.is_ok_and(|n| n == 1)
            },
        )
        .await;
    }

    let mut reader = bed
        .database
        .options()
        .clone()
        .username(&analyst_a)
        .password(PASSWORD)
        .connect()
        .await
        .unwrap();
    let name: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select name from {}",
        a.table("customers")
    )))
    .fetch_one(&mut reader)
    .await
    .unwrap();
    assert_eq!(name, "only in iso-a", "A's reader reads A's view");

    let generation_table: String = sqlx::query_scalar(
        "select relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = $1 and c.relkind = 'r' and c.relname like 'dp_customers_%'",
    )
    .bind(a.name())
    .fetch_one(&plain)
    .await
    .unwrap();
    let mut refused = vec![b.table("customers")];
    for table in [
        "dp_dead_letters",
        "dp_checkpoints",
        "dp_leases",
        "dp_replicas",
        "dp_generations",
        "dp_views",
        &generation_table,
    ] {
        refused.push(a.table(table));
        refused.push(b.table(table));
    }
    for relation in &refused {
        assert_eq!(
            refusal(&mut reader, &format!("select * from {relation}"))
                .await
                .as_deref(),
            Some("42501"),
            "A's reader reading {relation}"
        );
    }
    // And it changes nothing, not even its own namespace's view.
    for statement in [
        format!("delete from {}", a.table("customers")),
        format!("create table {} (a int)", a.table("mine")),
        "create table mine (a int)".to_owned(),
    ] {
        assert_eq!(
            refusal(&mut reader, &statement).await.as_deref(),
            Some("42501"),
            "{statement}"
        );
    }
    let _ = reader.close().await;
    for replica in replicas {
        replica.stop().await;
    }
}
