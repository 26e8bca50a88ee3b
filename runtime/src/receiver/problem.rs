//! The receiver's errors as HTTP answers (RFC 9457 problems). Internal errors are logged with
//! their sources and answered without detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::model::Rejection;
use crate::problem::{Problem, Violation};
use crate::store::jetstream::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u32 },
    #[error(
        "the event for key {key} would be {size} bytes (its state and its changes); the event \
         store accepts at most {limit} bytes per event"
    )]
    EventTooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    #[error("the request body could not be read")]
    BodyUnreadable(#[source] axum::Error),
    #[error("{field} must be an RFC 3339 time such as 2026-01-31T12:00:00Z, not {value:?}")]
    OccurredAt { field: &'static str, value: String },
    #[error("the batch has {count} items; at most {limit} are allowed")]
    BatchTooLarge { count: usize, limit: u32 },
    #[error("unsupported content type {0:?}: send application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    #[error("this receiver serves entity {served:?}, not {requested:?}")]
    UnknownEntity { served: String, requested: String },
    #[error("{0}")]
    NotFound(String),
    #[error("key {key} was erased at version {version}; this Entity refuses it afterwards")]
    Erased { key: String, version: u64 },
    #[error(
        "stream {stream} denies purge (it was created before erasure existed), so no key of it \
         can be erased; recreate the stream to allow erasure"
    )]
    PurgeDenied { stream: String },
    #[error("the current version is {current}, not {expected}")]
    PreconditionFailed { expected: u64, current: u64 },
    #[error("too many concurrent writers on key {key}; retry")]
    Contended { key: String },
    #[error("the event store is unavailable")]
    Store(#[from] StoreError),
    #[error("the receiver is starting: its stream is not ensured yet")]
    Starting,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Rejected(Rejection::TooDeep { .. } | Rejection::Key(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MalformedJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. }
            | ApiError::BatchTooLarge { .. }
            | ApiError::EventTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable(_) | ApiError::OccurredAt { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownEntity { .. } | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Erased { .. } => StatusCode::GONE,
            ApiError::PurgeDenied { .. } => StatusCode::CONFLICT,
            ApiError::Contended { .. } | ApiError::Store(_) | ApiError::Starting => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// A short, stable name of the reason, for metrics and problem types.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Rejected(Rejection::Schema { .. }) => "schema",
            ApiError::Rejected(Rejection::TooDeep { .. }) => "too_deep",
            ApiError::Rejected(Rejection::Nul { .. }) => "nul_character",
            ApiError::Rejected(Rejection::Key(_)) => "bad_key",
            ApiError::Rejected(
                Rejection::MissingKey { .. }
                | Rejection::KeyType { .. }
                | Rejection::KeyMismatch { .. },
            ) => "key_mismatch",
            ApiError::Rejected(Rejection::KeyInState { .. }) => "bad_key_in_state",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::EventTooLarge { .. } => "event_too_large",
            ApiError::BodyUnreadable(_) => "body_unreadable",
            ApiError::OccurredAt { .. } => "bad_occurred_at",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::UnknownEntity { .. } => "unknown_entity",
            ApiError::NotFound(_) => "not_found",
            ApiError::PreconditionFailed { .. } => "precondition_failed",
            ApiError::Erased { .. } => "erased",
            ApiError::PurgeDenied { .. } => "purge_denied",
            ApiError::Contended { .. } => "contended",
            ApiError::Store(_) => "unavailable",
            ApiError::Starting => "starting",
        }
    }

    /// The problem document; internal causes are not echoed.
    pub fn problem(&self) -> Problem {
        Problem::new(
            self.status(),
            self.reason(),
            self.to_string(),
            self.violations(),
        )
    }

    fn violations(&self) -> Vec<Violation> {
        match self {
            ApiError::Rejected(Rejection::Schema { violations, .. }) => violations.clone(),
            ApiError::Rejected(Rejection::Nul { path }) => vec![Violation {
                path: path.clone(),
                message: "NUL (U+0000) is not allowed in a string or a field name".to_owned(),
            }],
            _ => Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(error) = &self {
            tracing::error!(error = %crate::error_chain(error), "event store failed");
        }
        crate::problem::respond(
            self.status(),
            self.reason(),
            self.to_string(),
            self.violations(),
        )
    }
}
