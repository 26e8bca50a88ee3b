//! Bad input the stream itself would refuse: events over the NATS server's max_payload are a
//! 413 naming the limit (never a 503 that clients retry forever), NUL is refused with its
//! path, `occurredAt` must be RFC 3339, and deleting an absent key is `unchanged`.

mod receiver_support;

use axum::Router;
use axum::http::{Method, StatusCode};
use receiver_support::*;
use runtime::auth::Tokens;
use serde_json::{Value, json};
use testbed::NatsServer;

/// An Entity whose bodies may be larger than the NATS server's max_payload (1 MiB).
const ROOMY: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: shop}
spec:
  key: /id
  partitions: 4
  receiver: {limits: {maxBodyBytes: 4194304}}
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string}
      city: {type: string}
"#;

async fn roomy(nats: &NatsServer) -> Router {
    let entity = serde_yaml::from_str(ROOMY).unwrap();
    receiver_of(nats, entity, Tokens::default()).await.0
}

/// The limit a 413 names: "... at most N bytes per event".
fn named_limit(problem: &Value) -> usize {
    let detail = problem["detail"].as_str().unwrap();
    let tail = detail
        .split("at most ")
        .nth(1)
        .unwrap_or_else(|| panic!("{detail}"));
    tail.split(' ').next().unwrap().parse().unwrap()
}

fn assert_names_the_event_limit(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(
        answer.body["type"],
        "https://dreampipe.io/problems/event-too-large"
    );
    let limit = named_limit(&answer.body);
    assert!(
        (1_048_576 - 200..1_048_576).contains(&limit),
        "the limit is max_payload less the headers: {limit}"
    );
}

#[tokio::test]
async fn a_state_over_the_servers_max_payload_is_a_413_naming_the_limit() {
    let nats = NatsServer::start().await.unwrap();
    let router = roomy(&nats).await;
    let answer = put(
        &router,
        "big",
        json!({"id": "big", "name": "x".repeat(600_000)}),
    )
    .await;
    assert_names_the_event_limit(&answer);
    assert_eq!(stream_messages(&nats).await, 0);

    let fits = put(
        &router,
        "big",
        json!({"id": "big", "name": "x".repeat(400_000)}),
    )
    .await;
    assert_eq!(
        fits.status,
        StatusCode::CREATED,
        "state and changes of 800 kB fit"
    );
}

#[tokio::test]
async fn an_update_whose_old_and_new_values_exceed_max_payload_is_a_413() {
    let nats = NatsServer::start().await.unwrap();
    let router = roomy(&nats).await;
    let created = put(
        &router,
        "k",
        json!({"id": "k", "name": "a".repeat(400_000)}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);

    let replaced = put(
        &router,
        "k",
        json!({"id": "k", "name": "b".repeat(400_000)}),
    )
    .await;
    assert_names_the_event_limit(&replaced);
    let patched = call(
        &router,
        Method::PATCH,
        "/v1/entities/customer/k",
        Some(&json!({"name": "c".repeat(400_000)}).to_string()),
        &[],
    )
    .await;
    assert_names_the_event_limit(&patched);
    assert_eq!(stream_messages(&nats).await, 1);
}

#[tokio::test]
async fn a_batch_item_over_max_payload_is_rejected_alone() {
    let nats = NatsServer::start().await.unwrap();
    let router = roomy(&nats).await;
    let body = [
        json!({"state": {"id": "big", "name": "x".repeat(600_000)}}),
        json!({"state": {"id": "small", "name": "Ada"}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let answer = call(
        &router,
        Method::POST,
        "/v1/entities/customer/batch",
        Some(&body),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let results = &answer.body["results"];
    assert_eq!(results[0]["result"], "rejected");
    assert_eq!(results[0]["problem"]["status"], 413);
    assert!(named_limit(&results[0]["problem"]) < 1_048_576);
    assert_eq!(results[1]["result"], "created");
    assert_eq!(events_of(&nats, "small").await.len(), 1);
    assert_eq!(stream_messages(&nats).await, 1);
}

#[tokio::test]
async fn nul_in_a_state_is_a_422_naming_its_path() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    let answer = put(&router, "c1", json!({"id": "c1", "name": "Ada\u{0}"})).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["errors"][0]["path"], "/name");
    assert!(answer.body["detail"].as_str().unwrap().contains("NUL"));

    put(&router, "c2", json!({"id": "c2", "name": "Bo"})).await;
    let patched = call(
        &router,
        Method::PATCH,
        "/v1/entities/customer/c2",
        Some(r#"{"tags": ["ok", "bad\u0000"]}"#),
        &[],
    )
    .await;
    assert_eq!(patched.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(patched.body["errors"][0]["path"], "/tags/1");
    assert_eq!(stream_messages(&nats).await, 1);
}

#[tokio::test]
async fn occurred_at_must_be_an_rfc3339_time() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    let refused = call(
        &router,
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(r#"{"id": "c1", "name": "Ada"}"#),
        &[("dreampipe-occurred-at", "last tuesday")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("DreamPipe-Occurred-At header must be an RFC 3339 time"),
        "{}",
        refused.body
    );

    let batch = [
        json!({"state": {"id": "c2", "name": "Bo"}, "occurredAt": "2026-02-30T00:00:00Z"}),
        json!({"state": {"id": "c3", "name": "Cy"}, "occurredAt": "2026-01-31T13:00:00+01:00"}),
    ];
    let answer = call(
        &router,
        Method::POST,
        "/v1/entities/customer/batch",
        Some(&json!(batch).to_string()),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(answer.body["results"][0]["result"], "rejected");
    assert_eq!(answer.body["results"][0]["problem"]["status"], 400);
    assert_eq!(answer.body["results"][1]["result"], "created");
    assert_eq!(
        events_of(&nats, "c3").await[0].occurred_at.as_deref(),
        Some("2026-01-31T13:00:00+01:00"),
        "a valid time is stored as the producer wrote it"
    );
    assert_eq!(stream_messages(&nats).await, 1);
}

#[tokio::test]
async fn deleting_a_key_never_written_is_unchanged_and_appends_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    let answer = call(
        &router,
        Method::DELETE,
        "/v1/entities/customer/never",
        None,
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["result"], "unchanged");
    assert_eq!(answer.body["version"], 0);

    let batch = call(
        &router,
        Method::POST,
        "/v1/entities/customer/batch",
        Some(r#"[{"key": "gone", "delete": true}]"#),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(batch.body["results"][0]["result"], "unchanged");
    assert_eq!(stream_messages(&nats).await, 0);
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_with_a_problem_and_the_connection_closed() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let timeouts = process::ReadTimeouts {
        headers: Duration::from_millis(300),
        body_idle: Duration::from_millis(300),
    };
    tokio::spawn(process::serve_with(
        listener,
        router,
        stop.clone(),
        timeouts,
    ));

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"PUT /v1/entities/customer/c1 HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"id\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the receiver closes a connection whose body stalled")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body-unreadable"), "{answer}");
    assert_eq!(stream_messages(&nats).await, 0);
    stop.cancel();
}
