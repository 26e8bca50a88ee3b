//! The query API and its OpenAPI document, generated from these handlers.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use super::QueryError;
use super::entities::{AsOf, Entities, History, State as KeyState, truncate};
use super::views::{ViewPage, Views};
use crate::auth::{Tokens, require_token};

/// Largest page a client may ask for.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// What the query handlers read from.
#[derive(Debug)]
pub struct Readers {
    pub entities: Entities,
    pub views: Option<Views>,
}

/// The query routes over `readers`, guarded by `tokens`; `/openapi.json` is open.
pub fn routes(readers: Arc<Readers>, tokens: Tokens) -> Router {
    Router::new()
        .route("/v1/entities/{entity}/{key}", get(current))
        .route("/v1/entities/{entity}/{key}/history", get(history))
        .route("/v1/views/{view}", get(view))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokens),
            require_token,
        ))
        .route("/openapi.json", get(openapi))
        .with_state(readers)
}

/// The OpenAPI document of the query service.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DreamPipe Event Query Service",
        description = "Entity states and history from the event store; projected views from Postgres."
    ),
    paths(current, history, view, openapi),
    components(schemas(KeyState, History, ViewPage, crate::problem::Problem))
)]
#[derive(Debug)]
pub struct ApiDoc;

type Params = Query<Vec<(String, String)>>;

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
        ("entity" = String, Path, description = "Entity name"),
        ("key" = String, Path, description = "Key of the object"),
        ("asOf" = Option<String>, Query, description = "A version number or an RFC 3339 time: the state at that point"),
    ),
    responses(
        (status = 200, description = "The state", body = KeyState),
        (status = 400, description = "Bad key or asOf", body = crate::problem::Problem),
        (status = 404, description = "Unknown entity, or no such key (at that point)", body = crate::problem::Problem),
    )
)]
async fn current(
    State(readers): State<Arc<Readers>>,
    Path((entity, key)): Path<(String, String)>,
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
        ("entity" = String, Path, description = "Entity name"),
        ("key" = String, Path, description = "Key of the object"),
        ("fromVersion" = Option<u64>, Query, description = "First version of the page (default 1)"),
        ("limit" = Option<usize>, Query, description = "Events per page, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of events", body = History),
        (status = 400, description = "Bad paging", body = crate::problem::Problem),
        (status = 404, description = "Unknown entity or key", body = crate::problem::Problem),
    )
)]
async fn history(
    State(readers): State<Arc<Readers>>,
    Path((entity, key)): Path<(String, String)>,
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

/// A page of a view's rows; any other query parameter is an equality filter on a column.
#[utoipa::path(
    get,
    path = "/v1/views/{view}",
    params(
        ("view" = String, Path, description = "Stable view name"),
        ("limit" = Option<usize>, Query, description = "Rows per page, 1 to 1000 (default 100)"),
        ("pageToken" = Option<String>, Query, description = "From the previous page's nextPageToken"),
    ),
    responses(
        (status = 200, description = "A page of rows", body = ViewPage),
        (status = 400, description = "Unknown column, bad filter or paging", body = crate::problem::Problem),
        (status = 404, description = "Unknown view", body = crate::problem::Problem),
    )
)]
async fn view(
    State(readers): State<Arc<Readers>>,
    Path(view): Path<String>,
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI document")))]
async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
