//! Leader election against a mocked API server: a standby reconciles nothing while another
//! replica's Lease is renewed, and takes the Lease (then starts its controllers) once the
//! holder's record has stayed unchanged for a whole term.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mock::{self, Call, FakeProbe, FakeStreams};
use common::scenarios::{LEASES, lease, lease_config};
use http::{Request, Response};
use kube::client::Body;
use operator::context::Context;
use operator::leader::{self, Elector};
use operator::settings::RuntimeSettings;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

#[tokio::test]
async fn a_standby_does_not_reconcile_while_the_lease_is_fresh_and_takes_over_when_it_expires() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let metrics =
        operator::metrics::Metrics::register(&mut prometheus_client::registry::Registry::default());
    let ctx = Arc::new(Context::new(
        client.clone(),
        RuntimeSettings::example(),
        Arc::new(FakeProbe::default()),
        Arc::new(FakeStreams::default()),
        metrics.clone(),
        Some("dreampipe-operator-b".to_owned()),
    ));
    let elector = Elector::new(client, lease_config("dreampipe-operator-b"));
    let shutdown = CancellationToken::new();
    let election = {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            leader::while_leading(elector, &metrics, shutdown, move |stop| {
                operator::controller::run(ctx, None, stop)
            })
            .await
        })
    };

    // Replica a renewed its Lease once and then went silent (its record never changes again).
    let mut stored = lease(
        "dreampipe-operator-a",
        "2026-01-01T00:00:00.000000Z",
        "7",
        3,
    );
    let path = format!("{LEASES}/dreampipe-operator");
    let started = Instant::now();
    let mut calls: Vec<(Duration, Call, bool)> = Vec::new();
    let mut open_watches = Vec::new();
    let deadline = started + Duration::from_secs(10);
    while let Ok(Some((request, send))) =
        tokio::time::timeout_at(deadline, handle.next_request()).await
    {
        let call = mock::read(request).await;
        let leading = metrics.is_leader();
        calls.push((started.elapsed(), call.clone(), leading));
        match (call.method.as_str(), call.path == path) {
            ("GET", true) => respond(send, 200, &stored),
            ("PUT", true) => {
                stored = call.body.clone();
                stored["metadata"]["resourceVersion"] = json!("8");
                respond(send, 200, &stored);
            }
            ("GET", false) if call.query.contains("watch=true") => open_watches.push(send),
            ("GET", false) => respond(
                send,
                200,
                &json!({"apiVersion": "v1", "kind": "List",
                        "metadata": {"resourceVersion": "1"}, "items": []}),
            ),
            _ => panic!("unexpected call {} {}", call.method, call.path),
        }
        let reconciling = calls
            .iter()
            .any(|(_, c, _)| c.path.contains("/dreampipe.io/"));
        if reconciling {
            break;
        }
    }

    let takeover = calls
        .iter()
        .position(|(_, c, _)| c.method == "PUT")
        .expect("the standby takes the lease over");
    let (at, put, _) = &calls[takeover];
    assert!(
        *at >= Duration::from_secs(1),
        "taken over after {at:?}, before the holder's 1s term ran out"
    );
    for (_, call, leading) in &calls[..takeover] {
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            ("GET", path.as_str()),
            "a standby only reads the lease"
        );
        assert!(!leading, "the standby says it stands by");
    }
    assert!(takeover >= 5, "the standby kept looking: {takeover} reads");
    assert_eq!(put.body["spec"]["holderIdentity"], "dreampipe-operator-b");
    assert_eq!(put.body["spec"]["leaseTransitions"], 4);
    assert_eq!(
        put.body["metadata"]["resourceVersion"], "7",
        "written over the version read, so a racing replica gets a conflict"
    );
    let (_, first_reconcile, leading) = calls
        .iter()
        .find(|(_, c, _)| c.path.contains("/dreampipe.io/"))
        .expect("the new leader starts its controllers");
    assert_eq!(first_reconcile.method, "GET");
    assert!(leading, "the leader says it leads");

    shutdown.cancel();
    drop(open_watches);
    drop(handle);
    let result = tokio::time::timeout(Duration::from_secs(15), election)
        .await
        .expect("the election stops on shutdown")
        .expect("the election task does not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(!metrics.is_leader());
}
