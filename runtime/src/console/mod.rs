//! The pipeline console (ADR 80): a read-only web UI the query service serves at `/console/`.
//! Its pages read the query API (states, history, views, dead letters) and `/v1/pipeline`,
//! which this module keeps from the replicas' heartbeats on NATS.

pub mod pipeline;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use crds::report::{HEARTBEAT_PREFIX, Heartbeat};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use pipeline::{Pipeline, PipelineView};

/// The live pipeline, fed by heartbeats.
#[derive(Debug, Default)]
pub struct Console {
    pipeline: Mutex<Pipeline>,
}

impl Console {
    /// Subscribes to every replica's heartbeats until `shutdown`; the pipeline fills as they
    /// arrive (within one heartbeat period), and a reconnect resubscribes by itself.
    pub async fn listen(
        client: &async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Console>, JoinHandle<()>), async_nats::SubscribeError> {
        let mut heartbeats = client.subscribe(format!("{HEARTBEAT_PREFIX}.>")).await?;
        let console = Arc::new(Console::default());
        let task = tokio::spawn({
            let console = console.clone();
            async move {
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = heartbeats.next() => match message {
                            Some(message) => message,
                            None => return,
                        },
                    };
                    match serde_json::from_slice::<Heartbeat>(&message.payload) {
                        Ok(heartbeat) => console.record(heartbeat, SystemTime::now()),
                        Err(error) => {
                            tracing::debug!(subject = %message.subject, %error, "not a heartbeat")
                        }
                    }
                }
            }
        });
        Ok((console, task))
    }

    pub fn record(&self, heartbeat: Heartbeat, now: SystemTime) {
        self.pipeline
            .lock()
            .expect("pipeline lock")
            .record(heartbeat, now);
    }

    /// `namespace`'s pipeline now.
    pub fn view(&self, namespace: &str) -> PipelineView {
        self.pipeline
            .lock()
            .expect("pipeline lock")
            .view(namespace, SystemTime::now())
    }
}

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// The console's files, open like `/openapi.json`: they hold no data, and ask for a token
/// when the API wants one.
pub fn asset_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Only its own script and style, talking only to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}
