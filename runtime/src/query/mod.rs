//! The Event Query Service (DESIGN §6): entity states and history read from JetStream, and
//! projected views read from Postgres through their stable names.

pub mod deadletters;
pub mod entities;
pub mod http;
pub mod namespaces;
pub mod views;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use process::Health;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::auth::{ScopedTokens, ScopedTokensError};
use crate::console::Console;
use crate::role::ServiceArgs;
use crate::store::jetstream::StoreError;
use namespaces::{Readers, ServedNamespaces};

/// Flags of `dreampipe query`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// The namespace the paths without one serve (`/v1/entities/…`), NATS, and the address of
    /// the API and of /healthz, /readyz and /metrics.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Further namespaces served at `/v1/namespaces/{namespace}/…`: a comma-separated list, or
    /// `*` for every namespace.
    #[arg(
        long = "serve-namespaces",
        env = "DREAMPIPE_QUERY_NAMESPACES",
        default_value = ""
    )]
    pub served: ServedNamespaces,
    /// Postgres URL of the views, best as the read-only role; views are not served without it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Postgres URL of a role that may read `dp_dead_letters` (not the analysts' role, which
    /// must not); `/v1/projections/{projection}/deadletters` is not served without it.
    #[arg(long, env = "DEAD_LETTERS_DATABASE_URL", hide_env_values = true)]
    pub dead_letters_database_url: Option<String>,
    /// Tokens that read every served namespace.
    #[command(flatten)]
    pub auth: crate::auth::TokenArgs,
    /// Folder of namespace-scoped tokens (a mounted Secret whose keys are namespace names):
    /// the tokens in file `<namespace>` read that namespace only.
    #[arg(long, env = "DREAMPIPE_SCOPED_TOKENS_DIR")]
    pub scoped_tokens_dir: Option<std::path::PathBuf>,
    /// Serve the pipeline console at `/console/` (ADR 80); its data is the API's, behind the
    /// same tokens.
    #[arg(
        long,
        env = "DREAMPIPE_CONSOLE",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub console: bool,
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("namespace {0:?} is not served here")]
    UnknownNamespace(String),
    #[error("no entity {0:?} in this namespace")]
    UnknownEntity(String),
    #[error("no view {0:?}")]
    UnknownView(String),
    #[error("view {view:?} has no column {column:?}")]
    UnknownColumn { view: String, column: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Erased(String),
    #[error("the event store is unavailable")]
    Store(#[from] StoreError),
    #[error("the view database is unavailable")]
    Database(#[from] sqlx::Error),
    #[error("the dead-letter database is unavailable")]
    DeadLetters(#[source] crate::projector::database::DatabaseError),
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, reason) = match &self {
            QueryError::UnknownNamespace(_) => (StatusCode::NOT_FOUND, "unknown_namespace"),
            QueryError::UnknownEntity(_) => (StatusCode::NOT_FOUND, "unknown_entity"),
            QueryError::UnknownView(_) => (StatusCode::NOT_FOUND, "unknown_view"),
            QueryError::UnknownColumn { .. } => (StatusCode::BAD_REQUEST, "unknown_column"),
            QueryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            QueryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            QueryError::Erased(_) => (StatusCode::GONE, "erased"),
            QueryError::Store(error) => {
                tracing::error!(error = %crate::error_chain(error), "event store failed");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            QueryError::Database(error) => {
                tracing::error!(error = %crate::error_chain(error), "view database failed");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            QueryError::DeadLetters(error) => {
                tracing::error!(error = %crate::error_chain(error), "dead-letter database failed");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        crate::problem::respond(status, reason, self.to_string(), Vec::new())
    }
}

/// Why the query service could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryServiceError {
    #[error(transparent)]
    Tokens(#[from] ScopedTokensError),
    #[error(transparent)]
    Nats(#[from] crate::nats::ConnectError),
    #[error("invalid DATABASE_URL")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("invalid DEAD_LETTERS_DATABASE_URL")]
    DeadLettersUrl(#[source] sqlx::Error),
    #[error("could not subscribe to the replicas' heartbeats")]
    Heartbeats(#[source] async_nats::SubscribeError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Runs the query service until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), QueryServiceError> {
    let Args {
        service:
            ServiceArgs {
                namespace,
                nats_url,
                listen,
            },
        served,
        database_url,
        dead_letters_database_url,
        auth,
        scoped_tokens_dir,
        console,
    } = args;
    let tokens = ScopedTokens::load(
        auth.load().map_err(ScopedTokensError::from)?,
        scoped_tokens_dir.as_deref(),
    )?;
    if tokens.is_open() {
        tracing::warn!("no bearer tokens configured: the query API answers anyone");
    }
    tracing::info!(
        own = %namespace,
        served = ?served,
        scoped = ?tokens.scopes().collect::<Vec<_>>(),
        "namespaces served"
    );
    let client = crate::nats::connect(&nats_url).await?;
    let (pipeline, heartbeats) = Console::listen(&client, shutdown.clone())
        .await
        .map_err(QueryServiceError::Heartbeats)?;
    let mut readers = Readers::new(client.clone(), namespace)
        .serving(served)
        .with_pipeline(pipeline);
    match &database_url {
        Some(url) => {
            let pool = views_pool(url).map_err(QueryServiceError::DatabaseUrl)?;
            readers = readers.with_views(pool);
        }
        None => tracing::warn!("no DATABASE_URL: views are not served"),
    }
    if let Some(url) = &dead_letters_database_url {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(url)
            .map_err(QueryServiceError::DeadLettersUrl)?;
        readers = readers.with_dead_letters(pool);
    }
    let readers = Arc::new(readers);
    let health = Health::new(Registry::default());
    let mut app = process::probe_routes(health.clone());
    if console {
        app = app.merge(crate::console::asset_routes());
    }
    let app = app
        .merge(http::routes(readers.clone(), tokens))
        .method_not_allowed_fallback(crate::problem::method_not_allowed);
    let listener = process::bind(listen)
        .await
        .map_err(QueryServiceError::Serve)?;
    let server = tokio::spawn(process::serve(listener, app, shutdown.clone()));
    health.set_ready(true);
    let dependencies = crate::reachability::Dependencies {
        nats: Some(client),
        postgres: readers.views_pool().cloned(),
    };
    dependencies.spawn(health, shutdown);
    let served = server.await;
    heartbeats.abort();
    match served {
        Ok(result) => result.map_err(QueryServiceError::Serve),
        Err(join) => Err(QueryServiceError::Serve(std::io::Error::other(join))),
    }
}

/// The pool views are read through, connecting when first used. Connections are not pinged
/// before each read (that doubled a view read's round trips, ADR 83); a read whose connection
/// turns out to be gone is made again on another (`Views::page`).
pub fn views_pool(url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect_lazy(url)
}
