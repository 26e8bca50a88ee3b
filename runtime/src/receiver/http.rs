//! The receiver's HTTP API:
//!
//! - `PUT    /v1/entities/{entity}/{key}`  full snapshot
//! - `PATCH  /v1/entities/{entity}/{key}`  JSON merge patch (RFC 7396) against the current state
//! - `DELETE /v1/entities/{entity}/{key}`
//! - `GET    /v1/entities/{entity}/{key}`  current state and version
//! - `POST   /v1/entities/{entity}/batch`  NDJSON or a JSON array, a result per item
//! - `POST   /v1/entities/{entity}/{key}/erasure`  erase the key (`requestedBy`, `reason`; ADR 75)
//!
//! `If-Match: <version>` makes a write conditional. Answers name the result (created, updated,
//! deleted, unchanged) with the version and stream sequence; errors are RFC 9457 problems.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::erase::EraseRequest;
use super::problem::ApiError;
use super::submit::{Accepted, Operation, Receiver, Submission};
use crate::auth::{Tokens, require_token};
use crate::problem::{Path, Problem};
use crate::store::Key;

/// The API routes over `receiver`, guarded by `tokens`, and the unguarded `/v1/status` and
/// `/openapi.json`.
pub fn routes(receiver: Arc<Receiver>, tokens: Tokens) -> Router {
    let document = Arc::new(super::openapi::document(
        &receiver.model,
        receiver.store.max_payload(),
    ));
    Router::new()
        .route("/v1/entities/{entity}/batch", post(batch))
        .route(
            "/v1/entities/{entity}/{key}",
            get(read).put(put).patch(patch).delete(delete),
        )
        .route("/v1/entities/{entity}/{key}/erasure", post(erase))
        .layer(middleware::from_fn_with_state(
            Arc::new(tokens),
            require_token,
        ))
        .route_layer(middleware::from_fn(crate::trace::server_spans))
        .route("/v1/status", get(status))
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(document.as_ref().clone()) }),
        )
        .fallback(crate::problem::no_route)
        .method_not_allowed_fallback(crate::problem::method_not_allowed)
        .with_state(receiver)
}

async fn status(State(receiver): State<Arc<Receiver>>) -> Response {
    match receiver.report().await {
        // What the operator shows in `kubectl get entities`: the stream's figures.
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => ApiError::Store(error).into_response(),
    }
}

/// Answers an error, counting it by reason.
fn reject(receiver: &Receiver, error: ApiError) -> Response {
    receiver
        .metrics
        .count_rejected(error.reason(), error.status().as_u16());
    error.into_response()
}

fn accepted(receiver: &Receiver, accepted: Accepted) -> Response {
    receiver.metrics.count_accepted(accepted.result);
    let status = match accepted.result {
        super::submit::Outcome::Created => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let etag = HeaderValue::from_str(&format!("\"{}\"", accepted.version))
        .expect("digits are a valid header");
    (status, [(header::ETAG, etag)], axum::Json(accepted)).into_response()
}

async fn put(
    State(receiver): State<Arc<Receiver>>,
    Path((entity, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let (key, meta) = target(&receiver, &entity, &key, &headers)?;
        let state = read_json(&receiver, body).await?;
        Ok(submission(key, Operation::Put(state), meta))
    }
    .await;
    run(&receiver, result).await
}

async fn patch(
    State(receiver): State<Arc<Receiver>>,
    Path((entity, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let (key, meta) = target(&receiver, &entity, &key, &headers)?;
        let patch = read_json(&receiver, body).await?;
        if !patch.is_object() {
            return Err(ApiError::BadRequest(
                "a merge patch must be a JSON object".to_owned(),
            ));
        }
        Ok(submission(key, Operation::Patch(patch), meta))
    }
    .await;
    run(&receiver, result).await
}

async fn delete(
    State(receiver): State<Arc<Receiver>>,
    Path((entity, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = target(&receiver, &entity, &key, &headers)
        .map(|(key, meta)| submission(key, Operation::Delete, meta));
    run(&receiver, result).await
}

async fn run(receiver: &Receiver, submission: Result<Submission, ApiError>) -> Response {
    match submission {
        Ok(submission) => match receiver.submit(submission).await {
            Ok(done) => accepted(receiver, done),
            Err(error) => reject(receiver, error),
        },
        Err(error) => reject(receiver, error),
    }
}

/// Erases a key: its tombstone appended and its earlier events purged before the answer.
async fn erase(
    State(receiver): State<Arc<Receiver>>,
    Path((entity, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let (key, _) = target(&receiver, &entity, &key, &headers)?;
        let body = read_json(&receiver, body).await?;
        let request: EraseRequest = serde_json::from_value(body)
            .map_err(|error| ApiError::BadRequest(format!("the erasure request: {error}")))?;
        if request.requested_by.trim().is_empty() || request.reason.trim().is_empty() {
            return Err(ApiError::BadRequest(
                "an erasure request names requestedBy and a reason".to_owned(),
            ));
        }
        receiver.erase(&key, &request).await
    }
    .await;
    match result {
        Ok(erased) => axum::Json(erased).into_response(),
        Err(error) => reject(&receiver, error),
    }
}

/// The current state of a key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Current {
    key: String,
    version: u64,
    sequence: u64,
    state: Value,
    recorded_at: String,
}

async fn read(
    State(receiver): State<Arc<Receiver>>,
    Path((entity, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (key, _) = target(&receiver, &entity, &key, &headers)?;
        match receiver.store.latest(&key).await? {
            Some(stored) if stored.event.is_tombstone() => Err(ApiError::Erased {
                key: key.to_string(),
                version: stored.event.version,
            }),
            Some(stored) => match stored.event.state {
                Some(state) => Ok(Current {
                    key: stored.event.key,
                    version: stored.event.version,
                    sequence: stored.sequence,
                    state,
                    recorded_at: stored.event.recorded_at,
                }),
                None => Err(ApiError::NotFound(format!(
                    "key {key} was deleted at version {}",
                    stored.event.version
                ))),
            },
            None => Err(ApiError::NotFound(format!("key {key} does not exist"))),
        }
    }
    .await;
    match result {
        Ok(current) => {
            let etag = HeaderValue::from_str(&format!("\"{}\"", current.version))
                .expect("digits are a valid header");
            ([(header::ETAG, etag)], axum::Json(current)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// What a request says about a submission besides its body.
#[derive(Debug, Default)]
struct Meta {
    if_match: Option<u64>,
    source: Option<String>,
    occurred_at: Option<String>,
    correlation_id: Option<String>,
}

fn submission(key: Key, operation: Operation, meta: Meta) -> Submission {
    Submission {
        key,
        operation,
        if_match: meta.if_match,
        source: meta.source,
        occurred_at: meta.occurred_at,
        correlation_id: meta.correlation_id,
    }
}

/// Checks the entity and key of the path and reads the request's headers.
fn target(
    receiver: &Receiver,
    entity: &str,
    key: &str,
    headers: &HeaderMap,
) -> Result<(Key, Meta), ApiError> {
    check_entity(receiver, entity)?;
    let key = Key::new(key).map_err(|e| ApiError::Rejected(e.into()))?;
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let if_match = match text(header::IF_MATCH.as_str()) {
        Some(value) => Some(parse_version(&value)?),
        None => None,
    };
    let occurred_at = match text("dreampipe-occurred-at") {
        Some(value) => Some(checked_occurred_at(
            "the DreamPipe-Occurred-At header",
            &value,
        )?),
        None => None,
    };
    Ok((
        key,
        Meta {
            if_match,
            source: text("dreampipe-source"),
            occurred_at,
            correlation_id: text("x-correlation-id"),
        },
    ))
}

fn check_entity(receiver: &Receiver, entity: &str) -> Result<(), ApiError> {
    let served = receiver.model.names().entity();
    if entity != served {
        return Err(ApiError::UnknownEntity {
            served: served.to_owned(),
            requested: entity.to_owned(),
        });
    }
    Ok(())
}

/// An `occurredAt` in the envelope's form (RFC 3339, UTC), or a 400 naming where it came from.
fn checked_occurred_at(field: &'static str, value: &str) -> Result<String, ApiError> {
    super::model::occurred_at(value).ok_or_else(|| ApiError::OccurredAt {
        field,
        value: value.chars().take(80).collect(),
    })
}

/// `If-Match` carries a version, bare (`3`) or as an entity tag (`"3"`).
fn parse_version(value: &str) -> Result<u64, ApiError> {
    value.trim().trim_matches('"').parse().map_err(|_| {
        ApiError::BadRequest(format!("If-Match must be a version number, not {value:?}"))
    })
}

async fn read_body(receiver: &Receiver, body: Body) -> Result<Bytes, ApiError> {
    let limit = receiver.model.limits().max_body_bytes;
    axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|error| {
            // A body over the limit, or one that stalled (process's body read timeout) or broke.
            let error = error.into_inner();
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::BodyTooLarge { limit }
            } else {
                ApiError::BodyUnreadable(axum::Error::new(error))
            }
        })
}

async fn read_json(receiver: &Receiver, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(receiver, body).await?;
    serde_json::from_slice(&bytes).map_err(|error| ApiError::MalformedJson(error.to_string()))
}

/// One item of a batch: a state to store, or a key to delete.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchItem {
    /// The key; taken from the state when omitted.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    state: Option<Value>,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    if_match: Option<u64>,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
}

/// The result of one batch item.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemResult {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Problem>,
}

#[derive(Debug, Serialize)]
struct BatchAnswer {
    results: Vec<ItemResult>,
    counts: HashMap<&'static str, usize>,
}

async fn batch(
    State(receiver): State<Arc<Receiver>>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match parse_batch(&receiver, &entity, &headers, body).await {
        Ok(items) => axum::Json(run_batch(&receiver, items, &headers).await).into_response(),
        Err(error) => reject(&receiver, error),
    }
}

async fn parse_batch(
    receiver: &Receiver,
    entity: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<Result<BatchItem, ApiError>>, ApiError> {
    check_entity(receiver, entity)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let ndjson = match media {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => true,
        "application/json" => false,
        other => return Err(ApiError::UnsupportedMediaType(other.to_owned())),
    };
    let bytes = read_body(receiver, body).await?;
    let limit = receiver.model.limits().max_batch_items;
    let items: Vec<Result<BatchItem, ApiError>> = if ndjson {
        let lines: Vec<&[u8]> = bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect();
        if lines.len() > limit as usize {
            return Err(ApiError::BatchTooLarge {
                count: lines.len(),
                limit,
            });
        }
        lines
            .into_iter()
            .map(|line| {
                serde_json::from_slice(line).map_err(|e| ApiError::MalformedJson(e.to_string()))
            })
            .collect()
    } else {
        let values: Vec<Value> =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        if values.len() > limit as usize {
            return Err(ApiError::BatchTooLarge {
                count: values.len(),
                limit,
            });
        }
        values
            .into_iter()
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| ApiError::BadRequest(format!("not a batch item: {e}")))
            })
            .collect()
    };
    Ok(items)
}

/// Answers a batch: each item parsed into a submission (or refused), then submitted with the
/// rest of the batch.
async fn run_batch(
    receiver: &Receiver,
    items: Vec<Result<BatchItem, ApiError>>,
    headers: &HeaderMap,
) -> BatchAnswer {
    let source = headers
        .get("dreampipe-source")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let submissions: Vec<Result<Submission, ApiError>> = items
        .into_iter()
        .map(|item| item.and_then(|item| to_submission(receiver, item, source.clone())))
        .collect();
    // A refused submission names its key; an item that never became one has none.
    let keys: Vec<Option<String>> = submissions
        .iter()
        .map(|s| s.as_ref().ok().map(|s| s.key.to_string()))
        .collect();
    let outcomes = receiver.submit_batch(submissions).await;
    let results: Vec<ItemResult> = outcomes
        .into_iter()
        .zip(keys)
        .enumerate()
        .map(|(index, (outcome, key))| match outcome {
            Ok(accepted) => {
                receiver.metrics.count_accepted(accepted.result);
                ItemResult {
                    index,
                    key: Some(accepted.key),
                    result: accepted.result.as_str(),
                    version: Some(accepted.version),
                    sequence: Some(accepted.sequence),
                    problem: None,
                }
            }
            Err(error) => rejected_item(receiver, index, key, &error),
        })
        .collect();
    let mut counts = HashMap::new();
    for result in &results {
        *counts.entry(result.result).or_insert(0) += 1;
    }
    BatchAnswer { results, counts }
}

fn rejected_item(
    receiver: &Receiver,
    index: usize,
    key: Option<String>,
    error: &ApiError,
) -> ItemResult {
    receiver
        .metrics
        .count_rejected(error.reason(), error.status().as_u16());
    if let ApiError::Store(store) = error {
        tracing::error!(error = %crate::error_chain(store), "event store failed");
    }
    ItemResult {
        index,
        key,
        result: "rejected",
        version: None,
        sequence: None,
        problem: Some(error.problem()),
    }
}

fn to_submission(
    receiver: &Receiver,
    item: BatchItem,
    source: Option<String>,
) -> Result<Submission, ApiError> {
    let BatchItem {
        key,
        state,
        delete,
        if_match,
        occurred_at,
        correlation_id,
    } = item;
    let (key, operation) = match (state, delete, key) {
        (Some(state), false, key) => {
            let key = match key {
                Some(key) => Key::new(key).map_err(|e| ApiError::Rejected(e.into()))?,
                None => receiver.model.key_of(&state)?,
            };
            (key, Operation::Put(state))
        }
        (None, true, Some(key)) => (
            Key::new(key).map_err(|e| ApiError::Rejected(e.into()))?,
            Operation::Delete,
        ),
        (None, true, None) => {
            return Err(ApiError::BadRequest("a delete item needs a key".to_owned()));
        }
        _ => {
            return Err(ApiError::BadRequest(
                "a batch item has either a state or delete: true (with a key)".to_owned(),
            ));
        }
    };
    let occurred_at = match occurred_at {
        Some(value) => Some(checked_occurred_at("occurredAt", &value)?),
        None => None,
    };
    if correlation_id
        .as_deref()
        .is_some_and(|id| id.contains('\0'))
    {
        return Err(ApiError::BadRequest(
            "correlationId holds a NUL character (U+0000)".to_owned(),
        ));
    }
    Ok(Submission {
        key,
        operation,
        if_match,
        source,
        occurred_at,
        correlation_id,
    })
}
