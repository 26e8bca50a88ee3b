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

/// axum's `Path`, whose rejection is a problem: a key such as `%FF` that is not UTF-8 once
/// percent-decoded is a 400 saying so, not a plain-text answer.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::path::{ErrorKind, Path as AxumPath};
        use axum::extract::rejection::PathRejection;
        match AxumPath::<T>::from_request_parts(parts, state).await {
            Ok(AxumPath(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let detail = match error.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        format!("the {key} in the path is not UTF-8 once percent-decoded")
                    }
                    _ => format!("the path is not valid: {}", error.body_text()),
                };
                Err(respond(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    detail,
                    Vec::new(),
                ))
            }
            Err(rejection) => Err(respond(
                rejection.status(),
                "bad_path",
                rejection.body_text(),
                Vec::new(),
            )),
        }
    }
}

/// axum's `Query`, whose rejection (a query string that does not decode) is a problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(respond(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("the query string is not valid: {}", rejection.body_text()),
                Vec::new(),
            )),
        }
    }
}

/// The fallback of every API router: an unknown path is a 404 problem naming it.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    respond(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {method} {}", echo(uri.path())),
        Vec::new(),
    )
}

/// The fallback for a known path and a method it does not serve; axum adds `Allow`.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", echo(uri.path())),
        Vec::new(),
    )
}

/// At most 200 characters of a request's path, for echoing in a problem.
fn echo(path: &str) -> String {
    match path.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_owned(),
    }
}
