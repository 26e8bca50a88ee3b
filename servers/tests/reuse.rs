//! A folder outlives its servers: starting again over it finds what the last run stored, which
//! is what `dreampipe dev` relies on between runs.

use servers::{Durability, Nats, Postgres, SUPERUSER};
use sqlx::{ConnectOptions, Connection};

#[tokio::test]
async fn postgres_started_again_over_its_folder_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let options = |port| {
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username(SUPERUSER)
            .database("postgres")
    };
    let first = Postgres::start(dir.path(), Durability::Durable).unwrap();
    let mut connection = options(first.port()).connect().await.unwrap();
    sqlx::query("create table kept (note text)")
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query("insert into kept values ('from the first run')")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    drop(first);

    let second = Postgres::start(dir.path(), Durability::Durable).unwrap();
    let mut connection = options(second.port()).connect().await.unwrap();
    let note: String = sqlx::query_scalar("select note from kept")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(note, "from the first run");
}

#[tokio::test]
async fn nats_started_again_over_its_folder_keeps_its_streams() {
    let dir = tempfile::tempdir().unwrap();
    let first = Nats::start(dir.path()).unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(first.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "kept".to_owned(),
        subjects: vec!["kept.>".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("kept.one", "note".into())
        .await
        .unwrap()
        .await
        .unwrap();
    drop(first);

    let second = Nats::start(dir.path()).unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(second.url()).await.unwrap());
    let mut stream = js.get_stream("kept").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}
