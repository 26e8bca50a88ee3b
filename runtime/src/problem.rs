//! Errors as HTTP answers: RFC 9457 `application/problem+json`, shared by every API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One failing path of a rejected document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// JSON pointer into the submitted document (`""` for the whole document).
    pub path: String,
    pub message: String,
}

/// A problem document (RFC 9457).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The failing paths, when a document was rejected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Violation>,
}

impl Problem {
    /// A problem of `status`; `reason` is a short snake_case name that becomes its type.
    pub fn new(status: StatusCode, reason: &str, detail: String, errors: Vec<Violation>) -> Self {
        Problem {
            type_: format!("https://dreampipe.io/problems/{}", reason.replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

/// The HTTP answer for a problem, with the problem+json media type, `WWW-Authenticate` on a
/// 401 and `Retry-After` on a 503.
pub fn respond(
    status: StatusCode,
    reason: &str,
    detail: String,
    errors: Vec<Violation>,
) -> Response {
    let mut response = (
        status,
        axum::Json(Problem::new(status, reason, detail, errors)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
