//! Bad input: each case gets its 4xx as an RFC 9457 problem, and the stream stays unchanged.

mod receiver_support;

use axum::Router;
use axum::http::{Method, StatusCode};
use receiver_support::*;
use runtime::auth::Tokens;
use serde_json::json;
use testbed::NatsServer;

/// A receiver with one stored event and the tokens `secret` / `other`.
async fn guarded() -> (NatsServer, Router) {
    let nats = NatsServer::start().await.unwrap();
    let tokens = Tokens::load(None, Some("secret,other")).unwrap();
    let router = receiver(&nats, tokens).await.0;
    let seeded = call(
        &router,
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(r#"{"id":"c1","name":"Ada"}"#),
        &[AUTH],
    )
    .await;
    assert_eq!(seeded.status, StatusCode::CREATED);
    (nats, router)
}

const AUTH: (&str, &str) = ("authorization", "Bearer secret");

/// Sends a request that must be refused with `status`, and checks the problem and the stream.
async fn assert_refused(
    method: Method,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    status: StatusCode,
    detail: &str,
) {
    let (nats, router) = guarded().await;
    let answer = call(&router, method, uri, body, headers).await;
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(answer.body["status"], status.as_u16());
    let text = answer.body["detail"].as_str().unwrap();
    assert!(
        text.contains(detail),
        "detail {text:?} should mention {detail:?}"
    );
    assert_eq!(
        stream_messages(&nats).await,
        1,
        "a refused request leaves the stream unchanged"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(r#"{"id": "c1", "name": }"#),
        &[AUTH],
        StatusCode::BAD_REQUEST,
        "not valid JSON",
    )
    .await;
}

#[tokio::test]
async fn a_schema_violation_is_a_422_listing_each_failing_path() {
    let (nats, router) = guarded().await;
    let body = json!({"id": "c1", "name": "", "age": -1, "city": 7}).to_string();
    let answer = call(
        &router,
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(&body),
        &[AUTH],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut paths: Vec<&str> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/age", "/city", "/name"]);
    assert_eq!(stream_messages(&nats).await, 1);
}

#[tokio::test]
async fn a_state_without_its_key_is_a_422() {
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c2",
        Some(r#"{"name": "Bo"}"#),
        &[AUTH],
        StatusCode::UNPROCESSABLE_ENTITY,
        "does not match",
    )
    .await;
}

#[tokio::test]
async fn a_state_for_another_key_is_a_422() {
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c2",
        Some(r#"{"id": "c3", "name": "Bo"}"#),
        &[AUTH],
        StatusCode::UNPROCESSABLE_ENTITY,
        "differs from the key in the request",
    )
    .await;
}

#[tokio::test]
async fn a_key_over_512_bytes_is_a_400() {
    let uri = format!("/v1/entities/customer/{}", "k".repeat(513));
    assert_refused(
        Method::DELETE,
        &uri,
        None,
        &[AUTH],
        StatusCode::BAD_REQUEST,
        "at most 512",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let body = json!({"id": "c1", "name": "x".repeat(5000)}).to_string();
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(&body),
        &[AUTH],
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than 4096 bytes",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_batch_is_a_413() {
    let items: Vec<String> = (0..51)
        .map(|i| json!({"state": {"id": format!("k{i}"), "name": "n"}}).to_string())
        .collect();
    let body = items.join("\n");
    assert_refused(
        Method::POST,
        "/v1/entities/customer/batch",
        Some(&body),
        &[AUTH, ("content-type", "application/x-ndjson")],
        StatusCode::PAYLOAD_TOO_LARGE,
        "51 items; at most 50",
    )
    .await;
}

#[tokio::test]
async fn json_nested_too_deep_is_a_400() {
    let body = json!({"id": "c1", "name": "Ada", "tags": [[[[[["deep"]]]]]]}).to_string();
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(&body),
        &[AUTH],
        StatusCode::BAD_REQUEST,
        "nested 7 levels deep; at most 6",
    )
    .await;
}

#[tokio::test]
async fn json_nested_beyond_the_parser_limit_is_a_400() {
    let body = format!("{}{}", "[".repeat(1_000), "]".repeat(1_000));
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(&body),
        &[AUTH],
        StatusCode::BAD_REQUEST,
        "recursion limit",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_entity_is_a_404() {
    assert_refused(
        Method::PUT,
        "/v1/entities/order/o1",
        Some(r#"{"id": "o1"}"#),
        &[AUTH],
        StatusCode::NOT_FOUND,
        "serves entity \"customer\", not \"order\"",
    )
    .await;
}

#[tokio::test]
async fn a_missing_token_is_a_401() {
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(r#"{"id":"c1","name":"B"}"#),
        &[],
        StatusCode::UNAUTHORIZED,
        "bearer token is required",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_token_is_a_401() {
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(r#"{"id":"c1","name":"B"}"#),
        &[("authorization", "Bearer secreT")],
        StatusCode::UNAUTHORIZED,
        "bearer token is required",
    )
    .await;
}

#[tokio::test]
async fn a_batch_in_another_media_type_is_a_415() {
    assert_refused(
        Method::POST,
        "/v1/entities/customer/batch",
        Some("id,name\nc2,Bo"),
        &[AUTH, ("content-type", "text/csv")],
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "text/csv",
    )
    .await;
}

#[tokio::test]
async fn a_malformed_if_match_is_a_400() {
    assert_refused(
        Method::PUT,
        "/v1/entities/customer/c1",
        Some(r#"{"id":"c1","name":"B"}"#),
        &[AUTH, ("if-match", "latest")],
        StatusCode::BAD_REQUEST,
        "If-Match must be a version number",
    )
    .await;
}

#[tokio::test]
async fn a_patch_that_breaks_the_schema_is_a_422() {
    assert_refused(
        Method::PATCH,
        "/v1/entities/customer/c1",
        Some(r#"{"name": null}"#),
        &[AUTH],
        StatusCode::UNPROCESSABLE_ENTITY,
        "does not match",
    )
    .await;
}

#[tokio::test]
async fn a_key_that_is_not_utf8_is_a_400_problem() {
    assert_refused(
        Method::GET,
        "/v1/entities/customer/%FF",
        None,
        &[AUTH],
        StatusCode::BAD_REQUEST,
        "not UTF-8 once percent-decoded",
    )
    .await;
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    for uri in ["/v1/entities/customer/a/b", "/v1/entities/customer/", "/v2"] {
        assert_refused(
            Method::PUT,
            uri,
            Some(r#"{"id":"a","name":"B"}"#),
            &[AUTH],
            StatusCode::NOT_FOUND,
            "no route for PUT",
        )
        .await;
    }
}

#[tokio::test]
async fn a_method_a_path_does_not_serve_is_a_405_problem_with_allow() {
    let (nats, router) = guarded().await;
    let answer = call(
        &router,
        Method::POST,
        "/v1/entities/customer/k1",
        Some("{}"),
        &[AUTH],
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let allow = answer.headers["allow"].to_str().unwrap();
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert_eq!(
        answer.body["detail"],
        "POST is not allowed on /v1/entities/customer/k1"
    );
    assert_eq!(stream_messages(&nats).await, 1);
}
