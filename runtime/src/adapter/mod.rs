//! The adapter (DESIGN §2 Adapter): reads records from one source, maps them with CEL onto an
//! Entity and submits them in batches to the Entity's receiver. It keeps its progress (the
//! http source's cursor) in NATS KV, so a restart carries on where it stopped.

pub mod cursor;
pub mod mapping;
pub mod source;
pub mod status;
pub mod submit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use crds::Adapter as AdapterResource;
use process::Health;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, PickError, Resources, name_of, namespace_of, pick};
use crate::role::{ResourceArgs, ServiceArgs};
use mapping::{Mapping, MappingError};
use source::{AnySource, BoxError, Feed, Setup, SetupError};
use status::Stats;
use submit::{SubmitError, Submitter};

/// Flags of `dreampipe adapter`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// The config (the Adapter and its Entity), namespace, NATS (the durable cursor's KV
    /// bucket, and the `nats` source's default) and the address of /healthz, /readyz,
    /// /metrics, /v1/status and the webhook.
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// Which Adapter to run, when the configuration holds several.
    #[arg(long, env = "DREAMPIPE_ADAPTER")]
    pub adapter: Option<String>,
    /// Base URL of the Entity's receiver, e.g. `http://customer-receiver:8080`.
    #[arg(long, env = "DREAMPIPE_RECEIVER_URL")]
    pub receiver_url: String,
    /// File holding the bearer token the receiver accepts (a mounted Secret).
    #[arg(long, env = "DREAMPIPE_RECEIVER_TOKEN_FILE")]
    pub receiver_token_file: Option<PathBuf>,
    /// Folder of mounted Secrets: a reference `{name, key}` is the file `<dir>/<name>/<key>`.
    #[arg(
        long,
        env = "DREAMPIPE_SECRETS_DIR",
        default_value = "/var/run/secrets/dreampipe"
    )]
    pub secrets_dir: PathBuf,
}

/// Why the adapter could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error("the configuration has no Entity {entity:?} in namespace {namespace:?}")]
    NoEntity { entity: String, namespace: String },
    #[error("the Adapter's mapping cannot be used")]
    Mapping(#[source] MappingError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("the {kind} source failed")]
    Source {
        kind: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Where a configured adapter finds the rest of DreamPipe, and where it listens.
#[derive(Debug, Clone)]
pub struct Connections {
    /// Base URL of the Entity's receiver.
    pub receiver_url: String,
    /// Bearer token the receiver accepts.
    pub receiver_token: Option<String>,
    /// NATS servers (the cursor's KV bucket; the `nats` source's default).
    pub nats_url: crate::nats::NatsServers,
    /// Folder of mounted Secrets: `<dir>/<name>/<key>`.
    pub secrets_dir: PathBuf,
    /// Address of the probes, the status and the webhook.
    pub listen: SocketAddr,
}

/// A configured adapter, ready to run: its source, and the feed the source's records go to.
#[derive(Debug)]
pub struct Adapter {
    name: String,
    namespace: String,
    entity: String,
    source: Box<dyn AnySource>,
    feed: Arc<Feed>,
    stats: Arc<Stats>,
    health: Arc<Health>,
    listen: SocketAddr,
    /// Where heartbeats go (ADR 80), and the spec they carry.
    nats_url: crate::nats::NatsServers,
    spec: Box<crds::AdapterSpec>,
}

/// Runs the adapter until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), AdapterError> {
    Adapter::prepare(args)?.run(shutdown).await
}

impl Adapter {
    /// Loads the configuration and checks everything that can be checked before running:
    /// the Adapter, its Entity, the mapping against the Entity's key, durations and secrets.
    pub fn prepare(args: Args) -> Result<Self, AdapterError> {
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
            adapter,
            receiver_url,
            receiver_token_file,
            secrets_dir,
        } = args;
        let resources = Resources::load(&config, &namespace)?;
        let resource: &AdapterResource = pick(&resources.adapters, adapter.as_deref())?;
        let namespace = namespace_of(&resource.metadata);
        let entity = resources
            .entity(namespace, &resource.spec.entity)
            .ok_or_else(|| AdapterError::NoEntity {
                entity: resource.spec.entity.clone(),
                namespace: namespace.to_owned(),
            })?;
        let receiver_token = receiver_token_file
            .as_deref()
            .map(source::read_secret_file)
            .transpose()?;
        Adapter::new(
            resource,
            entity,
            Connections {
                receiver_url,
                receiver_token,
                nats_url,
                secrets_dir,
                listen,
            },
        )
    }

    /// An adapter for `resource` feeding `entity` (both already loaded and validated), for
    /// callers that run several roles in one process.
    pub fn new(
        resource: &AdapterResource,
        entity: &crds::Entity,
        connections: Connections,
    ) -> Result<Self, AdapterError> {
        let Connections {
            receiver_url,
            receiver_token,
            nats_url,
            secrets_dir,
            listen,
        } = connections;
        let name = name_of(&resource.metadata).to_owned();
        let namespace = namespace_of(&resource.metadata).to_owned();
        let spec = &resource.spec;
        let mapping = Mapping::new(spec, &entity.spec.key).map_err(AdapterError::Mapping)?;
        let interval = source::duration("spec.interval", &spec.interval)?;
        let mut registry = Registry::default();
        let stats = Arc::new(Stats::register(&mut registry));
        let client = submit::http_client();
        let submitter = Submitter::new(
            client.clone(),
            &receiver_url,
            &spec.entity,
            receiver_token,
            &name,
            spec.batch_size,
            stats.clone(),
        )?;
        let source = source::build(&Setup {
            adapter: &name,
            namespace: &namespace,
            spec,
            interval,
            nats_url: &nats_url,
            secrets_dir: &secrets_dir,
            client: &client,
        })?;
        Ok(Adapter {
            name,
            namespace,
            entity: spec.entity.clone(),
            source,
            feed: Arc::new(Feed::new(mapping, submitter, stats.clone())),
            stats,
            health: Health::new(registry),
            listen,
            nats_url,
            spec: Box::new(spec.clone()),
        })
    }

    /// The adapter's figures, as `/v1/status` shows them.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves the probes and the status, and runs the source until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdapterError> {
        let stop = shutdown.child_token();
        let mut app = process::probe_routes(self.health.clone()).merge(
            Router::new()
                .route("/v1/status", get(status))
                .with_state(self.stats.clone()),
        );
        if let Some(routes) = self.source.routes(&self.feed, &stop) {
            app = app.merge(routes);
        }
        let listener = process::bind(self.listen)
            .await
            .map_err(AdapterError::Serve)?;
        let server = tokio::spawn(process::serve(listener, app, stop.clone()));
        tracing::info!(adapter = %self.name, namespace = %self.namespace, entity = %self.entity, source = self.source.kind(), "adapter starting");
        let beats = self.heartbeats(&stop).await;

        let result = self
            .source
            .run(&self.feed, &self.health, &stop)
            .await
            .map_err(|source| AdapterError::Source {
                kind: self.source.kind(),
                source,
            });
        if let Err(error) = &result {
            tracing::error!(error = %crate::error_chain(error), "the source stopped");
        }
        stop.cancel();
        if let Some(beats) = beats {
            beats.abort();
        }
        let served = match server.await {
            Ok(result) => result.map_err(AdapterError::Serve),
            Err(join) => Err(AdapterError::Serve(std::io::Error::other(join))),
        };
        result.and(served)
    }
}

impl Adapter {
    /// Heartbeats for the console; an adapter whose NATS URL is unusable runs without them.
    async fn heartbeats(&self, stop: &CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let client = match crate::nats::connect(&self.nats_url).await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "no heartbeats: NATS unusable");
                return None;
            }
        };
        let beacon = crate::heartbeat::Beacon::new(
            self.namespace.clone(),
            self.name.clone(),
            crate::heartbeat::default_replica(),
        );
        let (stats, spec) = (self.stats.clone(), self.spec.clone());
        Some(crate::heartbeat::spawn(
            client,
            beacon,
            self.health.clone(),
            stop.clone(),
            move || {
                let heartbeat = crds::report::RoleHeartbeat::Adapter {
                    spec: spec.clone(),
                    report: stats.status(),
                };
                async move { heartbeat }
            },
        ))
    }
}

async fn status(State(stats): State<Arc<Stats>>) -> axum::Json<status::AdapterReport> {
    axum::Json(stats.status())
}
