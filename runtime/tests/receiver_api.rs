//! The receiver's HTTP API against a real JetStream: results, versions, new-information-only,
//! merge patches, deletes, conditional writes and batches.

mod receiver_support;

use axum::http::{Method, StatusCode};
use receiver_support::*;
use serde_json::json;
use testbed::NatsServer;

#[tokio::test]
async fn put_creates_then_updates_and_a_2xx_means_the_event_is_stored() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;

    let created = put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["result"], "created");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.headers["etag"], "\"1\"");

    let updated = put(&router, "c1", json!({"id": "c1", "name": "Ada L."})).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.body["result"], "updated");
    assert_eq!(updated.body["version"], 2);

    let events = events_of(&nats, "c1").await;
    assert_eq!(
        events.len(),
        2,
        "each 2xx is an event already in the stream"
    );
    assert_eq!(events[1].state, Some(json!({"id": "c1", "name": "Ada L."})));
    assert_eq!(events[1].changes.len(), 1);
    assert_eq!(events[1].changes[0].path, "/name");
    assert_eq!(updated.body["sequence"], 2);
}

#[tokio::test]
async fn an_unchanged_snapshot_appends_no_event() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    put(
        &router,
        "c1",
        json!({"id": "c1", "name": "Ada", "city": "Lyon", "syncedAt": "t1"}),
    )
    .await;

    // Same information: other key order, a different ignored field.
    let body = r#"{"syncedAt": "t2", "city": "Lyon", "name": "Ada", "id": "c1"}"#;
    let again = call(
        &router,
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(body),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["result"], "unchanged");
    assert_eq!(again.body["version"], 1);
    assert_eq!(stream_messages(&nats).await, 1);
}

#[tokio::test]
async fn patch_merges_into_the_current_state() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    put(
        &router,
        "c1",
        json!({"id": "c1", "name": "Ada", "city": "Lyon"}),
    )
    .await;

    let patched = call(
        &router,
        Method::PATCH,
        "/v1/entities/customer/c1",
        Some(r#"{"city": null, "age": 36}"#),
        &[],
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["result"], "updated");
    let current = call(&router, Method::GET, "/v1/entities/customer/c1", None, &[]).await;
    assert_eq!(
        current.body["state"],
        json!({"id": "c1", "name": "Ada", "age": 36})
    );
    assert_eq!(current.body["version"], 2);

    let missing = call(
        &router,
        Method::PATCH,
        "/v1/entities/customer/nobody",
        Some(r#"{"age": 1}"#),
        &[],
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_appends_a_deleted_event_once() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;

    let deleted = call(
        &router,
        Method::DELETE,
        "/v1/entities/customer/c1",
        None,
        &[],
    )
    .await;
    assert_eq!(deleted.body["result"], "deleted");
    assert_eq!(deleted.body["version"], 2);
    let again = call(
        &router,
        Method::DELETE,
        "/v1/entities/customer/c1",
        None,
        &[],
    )
    .await;
    assert_eq!(again.body["result"], "unchanged");
    assert_eq!(
        call(&router, Method::GET, "/v1/entities/customer/c1", None, &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let never = call(
        &router,
        Method::DELETE,
        "/v1/entities/customer/never",
        None,
        &[],
    )
    .await;
    assert_eq!(
        (never.status, never.body["result"].as_str()),
        (StatusCode::OK, Some("unchanged")),
        "deleting an absent key is no new information"
    );

    // Put after delete creates it anew, continuing the version sequence.
    let recreated = put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    assert_eq!(recreated.body["result"], "created");
    assert_eq!(recreated.body["version"], 3);
    let events = events_of(&nats, "c1").await;
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(events[1].state, None);
}

#[tokio::test]
async fn if_match_makes_a_write_conditional_on_the_version() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    let body = json!({"id": "c1", "name": "Ada"}).to_string();
    let uri = "/v1/entities/customer/c1";

    let first = call(&router, Method::PUT, uri, Some(&body), &[("if-match", "0")]).await;
    assert_eq!(first.body["result"], "created");
    let stale = call(
        &router,
        Method::PUT,
        uri,
        Some(&json!({"id": "c1", "name": "B"}).to_string()),
        &[("if-match", "0")],
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["detail"], "the current version is 1, not 0");
    let fresh = call(
        &router,
        Method::PUT,
        uri,
        Some(&json!({"id": "c1", "name": "B"}).to_string()),
        &[("if-match", "\"1\"")],
    )
    .await;
    assert_eq!(fresh.body["result"], "updated");
    assert_eq!(stream_messages(&nats).await, 2);
}

#[tokio::test]
async fn batches_answer_per_item_in_ndjson_and_json_arrays() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    put(&router, "c2", json!({"id": "c2", "name": "Bo"})).await;

    let ndjson = [
        json!({"state": {"id": "c1", "name": "Ada"}}),
        json!({"state": {"id": "c2", "name": "Bo"}}),
        json!({"state": {"id": "c1", "name": "Ada L."}}),
        json!({"state": {"id": "c3", "name": ""}}),
        json!({"key": "c2", "delete": true}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let answer = call(
        &router,
        Method::POST,
        "/v1/entities/customer/batch",
        Some(&ndjson),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let results: Vec<&str> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["created", "unchanged", "updated", "rejected", "deleted"]
    );
    assert_eq!(
        answer.body["results"][2]["version"], 2,
        "items of one key apply in order"
    );
    assert_eq!(answer.body["results"][3]["problem"]["status"], 422);
    assert_eq!(
        answer.body["results"][3]["problem"]["errors"][0]["path"],
        "/name"
    );
    assert_eq!(answer.body["counts"]["rejected"], 1);

    let array = json!([{"state": {"id": "c4", "name": "Di"}}, {"oops": true}]).to_string();
    let answer = call(
        &router,
        Method::POST,
        "/v1/entities/customer/batch",
        Some(&array),
        &[("content-type", "application/json")],
    )
    .await;
    let results: Vec<&str> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["created", "rejected"]);
    assert_eq!(stream_messages(&nats).await, 1 + 3 + 1);
}

#[tokio::test]
async fn metrics_count_results_and_rejections() {
    let nats = NatsServer::start().await.unwrap();
    let (router, _, registry) = receiver(&nats, Default::default()).await;
    put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    put(&router, "c1", json!({"id": "c1"})).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "dreampipe_receiver_results_total{outcome=\"appended\",type=\"created\"} 1",
        "dreampipe_receiver_results_total{outcome=\"unchanged\"} 1",
        "dreampipe_receiver_results_total{outcome=\"rejected\",reason=\"schema\",code=\"422\"} 1",
        "dreampipe_receiver_append_duration_seconds_count 1",
        "dreampipe_receiver_append_conflicts_total 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn status_reports_the_streams_events_keys_and_newest_event() {
    let nats = NatsServer::start().await.unwrap();
    let router = open_receiver(&nats).await;
    let empty = call(&router, Method::GET, "/v1/status", None, &[]).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body["events"], 0);
    assert!(empty.body.get("lastEventTime").is_none_or(|t| t.is_null()));

    put(&router, "c1", json!({"id": "c1", "name": "Ada"})).await;
    put(&router, "c1", json!({"id": "c1", "name": "Ada L."})).await;
    put(&router, "c2", json!({"id": "c2", "name": "Bo"})).await;
    let status = call(&router, Method::GET, "/v1/status", None, &[]).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["entity"], "customer");
    assert_eq!(status.body["stream"], "dp_shop_customer");
    assert_eq!(status.body["events"], 3);
    assert_eq!(status.body["keys"], 2);
    assert_eq!(status.body["lastSequence"], 3);
    let newest: jiff::Timestamp = status.body["lastEventTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(jiff::Timestamp::now().duration_since(newest).as_secs() < 60);
}
