//! A mocked API server for leader election: it plays the Lease (GET, create, merge and apply
//! patches) and answers the controllers' start-up (empty lists, watches held open), while the
//! operator under test runs `leader::while_leading` with the real controllers behind it.
//! Unlike `mock::Scenario` it scripts no order: the election's timing is the crate's.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use operator::context::Context;
use operator::leader::{self, LeaseConfig};
use operator::metrics::Metrics;
use operator::settings::RuntimeSettings;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::mock::{self, Call, FakeProbe, FakeStreams};

/// The Lease's path in the scenarios.
pub const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/dreampipe/leases/dreampipe-operator";
/// The other replica, which holds the Lease at the start of a takeover.
pub const OTHER: &str = "dreampipe-operator-a";
/// The replica under test.
pub const IDENTITY: &str = "dreampipe-operator-b";

/// One request, when it came (since the start), and whether the replica said it led then.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Duration,
    pub call: Call,
    pub leading: bool,
}

/// What a scenario saw.
#[derive(Debug)]
pub struct Election {
    pub seen: Vec<Seen>,
    /// When the other replica stopped renewing (takeover scenario).
    pub other_stopped: Duration,
    /// What `while_leading` returned after shutdown.
    pub result: Result<(), String>,
    pub leader_after_shutdown: bool,
}

impl Election {
    pub fn calls(&self) -> Vec<Call> {
        self.seen.iter().map(|s| s.call.clone()).collect()
    }

    /// The first request that made this replica the holder (an apply naming it).
    pub fn takeover(&self) -> Option<usize> {
        self.seen.iter().position(|s| {
            s.call.method == "PATCH"
                && s.call.path == LEASE
                && s.call.body["spec"]["holderIdentity"] == IDENTITY
        })
    }

    /// The first request of the controllers (a list or watch of a DreamPipe kind).
    pub fn first_reconcile(&self) -> Option<usize> {
        self.seen
            .iter()
            .position(|s| s.call.path.contains("/dreampipe.io/"))
    }
}

pub fn config() -> LeaseConfig {
    LeaseConfig {
        namespace: "dreampipe".to_owned(),
        name: "dreampipe-operator".to_owned(),
        identity: IDENTITY.to_owned(),
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(1),
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A merge patch (strategic merge is the same for a Lease: it has no lists): null removes.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": "not found"})
}

/// Runs the replica under test against the Lease `initial` (none: it does not exist yet).
/// While `other_renews_for` has not passed, every read finds the other replica's renewal
/// fresh. The scenario ends when the controllers have started, or after `limit`.
async fn play(initial: Option<Value>, other_renews_for: Duration, limit: Duration) -> Election {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
    let ctx = Arc::new(Context::new(
        client.clone(),
        RuntimeSettings::example(),
        Arc::new(FakeProbe::default()),
        Arc::new(FakeStreams::default()),
        mock::FakeEraser::answering(None),
        metrics.clone(),
        Some(IDENTITY.to_owned()),
    ));
    let shutdown = CancellationToken::new();
    let election = {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            leader::while_leading(client, config(), &metrics, shutdown, move |stop| {
                operator::controller::run(ctx, None, stop)
            })
            .await
        })
    };

    let mut stored = initial;
    let mut version = 10;
    let started = Instant::now();
    let mut seen: Vec<Seen> = Vec::new();
    let mut open_watches = Vec::new();
    while let Ok(Some((request, send))) =
        tokio::time::timeout_at(started + limit, handle.next_request()).await
    {
        let call = mock::read(request).await;
        seen.push(Seen {
            at: started.elapsed(),
            call: call.clone(),
            leading: metrics.is_leader(),
        });
        let lease = call.path == LEASE;
        let collection = call.path == LEASE.rsplit_once('/').unwrap().0;
        match (call.method.as_str(), lease, collection) {
            ("GET", true, _) => match stored.as_mut() {
                None => respond(send, 404, &not_found()),
                Some(object) => {
                    if started.elapsed() < other_renews_for
                        && object["spec"]["holderIdentity"] == OTHER
                    {
                        object["spec"]["renewTime"] = json!(now());
                    }
                    respond(send, 200, object);
                }
            },
            ("POST", _, true) => {
                let mut object = call.body.clone();
                version += 1;
                object["metadata"]["resourceVersion"] = json!(version.to_string());
                object["metadata"]["namespace"] = json!("dreampipe");
                respond(send, 201, &object);
                stored = Some(object);
            }
            ("PATCH", true, _) => match stored.as_mut() {
                None => respond(send, 404, &not_found()),
                Some(object) => {
                    merge(object, &call.body);
                    version += 1;
                    object["metadata"]["resourceVersion"] = json!(version.to_string());
                    respond(send, 200, object);
                }
            },
            ("GET", false, false) if call.query.contains("watch=true") => open_watches.push(send),
            ("GET", false, false) => respond(
                send,
                200,
                &json!({"apiVersion": "v1", "kind": "List",
                        "metadata": {"resourceVersion": "1"}, "items": []}),
            ),
            _ => panic!("unexpected call {} {}", call.method, call.path),
        }
        if seen.iter().any(|s| s.call.path.contains("/dreampipe.io/")) {
            break;
        }
    }

    // Shut down: the leader releases the Lease (a patch) before it stops.
    shutdown.cancel();
    drop(open_watches);
    let release = async {
        while let Some((request, send)) = handle.next_request().await {
            let call = mock::read(request).await;
            seen.push(Seen {
                at: started.elapsed(),
                call: call.clone(),
                leading: metrics.is_leader(),
            });
            match (call.method.as_str(), stored.as_mut()) {
                ("PATCH", Some(object)) if call.path == LEASE => {
                    merge(object, &call.body);
                    respond(send, 200, object);
                }
                (_, Some(object)) if call.path == LEASE => respond(send, 200, object),
                _ => respond(send, 404, &not_found()),
            }
        }
    };
    let finished = tokio::select! {
        () = release => None,
        done = tokio::time::timeout(Duration::from_secs(15), election) => Some(done),
    };
    let result = match finished {
        Some(Ok(Ok(result))) => result.map_err(|e| e.to_string()),
        other => Err(format!("the election did not stop cleanly: {other:?}")),
    };
    Election {
        seen,
        other_stopped: other_renews_for,
        result,
        leader_after_shutdown: metrics.is_leader(),
    }
}

/// The Lease held by the other replica, which renews it for 3 s and then goes silent.
pub async fn takeover() -> Election {
    let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "dreampipe-operator", "namespace": "dreampipe", "resourceVersion": "7"},
        "spec": {"holderIdentity": OTHER, "leaseDurationSeconds": 2, "acquireTime": now(),
                 "renewTime": now(), "leaseTransitions": 3}});
    play(Some(held), Duration::from_secs(3), Duration::from_secs(20)).await
}

/// No Lease yet: the first replica creates it and leads.
pub async fn first_replica() -> Election {
    play(None, Duration::ZERO, Duration::from_secs(15)).await
}
