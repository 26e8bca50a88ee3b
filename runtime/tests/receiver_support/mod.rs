//! Shared pieces of the receiver tests: an Entity, receivers over a real nats-server, and
//! requests sent through the router in-process.

#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use runtime::auth::Tokens;
use runtime::receiver::metrics::Metrics;
use runtime::receiver::model::EntityModel;
use runtime::receiver::submit::Receiver;
use runtime::store::jetstream::ensure_stream;
use runtime::store::{Event, Key, StreamNames};
use serde_json::Value;
use testbed::NatsServer;
use tower::ServiceExt;

pub const ENTITY: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: shop}
spec:
  key: /id
  partitions: 4
  ignore: [/syncedAt]
  receiver: {limits: {maxBodyBytes: 4096, maxBatchItems: 50, maxDepth: 6}}
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string, minLength: 1}
      city: {type: string}
      age: {type: integer, minimum: 0}
      n: {type: integer}
      syncedAt: {type: string}
      tags: {type: array}
"#;

pub fn entity() -> crds::Entity {
    serde_yaml::from_str(ENTITY).unwrap()
}

pub fn names() -> StreamNames {
    StreamNames::new("shop", "customer", 4)
}

/// A receiver instance over `nats`: its own connection, as a separate pod would have.
pub async fn receiver(nats: &NatsServer, tokens: Tokens) -> (Router, Arc<Receiver>, Registry) {
    receiver_of(nats, entity(), tokens).await
}

/// A receiver of `entity` (in namespace shop, like [`entity`]) over `nats`.
pub async fn receiver_of(
    nats: &NatsServer,
    entity: crds::Entity,
    tokens: Tokens,
) -> (Router, Arc<Receiver>, Registry) {
    receiver_over(nats.client().await.unwrap(), entity, tokens).await
}

/// A receiver of `entity` over its own NATS connection `client` (to one server or a cluster).
pub async fn receiver_over(
    client: async_nats::Client,
    entity: crds::Entity,
    tokens: Tokens,
) -> (Router, Arc<Receiver>, Registry) {
    let names = StreamNames::new("shop", crds_name(&entity), entity.spec.partitions);
    ensure_stream(&client, &names, &entity.spec.stream)
        .await
        .unwrap();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let receiver = Arc::new(
        Receiver::open(&client, EntityModel::new(&entity).unwrap(), metrics)
            .await
            .unwrap(),
    );
    (
        runtime::receiver::http::routes(receiver.clone(), tokens),
        receiver,
        registry,
    )
}

fn crds_name(entity: &crds::Entity) -> &str {
    entity
        .metadata
        .name
        .as_deref()
        .expect("test entities are named")
}

pub async fn open_receiver(nats: &NatsServer) -> Router {
    receiver(nats, Tokens::default()).await.0
}

/// An answer: status, headers and the JSON body (Null when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(
            body.map(|b| Body::from(b.to_owned()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn put(router: &Router, key: &str, state: Value) -> Answer {
    call(
        router,
        Method::PUT,
        &format!("/v1/entities/customer/{key}"),
        Some(&state.to_string()),
        &[],
    )
    .await
}

/// Every event stored for `key`, in stream order.
pub async fn events_of(nats: &NatsServer, key: &str) -> Vec<Event> {
    let js = nats.jetstream().await.unwrap();
    let stream = js.get_stream(names().stream()).await.unwrap();
    let subject = names().subject(&Key::new(key).unwrap());
    let mut events = Vec::new();
    let mut sequence = 1;
    loop {
        match stream
            .direct_get_next_for_subject(subject.as_str(), Some(sequence))
            .await
        {
            Ok(message) => {
                events.push(serde_json::from_slice(&message.payload).unwrap());
                sequence = message.sequence + 1;
            }
            Err(_) => return events,
        }
    }
}

/// Messages in the Entity's stream.
pub async fn stream_messages(nats: &NatsServer) -> u64 {
    let js = nats.jetstream().await.unwrap();
    let mut stream = js.get_stream(names().stream()).await.unwrap();
    stream.info().await.unwrap().state.messages
}
