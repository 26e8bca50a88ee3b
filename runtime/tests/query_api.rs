//! The Event Query Service against a real JetStream (written by a real receiver) and a real
//! Postgres: states, history, as-of reads, views, bad and hostile input, and its OpenAPI document.

mod receiver_support;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode};
use receiver_support::{call, open_receiver, put};
use runtime::auth::ScopedTokens;
use runtime::query::http::routes;
use runtime::query::namespaces::Readers;
use serde_json::{Value, json};
use testbed::{NatsServer, TestDatabase};

async fn query_service(nats: &NatsServer, database: Option<&TestDatabase>) -> Router {
    let mut readers = Readers::new(nats.client().await.unwrap(), "shop");
    if let Some(database) = database {
        let pool = database.pool().await.unwrap();
        readers = readers
            .with_views(pool.clone())
            .with_dead_letters(pool)
            .with_pipeline(Arc::new(runtime::console::Console::default()));
    }
    routes(Arc::new(readers), ScopedTokens::default())
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    let answer = call(router, Method::GET, uri, None, &[]).await;
    (answer.status, answer.body)
}

#[tokio::test]
async fn entity_state_history_and_as_of_come_from_the_stream() {
    let nats = NatsServer::start().await.unwrap();
    let receiver = open_receiver(&nats).await;
    for name in ["Ada", "Ada L.", "Ada Lovelace"] {
        put(&receiver, "c1", json!({"id": "c1", "name": name})).await;
    }
    let between = jiff::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    put(&receiver, "c1", json!({"id": "c1", "name": "Countess"})).await;
    let query = query_service(&nats, None).await;

    let (status, current) = get(&query, "/v1/entities/customer/c1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["version"], 4);
    assert_eq!(current["state"]["name"], "Countess");

    let (_, v2) = get(&query, "/v1/entities/customer/c1?asOf=2").await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["state"]["name"], "Ada L.");
    let (_, before) = get(&query, &format!("/v1/entities/customer/c1?asOf={between}")).await;
    assert_eq!(
        before["version"], 3,
        "the state as of a time is the last event recorded by then"
    );
    let (status, _) = get(&query, "/v1/entities/customer/c1?asOf=2000-01-01T00:00:00Z").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "before its first event the key did not exist"
    );

    let (_, first) = get(&query, "/v1/entities/customer/c1/history?limit=3").await;
    let versions: Vec<u64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(first["nextFromVersion"], 4);
    let (_, last) = get(
        &query,
        "/v1/entities/customer/c1/history?limit=3&fromVersion=4",
    )
    .await;
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert!(last["nextFromVersion"].is_null());
}

#[tokio::test]
async fn a_deleted_key_is_gone_now_but_readable_as_of_before() {
    let nats = NatsServer::start().await.unwrap();
    let receiver = open_receiver(&nats).await;
    put(&receiver, "c1", json!({"id": "c1", "name": "Ada"})).await;
    call(
        &receiver,
        Method::DELETE,
        "/v1/entities/customer/c1",
        None,
        &[],
    )
    .await;
    let query = query_service(&nats, None).await;
    let (status, body) = get(&query, "/v1/entities/customer/c1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "c1 was deleted at version 2");
    let (status, body) = get(&query, "/v1/entities/customer/c1?asOf=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"]["name"], "Ada");
}

#[tokio::test]
async fn bad_entity_reads_are_4xx_naming_what_is_wrong() {
    let nats = NatsServer::start().await.unwrap();
    let receiver = open_receiver(&nats).await;
    put(&receiver, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let query = query_service(&nats, None).await;
    let cases = [
        (
            "/v1/entities/order/o1",
            StatusCode::NOT_FOUND,
            "no entity \"order\"",
        ),
        (
            "/v1/entities/customer/nobody",
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            "/v1/entities/customer/c1?asOf=yesterday",
            StatusCode::BAD_REQUEST,
            "asOf must be a version number or an RFC 3339 time",
        ),
        (
            "/v1/entities/customer/c1?asOf=0",
            StatusCode::BAD_REQUEST,
            "1 or more",
        ),
        (
            "/v1/entities/customer/c1/history?limit=0",
            StatusCode::BAD_REQUEST,
            "limit must be a number from 1 to 1000",
        ),
        (
            "/v1/entities/customer/c1/history?limit=1001",
            StatusCode::BAD_REQUEST,
            "limit must be a number from 1 to 1000",
        ),
        (
            "/v1/entities/customer/c1/history?fromVersion=x",
            StatusCode::BAD_REQUEST,
            "fromVersion",
        ),
        (
            "/v1/entities/Customer%3Bdrop/c1",
            StatusCode::NOT_FOUND,
            "no entity",
        ),
    ];
    for (uri, status, words) in cases {
        let (got, body) = get(&query, uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(words),
            "{uri}: {body}"
        );
    }
    let long_key = format!("/v1/entities/customer/{}", "k".repeat(600));
    assert_eq!(get(&query, &long_key).await.0, StatusCode::BAD_REQUEST);
}

/// A database laid out as the projector leaves it: a generation table and its stable view.
async fn projected(database: &TestDatabase) {
    let pool = database.pool_in_schema("dp_shop").await.unwrap();
    for statement in [
        "create schema dp_shop",
        "create table dp_checkpoints (projection text, generation text, partition int, sequence bigint)",
        "create table \"dp_customers_g1\" (dp_key text primary key, dp_version bigint, \"name\" text, \"city\" text, \"spend\" numeric)",
        "create view \"customers\" as select dp_key, dp_version, \"name\", \"city\", \"spend\" from \"dp_customers_g1\"",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    for i in 0..25 {
        sqlx::query("insert into dp_customers_g1 values ($1, 1, $2, $3, $4::bigint)")
            .bind(format!("c{i:02}"))
            .bind(format!("Customer {i}"))
            .bind(if i % 2 == 0 { "Lyon" } else { "Oslo" })
            .bind(i64::from(i * 10))
            .execute(&pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn view_rows_page_in_a_stable_order_with_equality_filters() {
    let nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    projected(&database).await;
    let query = query_service(&nats, Some(&database)).await;

    let mut keys = Vec::new();
    let mut uri = "/v1/views/customers?limit=10".to_owned();
    loop {
        let (status, page) = get(&query, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        keys.extend(
            page["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["dp_key"].as_str().unwrap().to_owned()),
        );
        match page["nextPageToken"].as_str() {
            Some(token) => uri = format!("/v1/views/customers?limit=10&pageToken={token}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
    assert_eq!(keys, expected, "pages cover every row once, in key order");

    let (_, lyon) = get(&query, "/v1/views/customers?city=Lyon&limit=100").await;
    let rows = lyon["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 13);
    assert!(rows.iter().all(|r| r["city"] == "Lyon"));
    let (_, one) = get(&query, "/v1/views/customers?city=Oslo&spend=30").await;
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0]["name"], "Customer 3");
}

#[tokio::test]
async fn a_view_read_is_answered_after_postgres_ended_the_services_connections() {
    let nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    projected(&database).await;
    // The service's own pool, which does not ping a connection before using it.
    let pool = runtime::query::views_pool(&database.url()).unwrap();
    let readers = Readers::new(nats.client().await.unwrap(), "shop").with_views(pool);
    let query = routes(Arc::new(readers), ScopedTokens::default());
    let uri = "/v1/views/customers?city=Lyon&limit=100";
    let (status, before) = get(&query, uri).await;
    assert_eq!(status, StatusCode::OK, "{before}");

    // A restart, a failover or an idle timeout: the server ends every connection it has.
    let admin = database.pool().await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(ended.contains(&true), "the service's connection was ended");
    let (status, after) = get(&query, uri).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["rows"], before["rows"]);
}

#[tokio::test]
async fn hostile_view_requests_get_a_clear_4xx_and_change_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    projected(&database).await;
    let query = query_service(&nats, Some(&database)).await;
    let huge = "x".repeat(5000);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            "/v1/views/nope".into(),
            StatusCode::NOT_FOUND,
            "no view \"nope\"",
        ),
        (
            "/v1/views/dp_customers_g1".into(),
            StatusCode::NOT_FOUND,
            "no view",
        ),
        (
            "/v1/views/dp_checkpoints".into(),
            StatusCode::NOT_FOUND,
            "no view",
        ),
        (
            "/v1/views/customers%3B%20drop%20table%20dp_customers_g1".into(),
            StatusCode::NOT_FOUND,
            "no view",
        ),
        (
            "/v1/views/CUSTOMERS".into(),
            StatusCode::NOT_FOUND,
            "no view",
        ),
        (
            "/v1/views/customers?town=Lyon".into(),
            StatusCode::BAD_REQUEST,
            "has no column \"town\"",
        ),
        (
            "/v1/views/customers?city%22%3Bdrop%20table%20x%3B--=1".into(),
            StatusCode::BAD_REQUEST,
            "has no column",
        ),
        (
            "/v1/views/customers?c%C3%ADty=Lyon".into(),
            StatusCode::BAD_REQUEST,
            "has no column \"cíty\"",
        ),
        (
            format!("/v1/views/customers?city={huge}"),
            StatusCode::BAD_REQUEST,
            "at most 1024",
        ),
        (
            "/v1/views/customers?city=%00".into(),
            StatusCode::BAD_REQUEST,
            "NUL",
        ),
        (
            "/v1/views/customers?limit=-1".into(),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "/v1/views/customers?limit=99999999999999999999".into(),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "/v1/views/customers?pageToken=abc".into(),
            StatusCode::BAD_REQUEST,
            "pageToken",
        ),
    ];
    for (uri, status, words) in &cases {
        let (got, body) = get(&query, uri).await;
        assert_eq!(got, *status, "{uri}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(words),
            "{uri}: {body}"
        );
        assert!(
            body["detail"].as_str().unwrap().chars().count() < 300,
            "errors echo input in short"
        );
    }
    // Injection in a value is just a value that matches nothing.
    let (status, body) = get(
        &query,
        "/v1/views/customers?city=Lyon%27%20or%20%271%27%3D%271",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rows"].as_array().unwrap().len(), 0);
    let pool = database.pool_in_schema("dp_shop").await.unwrap();
    let rows: i64 = sqlx::query_scalar("select count(*) from dp_customers_g1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 25, "nothing changed");
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_answers() {
    let nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    projected(&database).await;
    let pool = database.pool().await.unwrap();
    runtime::projector::database::prepare(&pool, &runtime::sql::Schema::of_namespace("shop"))
        .await
        .unwrap();
    let dead_letter: i64 = sqlx::query_scalar(
        "insert into dp_shop.dp_dead_letters (projection, generation, partition, sequence, reason)
         values ('shop/customers', 'g1', 0, 3, 'a filter failed') returning id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let receiver = open_receiver(&nats).await;
    put(&receiver, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let query = query_service(&nats, Some(&database)).await;

    let (status, document) = get(&query, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let documented: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let routes = [
        "/v1/entities/{entity}/{key}",
        "/v1/entities/{entity}/{key}/history",
        "/v1/views/{view}",
        "/v1/projections/{projection}/deadletters",
        "/v1/projections/{projection}/deadletters/{id}",
        "/v1/pipeline",
        "/v1/namespaces/{namespace}/entities/{entity}/{key}",
        "/v1/namespaces/{namespace}/entities/{entity}/{key}/history",
        "/v1/namespaces/{namespace}/views/{view}",
        "/v1/namespaces/{namespace}/projections/{projection}/deadletters",
        "/v1/namespaces/{namespace}/projections/{projection}/deadletters/{id}",
        "/v1/namespaces/{namespace}/pipeline",
        "/openapi.json",
    ];
    for route in routes {
        assert!(
            documented.iter().any(|d| d == route),
            "{route} is not in the OpenAPI document"
        );
    }
    for path in &documented {
        let uri = path
            .replace("{namespace}", "shop")
            .replace("{entity}", "customer")
            .replace("{key}", "c1")
            .replace("{view}", "customers")
            .replace("{projection}", "customers")
            .replace("{id}", &dead_letter.to_string());
        let (status, body) = get(&query, &uri).await;
        assert_eq!(status, StatusCode::OK, "documented {path} answers: {body}");
    }
    assert_eq!(
        documented.len(),
        routes.len(),
        "no undocumented extras: {documented:?}"
    );
}

#[tokio::test]
async fn a_view_replaced_by_a_new_generation_is_read_with_its_new_columns() {
    let nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    projected(&database).await;
    let query = query_service(&nats, Some(&database)).await;
    assert_eq!(
        get(&query, "/v1/views/customers?city=Lyon").await.0,
        StatusCode::OK
    );

    // A new generation without `city` and with `tier` takes over the stable name.
    let pool = database.pool_in_schema("dp_shop").await.unwrap();
    for statement in [
        "create table dp_customers_g2 (dp_key text primary key, dp_version bigint, name text, tier text)",
        "insert into dp_customers_g2 values ('c00', 1, 'Customer 0', 'gold')",
        "drop view customers",
        "create view customers as select dp_key, dp_version, name, tier from dp_customers_g2",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let (status, body) = get(&query, "/v1/views/customers?tier=gold").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["tier"], "gold");
    let (status, body) = get(&query, "/v1/views/customers?city=Lyon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn routing_and_decoding_errors_are_problems() {
    let nats = NatsServer::start().await.unwrap();
    let query = query_service(&nats, None).await;
    for (method, uri, status, detail) in [
        (
            Method::GET,
            "/v1/entities/customer/a/b",
            StatusCode::NOT_FOUND,
            "no route for GET /v1/entities/customer/a/b",
        ),
        (
            Method::GET,
            "/v1/entities/customer/",
            StatusCode::NOT_FOUND,
            "no route",
        ),
        (
            Method::POST,
            "/v1/entities/customer/k1",
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is not allowed",
        ),
        (
            Method::GET,
            "/v1/entities/customer/%FF",
            StatusCode::BAD_REQUEST,
            "not UTF-8",
        ),
        (
            Method::GET,
            "/v1/entities/customer/c1?asOf=",
            StatusCode::BAD_REQUEST,
            "asOf must be",
        ),
        (
            Method::GET,
            "/v1/entities/customer/c1/history?limit=0",
            StatusCode::BAD_REQUEST,
            "limit must be a number from 1 to 1000",
        ),
        (
            Method::GET,
            "/v1/entities/customer/c1/history?limit=%FF",
            StatusCode::BAD_REQUEST,
            "limit must be a number from 1 to 1000",
        ),
    ] {
        let answer = call(&query, method, uri, None, &[]).await;
        assert_eq!(answer.status, status, "{uri}: {}", answer.body);
        assert_eq!(
            answer.headers["content-type"], "application/problem+json",
            "{uri}"
        );
        let text = answer.body["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{uri}: {text:?}");
    }
}

#[tokio::test]
async fn the_openapi_document_declares_problems_and_bounds() {
    let nats = NatsServer::start().await.unwrap();
    let (_, document) = get(&query_service(&nats, None).await, "/openapi.json").await;
    let history = &document["paths"]["/v1/entities/{entity}/{key}/history"]["get"];
    for status in ["400", "401", "404", "503"] {
        assert!(
            history["responses"][status]["content"]["application/problem+json"].is_object(),
            "{status} is declared as problem+json: {}",
            history["responses"]
        );
    }
    let limit = history["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );
}

/// A query service whose own namespace is `platform`, serving `shop` and `team-b` too, with a
/// token for each of those two and one for every namespace.
async fn multi_namespace_query_service(nats: &NatsServer, database: &TestDatabase) -> Router {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("shop"), "shop-token\n").unwrap();
    std::fs::write(folder.path().join("team-b"), "team-b-token\n").unwrap();
    let every = runtime::auth::Tokens::load(None, Some("admin-token")).unwrap();
    let tokens = ScopedTokens::load(every, Some(folder.path())).unwrap();
    let readers = Readers::new(nats.client().await.unwrap(), "platform")
        .with_views(database.pool().await.unwrap())
        .serving("shop,team-b".parse().unwrap());
    routes(Arc::new(readers), tokens)
}

async fn get_as(router: &Router, uri: &str, token: &str) -> (StatusCode, Value) {
    let bearer = format!("Bearer {token}");
    let answer = call(
        router,
        Method::GET,
        uri,
        None,
        &[("authorization", bearer.as_str())],
    )
    .await;
    (answer.status, answer.body)
}

#[tokio::test]
async fn a_namespace_token_reads_its_namespace_and_gets_403_on_another() {
    let nats = NatsServer::start().await.unwrap();
    let receiver = open_receiver(&nats).await;
    put(&receiver, "c1", json!({"id": "c1", "name": "Ada"})).await;
    let database = TestDatabase::create().await.unwrap();
    let pool = database.pool().await.unwrap();
    for sql in [
        "create schema dp_shop",
        "create table dp_shop.g1 (dp_key text primary key, name text)",
        "insert into dp_shop.g1 values ('c1', 'Ada')",
        "create view dp_shop.customers as select dp_key, name from dp_shop.g1",
        "create schema dp_team_b",
        "create table dp_team_b.g1 (dp_key text primary key, name text)",
        "insert into dp_team_b.g1 values ('b1', 'Bo')",
        "create view dp_team_b.customers as select dp_key, name from dp_team_b.g1",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let query = multi_namespace_query_service(&nats, &database).await;

    let shop_state = "/v1/namespaces/shop/entities/customer/c1";
    let (status, state) = get_as(&query, shop_state, "shop-token").await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["state"]["name"], "Ada");
    let (status, page) = get_as(&query, "/v1/namespaces/shop/views/customers", "shop-token").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["rows"], json!([{"dp_key": "c1", "name": "Ada"}]));
    let (status, page) = get_as(
        &query,
        "/v1/namespaces/team-b/views/customers",
        "team-b-token",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["rows"], json!([{"dp_key": "b1", "name": "Bo"}]));

    // Each team's token is refused on the other's namespace, whatever the path.
    for (uri, token) in [
        ("/v1/namespaces/team-b/views/customers", "shop-token"),
        ("/v1/namespaces/team-b/entities/customer/c1", "shop-token"),
        (
            "/v1/namespaces/team-b/entities/customer/c1/history",
            "shop-token",
        ),
        (
            "/v1/namespaces/team-b/projections/customers/deadletters",
            "shop-token",
        ),
        ("/v1/namespaces/shop/entities/customer/c1", "team-b-token"),
        ("/v1/namespaces/shop/views/customers", "team-b-token"),
        // The paths without a namespace are the service's own namespace's.
        ("/v1/views/customers", "shop-token"),
    ] {
        let (status, problem) = get_as(&query, uri, token).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{uri} with {token}: {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("this token may not read namespace"),
            "{problem}"
        );
    }
    let (status, _) = get_as(&query, shop_state, "someone-else").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The platform's token reads every namespace served, and only those.
    let (status, _) = get_as(&query, shop_state, "admin-token").await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = get_as(
        &query,
        "/v1/namespaces/elsewhere/entities/customer/c1",
        "admin-token",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        problem["detail"],
        "namespace \"elsewhere\" is not served here"
    );
    let (status, problem) = get_as(&query, "/v1/entities/customer/c1", "admin-token").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(
        problem["detail"],
        "no entity \"customer\" in this namespace"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_path_under_a_namespace_too() {
    let nats = NatsServer::start().await.unwrap();
    let query = query_service(&nats, None).await;
    let (_, document) = get(&query, "/openapi.json").await;
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/entities/{entity}/{key}",
        "/v1/entities/{entity}/{key}/history",
        "/v1/views/{view}",
        "/v1/projections/{projection}/deadletters",
        "/v1/projections/{projection}/deadletters/{id}",
    ] {
        let namespaced = path.replacen("/v1/", "/v1/namespaces/{namespace}/", 1);
        let operation = &paths[&namespaced]["get"];
        assert_eq!(
            operation["parameters"][0]["name"], "namespace",
            "{namespaced}"
        );
        assert!(operation["responses"]["403"].is_object(), "{namespaced}");
        assert!(paths[path]["get"]["responses"]["403"].is_object(), "{path}");
    }
}

/// A replica's heartbeats over a real NATS server reach `/v1/pipeline` (ADR 80): the node
/// with its spec, report and readiness, in its namespace only, behind the namespace's tokens.
#[tokio::test]
async fn the_pipeline_shows_each_replica_that_sends_heartbeats() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (console, _listening) = runtime::console::Console::listen(&client, shutdown.clone())
        .await
        .unwrap();
    let health = process::Health::new(prometheus_client::registry::Registry::default());
    health.set_ready(true);
    let entity = receiver_support::entity();
    let spec = Box::new(entity.spec.clone());
    let beacon = runtime::heartbeat::Beacon::new("shop", "customer", "receiver-0".to_owned());
    let _beats = runtime::heartbeat::spawn(
        client.clone(),
        beacon,
        health,
        shutdown.clone(),
        move || {
            let spec = spec.clone();
            async move {
                crds::report::RoleHeartbeat::Receiver {
                    spec,
                    report: Some(crds::report::ReceiverReport {
                        entity: "customer".into(),
                        stream: "dp_shop_customer".into(),
                        stats: crds::report::StreamStats {
                            events: 7,
                            keys: 3,
                            last_sequence: 7,
                            last_event_time: None,
                        },
                    }),
                }
            }
        },
    );
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("shop"), "shop-token\n").unwrap();
    std::fs::write(folder.path().join("other"), "other-token\n").unwrap();
    let tokens = ScopedTokens::load(runtime::auth::Tokens::default(), Some(folder.path())).unwrap();
    let readers = Readers::new(client, "shop")
        .serving("shop,other".parse().unwrap())
        .with_pipeline(console);
    let query = routes(Arc::new(readers), tokens);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let pipeline = loop {
        let (status, body) = get_as(&query, "/v1/namespaces/shop/pipeline", "shop-token").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["entities"].as_array().is_some_and(|e| !e.is_empty()) {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat arrived: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let node = &pipeline["entities"][0];
    assert_eq!(node["name"], "customer");
    assert_eq!(node["ready"], true);
    assert_eq!(node["kind"], "receiver");
    assert_eq!(node["replicas"][0]["replica"], "receiver-0");
    assert_eq!(node["report"]["events"], 7);
    assert_eq!(node["spec"]["key"], entity.spec.key.as_str());

    let (status, other) = get_as(&query, "/v1/namespaces/other/pipeline", "other-token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        other["entities"],
        json!([]),
        "another namespace sees nothing of shop's"
    );
    let (status, _) = get_as(&query, "/v1/namespaces/shop/pipeline", "other-token").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    shutdown.cancel();
}
