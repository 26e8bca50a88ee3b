//! Submitting mapped items to the Entity's receiver: NDJSON batches to
//! `POST /v1/entities/{entity}/batch`, retried with capped exponential backoff while the
//! receiver is unreachable or answers 5xx, and counted from the per-item results.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::mapping::Item;
use super::status::Stats;

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The HTTP client the adapter uses, for the receiver and for `http` sources.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A plain HTTP/1 client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Why items could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the receiver URL {0:?} is not a valid URI")]
    Url(String, #[source] hyper::http::uri::InvalidUri),
    #[error("shut down before the receiver accepted the batch")]
    ShutDown,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot reach the receiver")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("cannot read the receiver's answer")]
    Body(#[source] hyper::Error),
    #[error("the receiver answered {status}: {body}")]
    Status {
        status: hyper::StatusCode,
        body: String,
    },
    #[error("the receiver's answer is not a batch result")]
    Answer(#[source] serde_json::Error),
}

impl AttemptError {
    fn is_transient(&self) -> bool {
        match self {
            AttemptError::Connect(_) | AttemptError::Body(_) => true,
            AttemptError::Status { status, .. } => status.is_server_error(),
            AttemptError::Answer(_) => false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    results: Vec<ItemResult>,
}

#[derive(Debug, Deserialize)]
struct ItemResult {
    #[serde(default)]
    key: Option<String>,
    result: String,
    #[serde(default)]
    problem: Option<serde_json::Value>,
}

/// Submits to one Entity's receiver.
#[derive(Debug, Clone)]
pub struct Submitter {
    client: HttpClient,
    url: hyper::Uri,
    token: Option<String>,
    source: String,
    batch_size: usize,
    stats: Arc<Stats>,
}

impl Submitter {
    pub fn new(
        client: HttpClient,
        receiver_url: &str,
        entity: &str,
        token: Option<String>,
        source: &str,
        batch_size: u32,
        stats: Arc<Stats>,
    ) -> Result<Self, SubmitError> {
        let text = format!(
            "{}/v1/entities/{entity}/batch",
            receiver_url.trim_end_matches('/')
        );
        let url = text.parse().map_err(|e| SubmitError::Url(text, e))?;
        Ok(Submitter {
            client,
            url,
            token,
            source: source.to_owned(),
            batch_size: batch_size.max(1) as usize,
            stats,
        })
    }

    /// Submits `items` in batches. A batch the receiver refuses (4xx) counts as rejected and
    /// the next goes on; unreachable receivers and 5xx are retried until `shutdown`.
    pub async fn submit(
        &self,
        items: &[Item],
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        for batch in items.chunks(self.batch_size) {
            self.submit_batch(batch, shutdown)
                .instrument(crate::span!("adapter.submit", items = batch.len()))
                .await?;
        }
        Ok(())
    }

    /// Submits one batch, retrying while the receiver is away; traced as `adapter.submit`,
    /// whose context the request carries (`traceparent`).
    async fn submit_batch(
        &self,
        batch: &[Item],
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        let mut body = Vec::new();
        for item in batch {
            serde_json::to_writer(&mut body, &item.batch_line()).expect("JSON serialises");
            body.push(b'\n');
        }
        let body = Bytes::from(body);
        let mut backoff = process::Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        loop {
            match self.attempt(body.clone()).await {
                Ok(answer) => {
                    self.count(batch, answer);
                    return Ok(());
                }
                Err(error) if error.is_transient() => {
                    let message = crate::error_chain(&error);
                    let retry_in = backoff.delay();
                    tracing::warn!(error = %message, ?retry_in, "batch not accepted yet");
                    self.stats.error(message);
                    if !backoff.wait(shutdown).await {
                        return Err(SubmitError::ShutDown);
                    }
                }
                Err(error) => {
                    let message = crate::error_chain(&error);
                    tracing::error!(error = %message, items = batch.len(), "batch refused");
                    self.stats.submitted(batch.len() as u64);
                    self.stats.rejected(batch.len() as u64, message);
                    break;
                }
            }
        }
        Ok(())
    }

    async fn attempt(&self, body: Bytes) -> Result<BatchAnswer, AttemptError> {
        let mut request = hyper::Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header("dreampipe-source", self.source.as_str());
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = request.body(Full::new(body)).expect("a valid request");
        crate::trace::inject_http(&tracing::Span::current(), request.headers_mut());
        let response = self
            .client
            .request(request)
            .await
            .map_err(AttemptError::Connect)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(AttemptError::Body)?
            .to_bytes();
        if !status.is_success() {
            return Err(AttemptError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(512).collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(AttemptError::Answer)
    }

    fn count(&self, batch: &[Item], answer: BatchAnswer) {
        self.stats.submitted(batch.len() as u64);
        for result in &answer.results {
            self.stats.result(&result.result);
            if result.result == "rejected" {
                let problem = result
                    .problem
                    .as_ref()
                    .and_then(|p| p.get("detail").or_else(|| p.get("title")))
                    .and_then(|d| d.as_str())
                    .unwrap_or("rejected");
                let key = result.key.as_deref().unwrap_or("?");
                tracing::warn!(key, problem, "the receiver rejected a record");
                self.stats
                    .error(format!("the receiver rejected key {key:?}: {problem}"));
            }
        }
    }
}
