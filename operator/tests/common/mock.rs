//! A scripted Kubernetes API server (kube's tower-test pattern, as in controller-rs's
//! `ApiServerVerifier`): each scenario lists the calls it expects, in order, with the answer to
//! each; a missing call, an extra call or a call out of order fails the test. Every call is
//! recorded so the RBAC test can check it against the chart's rules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crds::erasure::{ErasureCommand, ErasureReply};
use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use operator::context::Context;
use operator::erasures::{EraseError, Eraser};
use operator::probe::{ProbeError, StatusProbe};
use operator::settings::RuntimeSettings;
use operator::streams::{StreamAdmin, StreamError};
use serde_json::{Value, json};

/// One request the operator made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

type Answer = Box<dyn FnOnce(&Call) -> (u16, Value) + Send>;

/// One expected call and how the server answers it.
pub struct Expect {
    method: &'static str,
    path: String,
    /// `path` is a prefix: any object under it (names the server makes up, like events').
    prefix: bool,
    answer: Answer,
}

impl Expect {
    pub fn new(
        method: &'static str,
        path: impl Into<String>,
        answer: impl FnOnce(&Call) -> (u16, Value) + Send + 'static,
    ) -> Expect {
        Expect {
            method,
            path: path.into(),
            prefix: false,
            answer: Box::new(answer),
        }
    }

    /// The same expectation for any object under `collection`.
    pub fn any_path_under(mut self, collection: &str) -> Expect {
        self.path = format!("{collection}/");
        self.prefix = true;
        self
    }

    /// A server-side apply, answered with the applied object (plus `extra` merged in, e.g. a
    /// Deployment's status).
    pub fn apply(path: impl Into<String>, extra: Value) -> Expect {
        Expect::new("PATCH", path, move |call| {
            let mut object = call.body.clone();
            merge(&mut object, extra);
            (200, object)
        })
    }

    /// A server-side apply of a status, answered with `stored` updated by the applied body.
    pub fn apply_onto(path: impl Into<String>, stored: Value) -> Expect {
        Expect::new("PATCH", path, move |call| {
            let mut object = stored;
            merge(&mut object, call.body.clone());
            (200, object)
        })
    }

    /// A POST answered with what was posted.
    pub fn create(path: impl Into<String>) -> Expect {
        Expect::new("POST", path, |call| (201, call.body.clone()))
    }

    /// A GET answered with `object`.
    pub fn get(path: impl Into<String>, object: Value) -> Expect {
        Expect::new("GET", path, move |_| (200, object))
    }

    /// A GET answered 404.
    pub fn not_found(path: impl Into<String>) -> Expect {
        Expect::new("GET", path, |_| not_found())
    }

    /// A DELETE of an object that is not there, answered 404.
    pub fn delete_missing(path: impl Into<String>) -> Expect {
        Expect::new("DELETE", path, |_| not_found())
    }
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn merge(target: &mut Value, extra: Value) {
    match (target, extra) {
        (Value::Object(target), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, extra) => *target = extra,
    }
}

pub async fn read(request: Request<Body>) -> Call {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.expect("request body").to_bytes();
    Call {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A running scenario: the client to hand the operator, and the server playing the script.
pub struct Scenario {
    pub client: kube::Client,
    server: tokio::task::JoinHandle<Vec<Call>>,
}

impl Scenario {
    /// Starts a server that expects exactly `script`, in order.
    pub fn start(script: Vec<Expect>) -> Scenario {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let server = tokio::spawn(async move {
            let mut calls = Vec::new();
            for (step, expect) in script.into_iter().enumerate() {
                let next =
                    tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
                let Ok(Some((request, send))) = next else {
                    panic!(
                        "missing call {step}: expected {} {} after {calls:#?}",
                        expect.method, expect.path
                    );
                };
                let call = read(request).await;
                let path = if expect.prefix && call.path.starts_with(&expect.path) {
                    expect.path.as_str()
                } else {
                    call.path.as_str()
                };
                assert_eq!(
                    (call.method.as_str(), path),
                    (expect.method, expect.path.as_str()),
                    "call {step} differs from the script (query {:?})",
                    call.query
                );
                let (status, body) = (expect.answer)(&call);
                send.send_response(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
                calls.push(call);
            }
            if let Ok(Some((request, _))) =
                tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
            {
                let call = read(request).await;
                panic!(
                    "unexpected extra call {} {}?{}",
                    call.method, call.path, call.query
                );
            }
            calls
        });
        Scenario { client, server }
    }

    /// Waits for the script to be played to its end; returns the calls made.
    pub async fn finish(self) -> Vec<Call> {
        self.server.await.expect("the scripted API server panicked")
    }
}

/// Status reports served from memory, recording which URLs were asked.
#[derive(Debug, Default)]
pub struct FakeProbe {
    pub reports: Mutex<BTreeMap<String, Value>>,
    pub asked: Mutex<Vec<String>>,
}

impl FakeProbe {
    pub fn with(url: &str, report: Value) -> Arc<FakeProbe> {
        let probe = FakeProbe::default();
        probe.reports.lock().unwrap().insert(url.to_owned(), report);
        Arc::new(probe)
    }
}

impl StatusProbe for FakeProbe {
    fn get(&self, url: String) -> BoxFuture<'static, Result<Value, ProbeError>> {
        self.asked.lock().unwrap().push(url.clone());
        let answer = self.reports.lock().unwrap().get(&url).cloned();
        Box::pin(async move { answer.ok_or(ProbeError::Status { url, status: 503 }) })
    }
}

/// A stream admin that records deletions.
#[derive(Debug, Default)]
pub struct FakeStreams {
    pub deleted: Mutex<Vec<String>>,
}

impl StreamAdmin for FakeStreams {
    fn delete_stream(&self, stream: String) -> BoxFuture<'static, Result<bool, StreamError>> {
        self.deleted.lock().unwrap().push(stream);
        Box::pin(async { Ok(true) })
    }
}

/// A receiver for erasures that answers every request with `reply` (no receiver at all when
/// `None`), recording what it was asked.
#[derive(Debug, Default)]
pub struct FakeEraser {
    pub reply: Mutex<Option<ErasureReply>>,
    pub asked: Mutex<Vec<(String, String, ErasureCommand)>>,
}

impl FakeEraser {
    pub fn answering(reply: Option<ErasureReply>) -> Arc<FakeEraser> {
        Arc::new(FakeEraser {
            reply: Mutex::new(reply),
            asked: Mutex::default(),
        })
    }
}

impl Eraser for FakeEraser {
    fn erase(
        &self,
        namespace: String,
        entity: String,
        command: ErasureCommand,
    ) -> BoxFuture<'static, Result<ErasureReply, EraseError>> {
        self.asked
            .lock()
            .unwrap()
            .push((namespace.clone(), entity.clone(), command));
        let reply = self.reply.lock().unwrap().clone();
        Box::pin(async move {
            reply.ok_or_else(|| EraseError::NoReceiver {
                subject: crds::erasure::erasure_subject(&namespace, &entity),
                entity,
            })
        })
    }
}

/// A context over the scenario's client with the given fakes.
pub fn context(
    scenario: &Scenario,
    probe: Arc<FakeProbe>,
    streams: Arc<FakeStreams>,
) -> Arc<Context> {
    context_with(scenario, probe, streams, RuntimeSettings::example())
}

/// [`context`] with the operator's `settings`.
pub fn context_with(
    scenario: &Scenario,
    probe: Arc<FakeProbe>,
    streams: Arc<FakeStreams>,
    settings: RuntimeSettings,
) -> Arc<Context> {
    context_full(
        scenario,
        probe,
        streams,
        FakeEraser::answering(None),
        settings,
    )
}

/// [`context`] with an eraser.
pub fn context_erasing(
    scenario: &Scenario,
    probe: Arc<FakeProbe>,
    eraser: Arc<FakeEraser>,
) -> Arc<Context> {
    context_full(
        scenario,
        probe,
        Arc::default(),
        eraser,
        RuntimeSettings::example(),
    )
}

fn context_full(
    scenario: &Scenario,
    probe: Arc<FakeProbe>,
    streams: Arc<FakeStreams>,
    eraser: Arc<FakeEraser>,
    settings: RuntimeSettings,
) -> Arc<Context> {
    Arc::new(Context::new(
        scenario.client.clone(),
        settings,
        probe,
        streams,
        eraser,
        operator::metrics::Metrics::register(&mut prometheus_client::registry::Registry::default()),
        Some("dreampipe-operator-0".to_owned()),
    ))
}
