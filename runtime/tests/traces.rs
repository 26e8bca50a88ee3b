//! One trace from the external record to the view row (DESIGN §12, ADR 49): an adapter, a
//! receiver and a projector run as processes exporting OTLP to a collector in this test,
//! which decodes the protobuf as a real one would. The projector's commit of the record's
//! event must be in the same trace as the adapter's poll, linked through the receiver's
//! decision and append.

mod role_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use role_support::{CONFIG, start};
use testbed::child::{terminate, wait_until_ready};
use testbed::{NatsServer, TestDatabase};

/// A span as the collector received it, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// `POST /v1/traces` of OTLP/HTTP: decodes the protobuf request and keeps every span.
async fn collect(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut kept = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn attributes(
    values: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    values
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_record_from_the_adapters_poll_to_the_projectors_commit() {
    let spans = Spans::default();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(collector, app).await });

    let nats = NatsServer::start().await.unwrap();
    let database = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("customers.jsonl");
    std::fs::write(&records, "{\"id\": \"c-traced\", \"name\": \"Ada\"}\n").unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let adapter_dir = dir.path().join("adapter");
    std::fs::create_dir(&adapter_dir).unwrap();
    std::fs::write(
        adapter_dir.join("config.yaml"),
        format!(
            "{}---\napiVersion: dreampipe.io/v1alpha1\nkind: Adapter\nmetadata: {{name: feed}}\n\
             spec:\n  entity: customer\n  source: {{file: {{path: {:?}}}}}\n  mapping: {{id: record.id, name: record.name}}\n",
            CONFIG.split("---").next().unwrap(),
            records.display()
        ),
    )
    .unwrap();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("NATS_URL", nats.url().to_owned()),
    ];
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        otel.iter().cloned().chain(extra.iter().cloned()).collect()
    };

    let (receiver, receiver_port) = start("receiver", dir.path(), &otel);
    let (projector, projector_port) = start(
        "projector",
        dir.path(),
        &with(&[("DATABASE_URL", database.url())]),
    );
    wait_until_ready(receiver_port, Duration::from_secs(30));
    wait_until_ready(projector_port, Duration::from_secs(30));
    let (adapter, _) = start(
        "adapter",
        &adapter_dir,
        &with(&[(
            "DREAMPIPE_RECEIVER_URL",
            format!("http://127.0.0.1:{receiver_port}"),
        )]),
    );

    // The projector's commit of the record's event, once it has been exported.
    let deadline = Instant::now() + Duration::from_secs(60);
    let commit = loop {
        let found = spans
            .lock()
            .unwrap()
            .iter()
            .find(|span| span.name == "projector.commit")
            .cloned();
        if let Some(commit) = found {
            break commit;
        }
        assert!(
            Instant::now() < deadline,
            "no projector.commit span within 60 s; spans received: {:?}",
            names(&spans)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Its ancestors come from other processes, each exporting on its own schedule.
    let chain = loop {
        let chain = ancestors(&spans.lock().unwrap(), &commit);
        if chain.len() >= 6 || Instant::now() > deadline {
            break chain;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (mut child, what) in [
        (adapter, "adapter"),
        (projector, "projector"),
        (receiver, "receiver"),
    ] {
        let status = terminate(&mut child, Duration::from_secs(15));
        assert!(status.success(), "the {what} stops cleanly: {status}");
    }

    let steps: Vec<(String, String)> = chain
        .iter()
        .map(|span| (span.service.clone(), span.name.clone()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("dreampipe-projector", "projector.commit"),
        ("dreampipe-receiver", "store.append"),
        ("dreampipe-receiver", "receiver.decide"),
        ("dreampipe-receiver", "POST /v1/entities/{entity}/batch"),
        ("dreampipe-adapter", "adapter.submit"),
        ("dreampipe-adapter", "adapter.poll"),
    ]
    .iter()
    .map(|(service, name)| (service.to_string(), name.to_string()))
    .collect();
    assert_eq!(
        steps,
        expected,
        "the commit's ancestors, nearest first (all spans: {:?})",
        names(&spans)
    );
    assert!(
        chain.iter().all(|span| span.trace_id == commit.trace_id),
        "one trace id throughout"
    );
    let decide = &chain[2];
    assert_eq!(decide.attributes["key"], "c-traced");
    assert_eq!(decide.attributes["result"], "created");
    assert_eq!(chain[0].attributes["projection"], "default/customers");
    assert_eq!(
        chain[0].attributes["sequence"], chain[1].attributes["sequence"],
        "the commit is of the event the append stored"
    );
    assert_eq!(
        chain[3].attributes["http.route"],
        "/v1/entities/{entity}/batch"
    );
    drop(adapter_dir);
}

/// `span` and its ancestors among `spans`, nearest first.
fn ancestors(spans: &[Received], span: &Received) -> Vec<Received> {
    let mut chain = vec![span.clone()];
    while let Some(parent) = spans
        .iter()
        .find(|candidate| candidate.span_id == chain.last().unwrap().parent_span_id)
    {
        chain.push(parent.clone());
    }
    chain
}

fn names(spans: &Spans) -> Vec<String> {
    spans
        .lock()
        .unwrap()
        .iter()
        .map(|span| format!("{}:{}", span.service, span.name))
        .collect()
}
