//! The Event Receiver (DESIGN §4): the command side of one Entity. It validates submissions
//! against the Entity's schema, appends an event only when a submission carries new
//! information, and never loses an update when writers race.

pub mod erase;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod problem;
pub mod submit;

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
use crate::config::{ConfigError, PickError, Resources, pick};
use crate::role::{ResourceArgs, ServiceArgs};
use crate::store::jetstream::{StoreError, ensure_stream};
use metrics::Metrics;
use model::{EntityModel, SchemaError};
use submit::Receiver;

/// Flags of `dreampipe receiver`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// The config (the Entity), namespace, NATS and the address of the API and of /healthz,
    /// /readyz, /metrics and /v1/status.
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// Which Entity to serve, when the configuration holds several.
    #[arg(long, env = "DREAMPIPE_ENTITY")]
    pub entity: Option<String>,
    #[command(flatten)]
    pub auth: crate::auth::TokenArgs,
}

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Erasures(#[from] erase::SubscribeError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Runs the receiver until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), ReceiverError> {
    let Args {
        resource:
            ResourceArgs {
                config,
                service:
                    ServiceArgs {
                        namespace,
                        nats_url,
                        listen,
                    },
            },
        entity,
        auth,
    } = args;
    let resources = Resources::load(&config, &namespace)?;
    let entity = pick(&resources.entities, entity.as_deref())?;
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
    let receiver = Arc::new(Receiver::open(&client, model, metrics).await?);
    let beacon = crate::heartbeat::Beacon::new(
        crate::config::namespace_of(&entity.metadata),
        names.entity(),
        crate::heartbeat::default_replica(),
    );
    let nudge = beacon.nudger();
    let beats =
        crate::heartbeat::spawn(client.clone(), beacon, health.clone(), shutdown.clone(), {
            let receiver = receiver.clone();
            let spec = Box::new(entity.spec.clone());
            move || {
                let (receiver, spec) = (receiver.clone(), spec.clone());
                async move {
                    crds::report::RoleHeartbeat::Receiver {
                        spec,
                        report: crate::heartbeat::within_beat(receiver.report()).await,
                    }
                }
            }
        });
    let erasures =
        erase::answer_erasures(receiver.clone(), client.clone(), shutdown.clone()).await?;
    let _ = api.set(http::routes(receiver, tokens));
    let dependencies = crate::reachability::Dependencies {
        nats: Some(client.clone()),
        postgres: None,
    };
    dependencies.spawn(health.clone(), shutdown.clone());
    health.set_ready(true);
    nudge();
    tracing::info!("receiver ready");

    let result = finish(server).await;
    erasures.abort();
    beats.abort();
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
    url: &crate::nats::NatsServers,
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
