//! The test bed starts real servers that behave as production ones do, and cleans up after itself.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream;
use testbed::{NatsServer, ServerError, TestDatabase, locate_binary};

#[tokio::test]
async fn jetstream_rejects_a_stale_expected_last_subject_sequence() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    js.create_stream(stream::Config {
        name: "orders".to_owned(),
        subjects: vec!["orders.>".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();

    let publish = |expected: u64| {
        let js = js.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            js.publish_with_headers("orders.42", headers, "{}".into())
                .await?
                .await
        }
    };
    // An unseen subject has last sequence 0; then each append names the one before it.
    assert_eq!(publish(0).await.unwrap().sequence, 1);
    assert_eq!(publish(1).await.unwrap().sequence, 2);
    let stale = publish(1)
        .await
        .expect_err("a stale sequence must be rejected");
    assert_eq!(stale.kind(), PublishErrorKind::WrongLastSequence, "{stale}");

    let mut orders = js.get_stream("orders").await.unwrap();
    assert_eq!(
        orders.info().await.unwrap().state.messages,
        2,
        "the rejected append stored nothing"
    );
}

#[tokio::test]
async fn nats_server_stops_when_dropped() {
    let nats = NatsServer::start().await.unwrap();
    let address = nats.url().trim_start_matches("nats://").to_owned();
    tokio::net::TcpStream::connect(&address)
        .await
        .expect("server listens while held");
    drop(nats);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "server still listening after drop"
    );
}

#[tokio::test]
async fn postgres_round_trip_in_a_fresh_database() {
    let database = TestDatabase::create().await.unwrap();
    let pool = database.pool().await.unwrap();
    sqlx::query("create table customer (id text primary key, city text not null)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("insert into customer (id, city) values ($1, $2), ($3, $4)")
        .bind("c1")
        .bind("Lyon")
        .bind("c2")
        .bind("Oslo")
        .execute(&pool)
        .await
        .unwrap();
    let cities: Vec<(String,)> = sqlx::query_as("select city from customer order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(cities, [("Lyon".to_owned(),), ("Oslo".to_owned(),)]);

    // Another test's database starts empty.
    let other = TestDatabase::create().await.unwrap();
    assert_ne!(other.name(), database.name());
    let tables: i64 =
        sqlx::query_scalar("select count(*) from pg_tables where tablename = 'customer'")
            .fetch_one(&other.pool().await.unwrap())
            .await
            .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn a_missing_binary_error_says_how_to_install_it() {
    let empty = tempfile::tempdir().unwrap();
    let error = locate_binary("nats-server", Some(empty.path()), &[]).unwrap_err();
    assert!(matches!(error, ServerError::MissingBinary { .. }));
    let message = error.to_string();
    assert!(message.starts_with("nats-server not found"), "{message}");
    assert!(message.contains("scripts/install-deps"), "{message}");
}
