//! The generator and file sources, and the figures the adapter reports at `/v1/status`.

mod adapter_support;

use std::collections::BTreeMap;

use adapter_support::{
    events_of, receiver, receiver_on, start_adapter, start_adapter_with_token, wait_for,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use runtime::adapter::source::generator::Records;
use runtime::adapter::status::AdapterReport;
use runtime::auth::Tokens;
use testbed::NatsServer;
use tokio_util::sync::CancellationToken;

async fn get_status(listen: std::net::SocketAddr) -> AdapterReport {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client
        .get(format!("http://{listen}/v1/status").parse().unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn adapter_yaml(source: &str) -> String {
    format!(
        r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {{name: feed, namespace: shop}}
spec:
  entity: customer
  batchSize: 7
  source: {source}
  mapping:
    id: record.id
    name: record.name
"#
    )
}

#[tokio::test]
async fn the_generator_submits_its_seeded_records_and_stops_at_count() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = adapter_yaml("{generator: {rate: 2000, count: 40, keys: 10, seed: 3}}");
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;

    let status = wait_for(&adapter, "40 records", |s| s.submitted == 40).await;
    let expected: Vec<serde_json::Value> = Records::new(3, 10).take(40).collect();
    let mut last_name_of: BTreeMap<String, String> = BTreeMap::new();
    for record in &expected {
        last_name_of.insert(
            record["id"].as_str().unwrap().to_owned(),
            record["name"].as_str().unwrap().to_owned(),
        );
    }
    assert_eq!(status.records_read, 40);
    assert_eq!(status.created, last_name_of.len() as u64);
    assert_eq!(status.created + status.updated + status.unchanged, 40);
    for (id, name) in &last_name_of {
        let events = events_of(&nats, id).await;
        let state = events.last().unwrap().state.clone().unwrap();
        assert_eq!(state["name"], name.as_str(), "{id}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(adapter.status().records_read, 40, "stops after count");
    adapter.stop().await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_json_lines_file_is_submitted_and_bad_lines_are_counted_as_rejected() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"id\": \"a\", \"name\": \"Ada\"}\n",
            "not json\n",
            "{\"id\": \"b\"}\n",
            "{\"id\": \"c\", \"name\": \"Cy\"}\n",
            "{\"id\": \"d\", \"name\": \"\"}\n",
        ),
    )
    .unwrap();
    let yaml = adapter_yaml(&format!("{{file: {{path: {:?}}}}}", file.display()));
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;

    wait_for(&adapter, "the file", |s| s.last_sync_time.is_some()).await;
    let status = get_status(adapter.listen).await;
    assert_eq!(status.records_read, 5);
    assert_eq!(status.submitted, 3, "a, c and d; b has no name to map");
    assert_eq!(status.created, 2);
    assert_eq!(status.changed, 2);
    assert_eq!(
        status.rejected, 3,
        "the bad line, b, and d (refused by the schema)"
    );
    assert!(status.last_error.is_some());
    assert_eq!(events_of(&nats, "a").await.len(), 1);
    assert!(events_of(&nats, "b").await.is_empty());
    adapter.stop().await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_csv_file_is_read_by_its_header() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, "id,name,city\n1,Ada,Oslo\n2,\"Bo, Jr\",Graz\n").unwrap();
    let yaml = adapter_yaml(&format!(
        "{{file: {{path: {:?}, format: Csv}}}}",
        file.display()
    ));
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;

    let status = wait_for(&adapter, "the file", |s| s.last_sync_time.is_some()).await;
    assert_eq!(
        (status.submitted, status.created, status.rejected),
        (2, 2, 0)
    );
    let events = events_of(&nats, "2").await;
    assert_eq!(events[0].state.as_ref().unwrap()["name"], "Bo, Jr");
    adapter.stop().await;
    shutdown.cancel();
}

async fn wait_until_ready(listen: std::net::SocketAddr) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for _ in 0..200 {
        if let Ok(response) = client
            .get(format!("http://{listen}/readyz").parse().unwrap())
            .await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the adapter never became ready");
}

async fn post_records(
    listen: std::net::SocketAddr,
    token: Option<&str>,
    body: &str,
) -> (hyper::StatusCode, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::post(format!("http://{listen}/v1/records"))
        .header("content-type", "application/x-ndjson");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn webhook_records_are_submitted_only_with_a_valid_token() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/hook")).unwrap();
    std::fs::write(dir.path().join("secrets/hook/token"), "push-token\n").unwrap();
    let yaml = adapter_yaml("{webhook: {auth: {secretRef: {name: hook, key: token}}}}");
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;
    wait_until_ready(adapter.listen).await;

    let lines = "{\"id\": \"w1\", \"name\": \"Wu\"}\n{\"id\": \"w2\", \"name\": \"Xi\"}\n";
    let (status, _) = post_records(adapter.listen, None, lines).await;
    assert_eq!(status, hyper::StatusCode::UNAUTHORIZED);
    let (status, _) = post_records(adapter.listen, Some("wrong"), lines).await;
    assert_eq!(status, hyper::StatusCode::UNAUTHORIZED);
    assert!(events_of(&nats, "w1").await.is_empty());

    let (status, answer) = post_records(adapter.listen, Some("push-token"), lines).await;
    assert_eq!(status, hyper::StatusCode::OK);
    assert_eq!(answer["submitted"], 2);
    assert_eq!(adapter.status().created, 2);
    assert_eq!(events_of(&nats, "w2").await.len(), 1);
    adapter.stop().await;
    shutdown.cancel();
}

async fn post_signed(
    listen: std::net::SocketAddr,
    signature: Option<String>,
    body: &str,
) -> (hyper::StatusCode, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::post(format!("http://{listen}/v1/records"))
        .header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = client
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// A Stripe-style signature of `body` at unix time `t` with `secret`.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn webhook_pushes_need_a_fresh_valid_signature() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/hook")).unwrap();
    std::fs::write(dir.path().join("secrets/hook/signing"), "whsec_test\n").unwrap();
    let yaml = adapter_yaml(
        "{webhook: {signature: {header: Stripe-Signature, style: stripe, toleranceSeconds: 60, secretRef: {name: hook, key: signing}}}}",
    );
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;
    wait_until_ready(adapter.listen).await;

    let body = r#"{"id": "s1", "name": "Sy"}"#;
    let now = jiff::Timestamp::now().as_second();
    let refused = [
        (None, "the push carries no Stripe-Signature header"),
        (
            Some(stripe_signature("not-the-secret", now, body)),
            "the signature does not match the body",
        ),
        // A push captured ten minutes ago and sent again: signed right, but too old.
        (
            Some(stripe_signature("whsec_test", now - 600, body)),
            "a replay",
        ),
    ];
    for (signature, reason) in refused {
        let (status, problem) = post_signed(adapter.listen, signature, body).await;
        assert_eq!(status, hyper::StatusCode::UNAUTHORIZED, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{problem}"
        );
    }
    assert!(
        events_of(&nats, "s1").await.is_empty(),
        "nothing refused was submitted"
    );
    let refused = adapter.status().last_error.unwrap_or_default();
    assert!(
        refused.starts_with("a push was refused:"),
        "the last refusal shows in the status: {refused}"
    );

    let signed = stripe_signature("whsec_test", now, body);
    let (status, answer) = post_signed(adapter.listen, Some(signed), body).await;
    assert_eq!(status, hyper::StatusCode::OK, "{answer}");
    assert_eq!(answer["submitted"], 1);
    assert_eq!(events_of(&nats, "s1").await.len(), 1);
    adapter.stop().await;
    shutdown.cancel();
}

#[tokio::test]
async fn messages_on_a_nats_subject_are_submitted() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = adapter_yaml("{nats: {subject: feed.customers, queueGroup: adapters}}");
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;
    wait_until_ready(adapter.listen).await;

    let client = nats.client().await.unwrap();
    for (id, name) in [("n1", "Ny"), ("n2", "Oz"), ("n3", "Pi")] {
        let record = serde_json::json!({"id": id, "name": name});
        client
            .publish("feed.customers", record.to_string().into())
            .await
            .unwrap();
    }
    client
        .publish("feed.customers", "garbage".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let status = wait_for(&adapter, "three messages", |s| {
        s.created == 3 && s.rejected == 1
    })
    .await;
    assert_eq!(status.records_read, 4);
    adapter.stop().await;
    shutdown.cancel();
}

#[tokio::test]
async fn records_wait_for_a_receiver_that_is_not_up_yet() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let port = testbed::child::free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = adapter_yaml("{generator: {rate: 1000, count: 5, keys: 5, seed: 1}}");
    let receiver_url = format!("http://127.0.0.1:{port}");
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;

    wait_for(&adapter, "a failed attempt", |s| s.last_error.is_some()).await;
    assert_eq!(adapter.status().submitted, 0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    receiver_on(&nats, listener, Tokens::default(), shutdown.clone()).await;
    let status = wait_for(&adapter, "the records", |s| s.submitted == 5).await;
    assert!(status.created >= 1 && status.rejected == 0, "{status:?}");
    adapter.stop().await;
    shutdown.cancel();
}

#[tokio::test]
async fn the_receiver_token_is_sent_and_a_refused_batch_is_counted_not_retried() {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tokens = Tokens::load(None, Some("ingest-token")).unwrap();
    let receiver_url = receiver_on(&nats, listener, tokens, shutdown.clone()).await;
    let yaml = adapter_yaml("{generator: {rate: 1000, count: 3, keys: 3, seed: 5}}");

    let without = tempfile::tempdir().unwrap();
    let refused = start_adapter(without.path(), &yaml, &receiver_url, nats.url()).await;
    let status = wait_for(&refused, "the refusal", |s| s.rejected == 3).await;
    assert_eq!(status.changed, 0);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("401"),
        "{status:?}"
    );
    refused.stop().await;

    let with = tempfile::tempdir().unwrap();
    let token_file = with.path().join("receiver-token");
    std::fs::write(&token_file, "ingest-token\n").unwrap();
    let accepted = start_adapter_with_token(
        with.path(),
        &yaml,
        &receiver_url,
        nats.url(),
        Some(&token_file),
    )
    .await;
    let status = wait_for(&accepted, "the records", |s| s.submitted == 3).await;
    assert_eq!(status.rejected, 0, "{status:?}");
    accepted.stop().await;
    shutdown.cancel();
}

/// The JetStream consumer's state on the server.
async fn consumer_info(
    nats: &NatsServer,
    stream: &str,
    consumer: &str,
) -> async_nats::jetstream::consumer::Info {
    let js = nats.jetstream().await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(consumer)
        .await
        .unwrap();
    consumer.info().await.unwrap().clone()
}

#[tokio::test]
async fn a_jetstream_stream_is_consumed_at_least_once_across_a_crash_and_a_receiver_outage() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // Stored before any adapter ran: a durable consumer starts at the stream's first message.
    for i in 0..30 {
        let record = serde_json::json!({"id": format!("o{}", i % 10), "name": format!("v{i}")});
        js.publish(format!("orders.{}", i % 10), record.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js.publish("orders.bad", "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // The receiver is not up: the first batch is delivered but never acknowledged, and
    // progress reports keep it from redelivery past the ack wait.
    let shutdown = CancellationToken::new();
    let port = testbed::child::free_port();
    let receiver_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let yaml = adapter_yaml("{jetstream: {stream: ORDERS, consumer: orders-feed, ackWait: 3s}}");
    let crashed = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;
    wait_for(&crashed, "a failed attempt", |s| s.last_error.is_some()).await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let info = consumer_info(&nats, "ORDERS", "orders-feed").await;
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered),
        (7, 0),
        "one batch in flight, kept by progress reports: {info:?}"
    );
    assert_eq!(crashed.status().submitted, 0);
    assert_eq!(crashed.status().backlog, Some(24), "31 stored, 7 in flight");
    // Killed mid-retry: nothing was acknowledged, so nothing is lost.
    crashed.task.abort();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    receiver_on(&nats, listener, Tokens::default(), shutdown.clone()).await;
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;
    let status = wait_for(&adapter, "every message", |s| s.records_read == 31).await;
    assert_eq!(
        status.rejected, 1,
        "the message that is no JSON: {status:?}"
    );
    for key in 0..10 {
        let events = events_of(&nats, &format!("o{key}")).await;
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, [1, 2, 3], "o{key}: each change once, in order");
        assert_eq!(
            events[2].state.as_ref().unwrap()["name"],
            format!("v{}", 20 + key)
        );
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info = consumer_info(&nats, "ORDERS", "orders-feed").await;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "everything is acknowledged in the end: {info:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    assert_eq!(adapter.status().backlog, Some(0));

    // A message stored while it runs goes through too.
    let record = serde_json::json!({"id": "o1", "name": "late"});
    js.publish("orders.1", record.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for(&adapter, "the late message", |s| s.records_read == 32).await;
    adapter.stop().await;
    shutdown.cancel();
}
