//! The Event Receiver (DESIGN §4): the command side of one Entity. It validates submissions
//! against the Entity's schema, appends an event only when a submission carries new
//! information, and never loses an update when writers race.

pub mod http;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod problem;
pub mod submit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use process::Health;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::TokensError;
use crate::config::{ConfigError, Resources, name_of};
use crate::store::jetstream::{StoreError, ensure_stream};
use metrics::Metrics;
use model::{EntityModel, SchemaError};
use submit::Receiver;

/// Flags of `dreampipe receiver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML files or folders holding the Entity (the operator mounts its ConfigMap here).
    #[arg(long, env = "DREAMPIPE_CONFIG", value_delimiter = ',', required = true)]
    pub config: Vec<PathBuf>,
    /// Which Entity to serve, when the configuration holds several.
    #[arg(long, env = "DREAMPIPE_ENTITY")]
    pub entity: Option<String>,
    /// Namespace of resources that do not name one.
    #[arg(long, env = "DREAMPIPE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Address of the API and of /healthz, /readyz and /metrics.
    #[arg(long, env = "DREAMPIPE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub auth: crate::auth::TokenArgs,
}

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration has no Entity{}", .0.as_deref().map(|n| format!(" named {n:?}")).unwrap_or_default())]
    NoEntity(Option<String>),
    #[error("the configuration has several Entities ({0}); choose one with --entity")]
    SeveralEntities(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Runs the receiver until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), ReceiverError> {
    let Args {
        config,
        entity,
        namespace,
        nats_url,
        listen,
        auth,
    } = args;
    let resources = Resources::load(&config, &namespace)?;
    let entity = match (entity, resources.entities.as_slice()) {
        (Some(wanted), entities) => entities
            .iter()
            .find(|e| name_of(&e.metadata) == wanted)
            .ok_or(ReceiverError::NoEntity(Some(wanted)))?,
        (None, [one]) => one,
        (None, []) => return Err(ReceiverError::NoEntity(None)),
        (None, many) => {
            let names: Vec<&str> = many.iter().map(|e| name_of(&e.metadata)).collect();
            return Err(ReceiverError::SeveralEntities(names.join(", ")));
        }
    };
    let model = EntityModel::new(entity)?;
    let tokens = auth.load()?;
    if tokens.is_open() {
        tracing::warn!("no bearer tokens configured: the receiver accepts submissions from anyone");
    }

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let health = Health::new(registry);
    let api: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let app = process::probe_routes(health.clone())
        .method_not_allowed_fallback(crate::problem::method_not_allowed)
        .fallback({
            let api = api.clone();
            move |request: Request| async move {
                match api.get() {
                    Some(router) => router.clone().oneshot(request).await.into_response(),
                    None => problem::ApiError::Starting.into_response(),
                }
            }
        });
    let listener = process::bind(listen).await.map_err(ReceiverError::Serve)?;
    let server = tokio::spawn(process::serve(listener, app, shutdown.clone()));

    let names = model.names().clone();
    tracing::info!(entity = names.entity(), stream = %names.stream(), nats = %nats_url, "receiver starting");
    let Some(client) = connect_and_ensure(&nats_url, entity, &names, &shutdown).await? else {
        return finish(server).await;
    };
    let receiver = Receiver::open(&client, model, metrics).await?;
    let _ = api.set(http::routes(Arc::new(receiver), tokens));
    health.set_ready(true);
    tracing::info!("receiver ready");

    let result = finish(server).await;
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "could not flush NATS on shutdown");
    }
    result
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), ReceiverError> {
    match server.await {
        Ok(result) => result.map_err(ReceiverError::Serve),
        Err(join) => Err(ReceiverError::Serve(std::io::Error::other(join))),
    }
}

/// Connects to NATS and ensures the stream, retrying with backoff while the server is away.
/// A server that is too old is a hard error. Returns `None` if shut down first.
async fn connect_and_ensure(
    url: &str,
    entity: &crds::Entity,
    names: &crate::store::StreamNames,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, ReceiverError> {
    let mut backoff = process::Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        let attempt = async {
            let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
            match ensure_stream(&client, names, &entity.spec.stream).await {
                Ok(_) => Ok(Ok(client)),
                Err(error @ (StoreError::ServerTooOld { .. } | StoreError::Setting { .. })) => {
                    Ok(Err(error))
                }
                Err(error) => Err(crate::error_chain(&error)),
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            result = attempt => match result {
                Ok(Ok(client)) => return Ok(Some(client)),
                Ok(Err(fatal)) => return Err(fatal.into()),
                Err(error) => tracing::warn!(%error, retry_in = ?backoff.delay(), "cannot ensure the stream yet"),
            },
        }
        if !backoff.wait(shutdown).await {
            return Ok(None);
        }
    }
}
