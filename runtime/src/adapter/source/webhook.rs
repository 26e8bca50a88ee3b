//! The `webhook` source: `POST /v1/records` with a JSON object, a JSON array of objects or
//! NDJSON; the records are mapped and submitted before the answer, so a pusher that gets a
//! 200 knows the receiver has them.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::super::mapping::Mapping;
use super::super::status::Stats;
use super::super::submit::Submitter;
use crate::auth::{Tokens, require_token};

/// What the webhook needs to handle a push.
#[derive(Debug)]
pub struct Webhook {
    pub mapping: Arc<Mapping>,
    pub submitter: Submitter,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
}

/// `POST /v1/records`, guarded by `tokens`.
pub fn routes(webhook: Arc<Webhook>, tokens: Tokens) -> Router {
    Router::new()
        .route("/v1/records", post(push))
        .layer(middleware::from_fn_with_state(
            Arc::new(tokens),
            require_token,
        ))
        .with_state(webhook)
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

async fn push(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let records = match records_of(&body) {
        Ok(records) => records,
        Err(error) => {
            return crate::problem::respond(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not JSON, a JSON array or JSON lines: {error}"),
                Vec::new(),
            );
        }
    };
    let items = super::map_records(records.iter(), &webhook.mapping, &webhook.stats);
    match webhook.submitter.submit(&items, &webhook.shutdown).await {
        Ok(()) => {
            webhook.stats.synced();
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
