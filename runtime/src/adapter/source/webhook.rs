//! The `webhook` source: `POST /v1/records` with a JSON object, a JSON array of objects or
//! NDJSON; the records are mapped and submitted before the answer, so a pusher that gets a
//! 200 knows the receiver has them. With `signature`, a push whose HMAC signature is missing,
//! wrong or too old is refused (401) before anything is read from it.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use crds::adapter::WebhookSource;
use process::Health;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::signature::Verifier;
use super::{Feed, Setup, SetupError, Source};
use crate::auth::{Tokens, require_token};

/// The webhook source: its routes do the work, its run only waits.
#[derive(Debug)]
pub struct Webhook {
    tokens: Arc<Tokens>,
    verifier: Option<Verifier>,
}

impl Webhook {
    /// Reads the accepted tokens from the Secret `spec.auth` names.
    pub fn new(spec: &WebhookSource, setup: &Setup<'_>) -> Result<Self, SetupError> {
        let tokens = match &spec.auth {
            Some(auth) => Tokens::load(Some(&setup.secret_path(&auth.secret_ref)), None)?,
            None => {
                tracing::warn!("the webhook has no auth: it accepts records from anyone");
                Tokens::default()
            }
        };
        let verifier = match &spec.signature {
            Some(signature) => Some(Verifier::new(
                signature,
                setup.secret(&signature.secret_ref)?,
            )),
            None => None,
        };
        Ok(Webhook {
            tokens: Arc::new(tokens),
            verifier,
        })
    }
}

impl Source for Webhook {
    const KIND: &'static str = "webhook";
    type Error = std::convert::Infallible;

    /// `POST /v1/records`, guarded by the tokens.
    fn routes(&self, feed: &Arc<Feed>, shutdown: &CancellationToken) -> Option<Router> {
        let push_state = Arc::new(Push {
            feed: feed.clone(),
            shutdown: shutdown.clone(),
            verifier: self.verifier.clone(),
        });
        Some(
            Router::new()
                .route("/v1/records", post(push))
                .layer(middleware::from_fn_with_state(
                    self.tokens.clone(),
                    require_token,
                ))
                .with_state(push_state),
        )
    }

    /// Pushes are served by the routes; the source only waits for shutdown.
    async fn run(
        &self,
        _feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), Self::Error> {
        health.set_ready(true);
        shutdown.cancelled().await;
        Ok(())
    }
}

/// What a push needs: where records go, and the token that cuts a submission short.
#[derive(Debug)]
struct Push {
    feed: Arc<Feed>,
    shutdown: CancellationToken,
    verifier: Option<Verifier>,
}

/// The records of a push: a JSON object, an array of them, or one object a line.
fn records_of(body: &[u8]) -> Result<Vec<Json>, serde_json::Error> {
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Array(records)) => Ok(records),
        Ok(record) => Ok(vec![record]),
        Err(whole) => body
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(serde_json::from_slice)
            .collect::<Result<Vec<Json>, _>>()
            .map_err(|_| whole),
    }
}

async fn push(
    State(push): State<Arc<Push>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(verifier) = &push.verifier {
        let value = headers.get(verifier.header()).and_then(|v| v.to_str().ok());
        if let Err(refused) = verifier.verify(value, &body, jiff::Timestamp::now().as_second()) {
            tracing::warn!(reason = %refused, "a push was refused");
            push.feed
                .stats()
                .error(format!("a push was refused: {refused}"));
            return crate::problem::respond(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                refused.to_string(),
                Vec::new(),
            );
        }
    }
    let records = match records_of(&body) {
        Ok(records) => records,
        Err(error) => {
            push.feed.stats().rejected(
                1,
                format!("a push is not JSON, a JSON array or JSON lines: {error}"),
            );
            return crate::problem::respond(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not JSON, a JSON array or JSON lines: {error}"),
                Vec::new(),
            );
        }
    };
    let items = push.feed.map(&records);
    match push.feed.submit(&items, &push.shutdown).await {
        Ok(()) => {
            push.feed.stats().synced();
            axum::Json(json!({
                "received": records.len(),
                "submitted": items.len(),
                "rejected": records.len() - items.len(),
            }))
            .into_response()
        }
        Err(error) => crate::problem::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            error.to_string(),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_may_be_an_object_an_array_or_json_lines() {
        assert_eq!(records_of(br#"{"id":1}"#).unwrap().len(), 1);
        assert_eq!(records_of(br#"[{"id":1},{"id":2}]"#).unwrap().len(), 2);
        assert_eq!(
            records_of(b"{\"id\":1}\n{\"id\":2}\n\n{\"id\":3}\n")
                .unwrap()
                .len(),
            3
        );
        assert!(records_of(b"{\"id\":1}\nnope\n").is_err());
    }
}
