//! Operator memory while reconciling many resources against a mocked API server:
//! `cargo bench -p operator --bench memory` (DREAMPIPE_BENCH_N resources, 500 by default).
//! Prints peak RSS (VmHWM); the aim is under 64 MiB.

use std::sync::Arc;

use crds::erasure::{ErasureCommand, ErasureReply};
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use operator::context::Context;
use operator::erasures::{EraseError, Eraser};
use operator::probe::{ProbeError, StatusProbe};
use operator::settings::RuntimeSettings;
use operator::streams::{StreamAdmin, StreamError};
use serde_json::{Value, json};

#[derive(Debug)]
struct Silent;

impl StatusProbe for Silent {
    fn get(&self, url: String) -> BoxFuture<'static, Result<Value, ProbeError>> {
        Box::pin(async move { Err(ProbeError::Status { url, status: 503 }) })
    }
}

impl StreamAdmin for Silent {
    fn delete_stream(&self, _: String) -> BoxFuture<'static, Result<bool, StreamError>> {
        Box::pin(async { Ok(false) })
    }
}

impl Eraser for Silent {
    fn erase(
        &self,
        _: String,
        entity: String,
        _: ErasureCommand,
    ) -> BoxFuture<'static, Result<ErasureReply, EraseError>> {
        Box::pin(async move {
            Err(EraseError::NoReceiver {
                entity,
                subject: String::new(),
            })
        })
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn entity(i: usize) -> crds::Entity {
    serde_json::from_value(json!({
        "apiVersion": "dreampipe.io/v1alpha1", "kind": "Entity",
        "metadata": {"name": format!("entity-{i}"), "namespace": "bench",
                     "uid": format!("00000000-0000-4000-8000-{i:012}"), "generation": 1},
        "spec": {"key": "/id", "schema": {"type": "object", "required": ["id"],
                 "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}}
    }))
    .expect("an Entity")
}

// A benchmark reports on stdout.
#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("DREAMPIPE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    // The API server: every write is answered with what was written (a status apply is
    // answered with the whole stored Entity).
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let status_of = request
                .uri()
                .path()
                .strip_suffix("/status")
                .and_then(|p| p.rsplit_once("/entity-"))
                .and_then(|(_, i)| i.parse::<usize>().ok());
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let written: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
            let object = match status_of {
                Some(i) => {
                    let mut stored = serde_json::to_value(entity(i)).unwrap_or_default();
                    stored["status"] = written["status"].clone();
                    stored
                }
                None => written,
            };
            let body = serde_json::to_vec(&object).unwrap_or_default();
            send.send_response(Response::builder().body(Body::from(body)).unwrap());
        }
    });
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context::new(
        client,
        RuntimeSettings::example(),
        Arc::new(Silent),
        Arc::new(Silent),
        Arc::new(Silent),
        operator::metrics::Metrics::register(&mut prometheus_client::registry::Registry::default()),
        None,
    ));
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    for i in 0..n {
        operator::controller::driver::reconcile(Arc::new(entity(i)), ctx.clone()).await?;
    }
    let elapsed = started.elapsed();
    let peak = peak_rss_kib();
    println!(
        "reconciled {n} Entities in {elapsed:?}; peak RSS {:.1} MiB (before: {:.1} MiB; aim < 64 MiB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    Ok(())
}
