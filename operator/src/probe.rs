//! Reading a runtime pod's `GET /v1/status`. Behind a trait so the reconcilers' tests answer
//! from memory instead of the network.

use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use process::error_chain;
use serde_json::Value;

/// Why a status report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url} is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("GET {url} failed")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("GET {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("GET {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("reading the answer of GET {url} failed")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the answer of GET {url} is not the expected JSON")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Something that can fetch a status report as JSON.
pub trait StatusProbe: Send + Sync + std::fmt::Debug {
    /// `GET url` and parse the body as JSON.
    fn get(&self, url: String) -> BoxFuture<'static, Result<Value, ProbeError>>;
}

/// Fetches status reports over plain HTTP inside the cluster, with a short timeout so a hung
/// pod never stalls a reconcile.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpProbe {
    pub fn new(timeout: Duration) -> Self {
        HttpProbe {
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        }
    }
}

impl StatusProbe for HttpProbe {
    fn get(&self, url: String) -> BoxFuture<'static, Result<Value, ProbeError>> {
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let uri: hyper::Uri = url.parse().map_err(|source| ProbeError::Url {
                url: url.clone(),
                source,
            })?;
            let response = tokio::time::timeout(timeout, client.get(uri))
                .await
                .map_err(|_| ProbeError::Timeout {
                    url: url.clone(),
                    after: timeout,
                })?
                .map_err(|source| ProbeError::Request {
                    url: url.clone(),
                    source,
                })?;
            if !response.status().is_success() {
                return Err(ProbeError::Status {
                    url,
                    status: response.status().as_u16(),
                });
            }
            let body = tokio::time::timeout(timeout, response.into_body().collect())
                .await
                .map_err(|_| ProbeError::Timeout {
                    url: url.clone(),
                    after: timeout,
                })?
                .map_err(|source| ProbeError::Body {
                    url: url.clone(),
                    source,
                })?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|source| ProbeError::Json { url, source })
        })
    }
}

/// Fetches `url` and reads it as `T`; the error is a one-line reason for a condition.
pub async fn report<T: serde::de::DeserializeOwned>(
    probe: &dyn StatusProbe,
    url: String,
) -> Result<T, String> {
    let value = probe.get(url.clone()).await.map_err(|e| error_chain(&e))?;
    serde_json::from_value(value).map_err(|e| {
        error_chain(&ProbeError::Json {
            url: url.clone(),
            source: e,
        })
    })
}
