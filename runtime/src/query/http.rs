//! The query API and its OpenAPI document, generated from these handlers.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use super::QueryError;
use super::deadletters::DeadLetters;
use super::entities::{AsOf, History, State as KeyState, truncate};
use super::namespaces::{NamespaceReaders, Readers};
use super::views::ViewPage;
use crate::auth::{Admission, ScopedTokens};
use crate::problem::{Path, Problem, Query};
use crate::projector::database::{
    DeadLetterFilter, DeadLetterPage, DeadLetterRecord, DeadLetterSummary,
};

/// Largest page a client may ask for.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// Where the namespaced copy of every path starts (ADR 63).
const NAMESPACED: &str = "/v1/namespaces/{namespace}";

/// The query routes over `readers`, guarded by `tokens`; `/openapi.json` is open. Each path
/// is served twice: under `/v1/namespaces/{namespace}` for any namespace served here, and
/// under `/v1` for the service's own namespace.
pub fn routes(readers: Arc<Readers>, tokens: ScopedTokens) -> Router {
    let api = || {
        Router::new()
            .route("/entities/{entity}/{key}", get(current))
            .route("/entities/{entity}/{key}/history", get(history))
            .route("/views/{view}", get(view))
            .route(
                "/projections/{projection}/deadletters",
                get(dead_letter_page),
            )
            .route(
                "/projections/{projection}/deadletters/{id}",
                get(dead_letter),
            )
            .route("/pipeline", get(pipeline))
    };
    let guard = Arc::new(Guard {
        tokens,
        own: readers.own_namespace().to_owned(),
    });
    Router::new()
        .nest(NAMESPACED, api())
        .nest("/v1", api())
        .route_layer(axum::middleware::from_fn_with_state(guard, require_scope))
        .route("/openapi.json", get(openapi))
        .fallback(crate::problem::no_route)
        .method_not_allowed_fallback(crate::problem::method_not_allowed)
        .with_state(readers)
}

/// The tokens, and the namespace of paths that name none.
#[derive(Debug)]
struct Guard {
    tokens: ScopedTokens,
    own: String,
}

/// The namespace a request's path names, or `own` for the paths without one.
fn namespace_of<'a>(params: &'a axum::extract::RawPathParams, own: &'a str) -> &'a str {
    params
        .iter()
        .find(|(name, _)| *name == "namespace")
        .map_or(own, |(_, value)| value)
}

/// Middleware: 401 without a known token, 403 with a token scoped to other namespaces.
async fn require_scope(
    State(guard): State<Arc<Guard>>,
    params: Result<axum::extract::RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A path that does not decode names no namespace a scoped token may read; its handler
    // answers 400 once a token for every namespace let it through.
    let namespace = match &params {
        Ok(params) => namespace_of(params, &guard.own),
        Err(_) => "",
    };
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match guard.tokens.admit(authorization, namespace) {
        Admission::Admitted => next.run(request).await,
        Admission::Unauthorized => crate::problem::respond(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required".to_owned(),
            Vec::new(),
        ),
        Admission::Forbidden => crate::problem::respond(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token may not read namespace {:?}",
                truncate(namespace)
            ),
            Vec::new(),
        ),
    }
}

/// The readers of the namespace a request's path names (or of the service's own).
struct Namespace(Arc<NamespaceReaders>);

impl axum::extract::FromRequestParts<Arc<Readers>> for Namespace {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        readers: &Arc<Readers>,
    ) -> Result<Self, Response> {
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, readers)
                .await?;
        let namespace = params
            .get("namespace")
            .map_or(readers.own_namespace(), String::as_str);
        readers
            .of(namespace)
            .map(Namespace)
            .map_err(IntoResponse::into_response)
    }
}

/// `{entity}/{key}` of a path.
#[derive(serde::Deserialize)]
struct KeyPath {
    entity: String,
    key: String,
}

/// `{view}` of a path.
#[derive(serde::Deserialize)]
struct ViewPath {
    view: String,
}

/// `{projection}` of a path.
#[derive(serde::Deserialize)]
struct ProjectionPath {
    projection: String,
}

/// `{projection}/deadletters/{id}` of a path.
#[derive(serde::Deserialize)]
struct DeadLetterPath {
    projection: String,
    id: String,
}

/// The OpenAPI document of the query service.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DreamPipe Event Query Service",
        description = "Entity states and history from the event store; projected views from Postgres; the dead letters of Projections."
    ),
    paths(current, history, view, dead_letter_page, dead_letter, pipeline, openapi),
    modifiers(&InEveryNamespace),
    components(schemas(
        KeyState,
        History,
        ViewPage,
        crate::console::pipeline::PipelineView,
        DeadLetterPage,
        DeadLetterSummary,
        DeadLetterRecord,
        Problem,
        crate::problem::Violation
    ))
)]
#[derive(Debug)]
pub struct ApiDoc;

type Params = Query<Vec<(String, String)>>;

/// What the documents say of a key; the byte bound is what JSON Schema cannot say exactly.
pub const KEY_DESCRIPTION: &str =
    "Key of the object: 1 to 512 bytes of UTF-8 without control characters";
/// Keys hold no control characters (Unicode category Cc), as `Key::new` checks.
pub const KEY_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]+$";

/// `asOf`: a version (1 to 2^64-1) or an RFC 3339 time.
#[derive(Debug)]
pub struct AsOfParam;

impl utoipa::PartialSchema for AsOfParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .item(<VersionParam as utoipa::PartialSchema>::schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .into()
    }
}

impl utoipa::ToSchema for AsOfParam {}

/// A version number: 1 to 2^64-1, as the service reads it.
#[derive(Debug)]
pub struct VersionParam;

impl utoipa::PartialSchema for VersionParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(utoipa::Number::UInt(u64::MAX as usize)))
            .into()
    }
}

impl utoipa::ToSchema for VersionParam {}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn page_size(params: &[(String, String)]) -> Result<usize, QueryError> {
    match param(params, "limit") {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(size) if (1..=MAX_PAGE).contains(&size) => Ok(size),
            _ => Err(QueryError::BadRequest(format!(
                "limit must be a number from 1 to {MAX_PAGE}, not {:?}",
                truncate(text)
            ))),
        },
    }
}

fn respond<T: serde::Serialize>(result: Result<T, QueryError>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The current state of a key, or its state as of a version or time.
#[utoipa::path(
    get,
    path = "/v1/entities/{entity}/{key}",
    params(
        ("entity" = String, Path, description = "Entity name (a DNS label)", pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", example = "customer"),
        ("key" = String, Path, description = "Key of the object: 1 to 512 bytes of UTF-8 without control characters", min_length = 1, max_length = 512, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "c1"),
        ("asOf" = inline(Option<AsOfParam>), Query, description = "A version number (1 or more) or an RFC 3339 time: the state at that point"),
    ),
    responses(
        (status = 200, description = "The state", body = KeyState),
        (status = 400, description = "Bad key or asOf", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No accepted bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is scoped to other namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown entity, or no such key (at that point)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The key was erased (ADR 75)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn current(
    Namespace(readers): Namespace,
    Path(KeyPath { entity, key }): Path<KeyPath>,
    Query(params): Params,
) -> Response {
    let result = match param(&params, "asOf") {
        None => readers.entities.current(&entity, &key).await,
        Some(text) => match AsOf::parse(text) {
            Ok(as_of) => readers.entities.as_of(&entity, &key, as_of).await,
            Err(error) => Err(error),
        },
    };
    respond(result)
}

/// A key's events, paged by version.
#[utoipa::path(
    get,
    path = "/v1/entities/{entity}/{key}/history",
    params(
        ("entity" = String, Path, description = "Entity name (a DNS label)", pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", example = "customer"),
        ("key" = String, Path, description = "Key of the object: 1 to 512 bytes of UTF-8 without control characters", min_length = 1, max_length = 512, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "c1"),
        ("fromVersion" = inline(Option<VersionParam>), Query, description = "First version of the page (default 1)"),
        ("limit" = Option<usize>, Query, description = "Events per page, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page of events", body = History),
        (status = 400, description = "Bad key or paging", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No accepted bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is scoped to other namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown entity or key", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The key was erased and has no life since (ADR 75)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn history(
    Namespace(readers): Namespace,
    Path(KeyPath { entity, key }): Path<KeyPath>,
    Query(params): Params,
) -> Response {
    let result = async {
        let limit = page_size(&params)?;
        let from_version = match param(&params, "fromVersion") {
            None => 1,
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    QueryError::BadRequest(format!(
                        "fromVersion must be a version number, not {:?}",
                        truncate(text)
                    ))
                })?,
        };
        readers
            .entities
            .history(&entity, &key, from_version, limit)
            .await
    }
    .await;
    respond(result)
}

/// The namespace's pipeline as its replicas report it every few seconds (ADR 80): adapters,
/// entities and projections with their readiness, specs and figures.
#[utoipa::path(
    get,
    path = "/v1/pipeline",
    responses(
        (status = 200, description = "The replicas heard from in the last three heartbeats", body = crate::console::pipeline::PipelineView),
        (status = 401, description = "No accepted bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is scoped to other namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown namespace, or the service does not follow the pipeline", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn pipeline(
    State(readers): State<Arc<Readers>>,
    params: Result<axum::extract::RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
) -> Response {
    // `/v1/pipeline` has no path parameter at all.
    let namespace = match &params {
        Ok(params) => namespace_of(params, readers.own_namespace()),
        Err(_) => readers.own_namespace(),
    };
    respond(readers.pipeline(namespace))
}

/// A page of a view's rows; any other query parameter is an equality filter on a column.
#[utoipa::path(
    get,
    path = "/v1/views/{view}",
    params(
        ("view" = String, Path, description = "Stable view name (a SQL identifier)", pattern = "^[a-z_][a-z0-9_]{0,62}$", example = "customers"),
        ("limit" = Option<usize>, Query, description = "Rows per page, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("pageToken" = Option<String>, Query, description = "From the previous page's nextPageToken", pattern = "^[0-9]{1,18}$"),
    ),
    responses(
        (status = 200, description = "A page of rows", body = ViewPage),
        (status = 400, description = "Unknown column, bad filter or paging", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No accepted bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is scoped to other namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown view", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view database is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn view(
    Namespace(readers): Namespace,
    Path(ViewPath { view }): Path<ViewPath>,
    Query(params): Params,
) -> Response {
    let result = async {
        let Some(views) = &readers.views else {
            return Err(QueryError::UnknownView(truncate(&view)));
        };
        let limit = page_size(&params)?;
        let offset = match param(&params, "pageToken") {
            None => 0,
            Some(token) => token.parse::<u64>().map_err(|_| {
                QueryError::BadRequest(format!(
                    "pageToken {:?} is not one this service gave",
                    truncate(token)
                ))
            })?,
        };
        let filters: Vec<(String, String)> = params
            .into_iter()
            .filter(|(name, _)| name != "limit" && name != "pageToken")
            .collect();
        views.page(&view, &filters, limit, offset).await
    }
    .await;
    respond(result)
}

/// A positive id as the documents describe it: 1 to 2^63-1.
#[derive(Debug)]
pub struct IdParam;

impl utoipa::PartialSchema for IdParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(utoipa::Number::Int(i64::MAX as isize)))
            .into()
    }
}

impl utoipa::ToSchema for IdParam {}

fn dead_letters_of(readers: &NamespaceReaders) -> Result<&DeadLetters, QueryError> {
    readers.dead_letters.as_ref().ok_or_else(|| {
        QueryError::NotFound(
            "dead letters are not served here: the query service has no DEAD_LETTERS_DATABASE_URL"
                .to_owned(),
        )
    })
}

fn positive_id(name: &str, text: &str) -> Result<i64, QueryError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| {
            QueryError::BadRequest(format!(
                "{name} must be a dead letter id (1 or more), not {:?}",
                truncate(text)
            ))
        })
}

/// The dead-letter filter a request asks for.
fn dead_letter_filter(params: &[(String, String)]) -> Result<DeadLetterFilter, QueryError> {
    let generation = match param(params, "generation") {
        None => None,
        Some(g)
            if g.len() == 16
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Some(g.to_owned())
        }
        Some(g) => {
            return Err(QueryError::BadRequest(format!(
                "generation must be 16 lowercase hex digits, not {:?}",
                truncate(g)
            )));
        }
    };
    let unhandled_only = match param(params, "unhandled") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(QueryError::BadRequest(format!(
                "unhandled must be true or false, not {:?}",
                truncate(other)
            )));
        }
    };
    let after_id = match param(params, "afterId") {
        None => None,
        Some(text) => Some(positive_id("afterId", text)?),
    };
    Ok(DeadLetterFilter {
        generation,
        unhandled_only,
        after_id,
        limit: page_size(params)? as u32,
    })
}

/// A page of a Projection's dead letters (of this namespace), oldest first.
#[utoipa::path(
    get,
    path = "/v1/projections/{projection}/deadletters",
    params(
        ("projection" = String, Path, description = "Projection name (a DNS label)", pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", example = "customers"),
        ("generation" = Option<String>, Query, description = "Only this generation's dead letters", pattern = "^[0-9a-f]{16}$"),
        ("unhandled" = Option<bool>, Query, description = "Only those nobody marked handled"),
        ("afterId" = inline(Option<IdParam>), Query, description = "From the previous page's nextAfterId"),
        ("limit" = Option<usize>, Query, description = "Dead letters per page, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page of dead letters (none for a Projection that has none)", body = DeadLetterPage),
        (status = 400, description = "Bad name, filter or paging", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No accepted bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is scoped to other namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Dead letters are not served by this query service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The dead-letter database is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn dead_letter_page(
    Namespace(readers): Namespace,
    Path(ProjectionPath { projection }): Path<ProjectionPath>,
    Query(params): Params,
) -> Response {
    let result = async {
        let dead_letters = dead_letters_of(&readers)?;
        let filter = dead_letter_filter(&params)?;
        dead_letters.page(&projection, &filter).await
    }
    .await;
    respond(result)
}

/// One dead letter with its event.
#[utoipa::path(
    get,
    path = "/v1/projections/{projection}/deadletters/{id}",
    params(
        ("projection" = String, Path, description = "Projection name (a DNS label)", pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", example = "customers"),
        ("id" = inline(IdParam), Path, description = "The dead letter's id"),
    ),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterRecord),
        (status = 400, description = "Bad name or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No accepted bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is scoped to other namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter, or dead letters are not served here", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The dead-letter database is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn dead_letter(
    Namespace(readers): Namespace,
    Path(DeadLetterPath { projection, id }): Path<DeadLetterPath>,
) -> Response {
    let result = async {
        let dead_letters = dead_letters_of(&readers)?;
        let id = positive_id("id", &id)?;
        dead_letters.one(&projection, id).await
    }
    .await;
    respond(result)
}

/// Adds, for every path under `/v1`, its copy under `/v1/namespaces/{namespace}`: the same
/// operation for a namespace the path names, which may be one not served here (404).
#[derive(Debug)]
struct InEveryNamespace;

impl utoipa::Modify for InEveryNamespace {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Required, response::Response as Answer};

        let namespace = ParameterBuilder::new()
            .name("namespace")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "Kubernetes namespace of the Entity, view or Projection (a DNS label)",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))
                    .examples(["shop"]),
            ))
            .build();
        let copies: Vec<_> = openapi
            .paths
            .paths
            .iter()
            .filter_map(|(path, item)| {
                let rest = path.strip_prefix("/v1/")?;
                let mut item = item.clone();
                let operation = item.get.as_mut()?;
                operation.operation_id = operation
                    .operation_id
                    .take()
                    .map(|id| format!("{id}_in_namespace"));
                let mut parameters = vec![namespace.clone()];
                parameters.extend(operation.parameters.take().unwrap_or_default());
                operation.parameters = Some(parameters);
                if let Some(utoipa::openapi::RefOr::T(Answer { description, .. })) =
                    operation.responses.responses.get_mut("404")
                {
                    description.push_str(", or the namespace is not served here");
                }
                Some((format!("{}/{rest}", NAMESPACED), item))
            })
            .collect();
        openapi.paths.paths.extend(copies);
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI document")))]
async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
