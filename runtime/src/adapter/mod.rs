//! The adapter (DESIGN §2 Adapter): reads records from one source, maps them with CEL onto an
//! Entity and submits them in batches to the Entity's receiver. It keeps its progress (the
//! http source's cursor) in NATS KV, so a restart carries on where it stopped.

pub mod cursor;
pub mod mapping;
pub mod source;
pub mod status;
pub mod submit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use crds::Adapter as AdapterResource;
use crds::adapter::{AdapterSpec, SourceKind};
use crds::common::SecretKeyRef;
use process::Health;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::auth::{Tokens, TokensError};
use crate::config::{ConfigError, Resources, name_of, namespace_of};
use cursor::{CursorError, CursorStore};
use mapping::{Mapping, MappingError};
use source::file::FileError;
use status::Stats;
use submit::{HttpClient, SubmitError, Submitter};

/// Flags of `dreampipe adapter`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML files or folders holding the Adapter and its Entity (the operator mounts them here).
    #[arg(long, env = "DREAMPIPE_CONFIG", value_delimiter = ',', required = true)]
    pub config: Vec<PathBuf>,
    /// Which Adapter to run, when the configuration holds several.
    #[arg(long, env = "DREAMPIPE_ADAPTER")]
    pub adapter: Option<String>,
    /// Namespace of resources that do not name one.
    #[arg(long, env = "DREAMPIPE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Base URL of the Entity's receiver, e.g. `http://customer-receiver:8080`.
    #[arg(long, env = "DREAMPIPE_RECEIVER_URL")]
    pub receiver_url: String,
    /// File holding the bearer token the receiver accepts (a mounted Secret).
    #[arg(long, env = "DREAMPIPE_RECEIVER_TOKEN_FILE")]
    pub receiver_token_file: Option<PathBuf>,
    /// NATS server URL: the durable cursor's KV bucket, and the `nats` source's default.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Folder of mounted Secrets: a reference `{name, key}` is the file `<dir>/<name>/<key>`.
    #[arg(
        long,
        env = "DREAMPIPE_SECRETS_DIR",
        default_value = "/var/run/secrets/dreampipe"
    )]
    pub secrets_dir: PathBuf,
    /// Address of /healthz, /readyz, /metrics, /v1/status and the webhook.
    #[arg(long, env = "DREAMPIPE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

/// Why the adapter could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration has no Adapter{}", .0.as_deref().map(|n| format!(" named {n:?}")).unwrap_or_default())]
    NoAdapter(Option<String>),
    #[error("the configuration has several Adapters ({0}); choose one with --adapter")]
    SeveralAdapters(String),
    #[error("Adapter {0:?} sets no source")]
    NoSource(String),
    #[error("the configuration has no Entity {entity:?} in namespace {namespace:?}")]
    NoEntity { entity: String, namespace: String },
    #[error("the Adapter's mapping cannot be used")]
    Mapping(#[source] MappingError),
    #[error("{field} {value:?} is not a duration")]
    Duration {
        field: &'static str,
        value: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("cannot read the secret file {path}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("cannot connect to NATS at {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject:?}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    File(#[from] FileError),
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
    /// NATS server URL (the cursor's KV bucket; the `nats` source's default).
    pub nats_url: String,
    /// Folder of mounted Secrets: `<dir>/<name>/<key>`.
    pub secrets_dir: PathBuf,
    /// Address of the probes, the status and the webhook.
    pub listen: SocketAddr,
}

/// A configured adapter, ready to run.
#[derive(Debug)]
pub struct Adapter {
    name: String,
    namespace: String,
    spec: AdapterSpec,
    mapping: Arc<Mapping>,
    submitter: Submitter,
    client: HttpClient,
    stats: Arc<Stats>,
    health: Arc<Health>,
    interval: Duration,
    nats_url: String,
    secrets_dir: PathBuf,
    listen: SocketAddr,
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
            config,
            adapter,
            namespace,
            receiver_url,
            receiver_token_file,
            nats_url,
            secrets_dir,
            listen,
        } = args;
        let resources = Resources::load(&config, &namespace)?;
        let resource: &AdapterResource = match (adapter, resources.adapters.as_slice()) {
            (Some(wanted), adapters) => adapters
                .iter()
                .find(|a| name_of(&a.metadata) == wanted)
                .ok_or(AdapterError::NoAdapter(Some(wanted)))?,
            (None, [one]) => one,
            (None, []) => return Err(AdapterError::NoAdapter(None)),
            (None, many) => {
                let names: Vec<&str> = many.iter().map(|a| name_of(&a.metadata)).collect();
                return Err(AdapterError::SeveralAdapters(names.join(", ")));
            }
        };
        let namespace = namespace_of(&resource.metadata);
        let entity = resources
            .entity(namespace, &resource.spec.entity)
            .ok_or_else(|| AdapterError::NoEntity {
                entity: resource.spec.entity.clone(),
                namespace: namespace.to_owned(),
            })?;
        let receiver_token = receiver_token_file
            .as_deref()
            .map(read_secret_file)
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
        let spec = resource.spec.clone();
        let mapping = Mapping::new(&spec, &entity.spec.key).map_err(AdapterError::Mapping)?;
        let interval = duration("spec.interval", &spec.interval)?;
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
        Ok(Adapter {
            name,
            namespace,
            spec,
            mapping: Arc::new(mapping),
            submitter,
            client,
            stats,
            health: Health::new(registry),
            interval,
            nats_url,
            secrets_dir,
            listen,
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
        if let Some(webhook) = &self.spec.source.webhook {
            let tokens = match &webhook.auth {
                Some(auth) => Tokens::load(Some(&self.secret_path(&auth.secret_ref)), None)?,
                None => {
                    tracing::warn!("the webhook has no auth: it accepts records from anyone");
                    Tokens::default()
                }
            };
            let webhook = Arc::new(source::webhook::Webhook {
                mapping: self.mapping.clone(),
                submitter: self.submitter.clone(),
                stats: self.stats.clone(),
                shutdown: stop.clone(),
            });
            app = app.merge(source::webhook::routes(webhook, tokens));
        }
        let listener = process::bind(self.listen)
            .await
            .map_err(AdapterError::Serve)?;
        let server = tokio::spawn(process::serve(listener, app, stop.clone()));
        tracing::info!(adapter = %self.name, namespace = %self.namespace, entity = %self.spec.entity, "adapter starting");

        let result = self.run_source(&stop).await;
        if let Err(error) = &result {
            tracing::error!(error = %crate::error_chain(error), "the source stopped");
        }
        stop.cancel();
        let served = match server.await {
            Ok(result) => result.map_err(AdapterError::Serve),
            Err(join) => Err(AdapterError::Serve(std::io::Error::other(join))),
        };
        result.and(served)
    }

    async fn run_source(&self, shutdown: &CancellationToken) -> Result<(), AdapterError> {
        let (mapping, submitter, stats) = (&*self.mapping, &self.submitter, &*self.stats);
        let kinds = self.spec.source.kinds();
        let Some(kind) = kinds.first() else {
            return Err(AdapterError::NoSource(self.name.clone()));
        };
        match kind {
            SourceKind::Http(http) => {
                let client = self.connect(&self.nats_url).await?;
                let cursors = CursorStore::open(&client, &self.namespace, &self.name).await?;
                let poller = source::http::HttpPoller {
                    source: (*http).clone(),
                    client: self.client.clone(),
                    token: http
                        .token_secret_ref
                        .as_ref()
                        .map(|r| read_secret_file(&self.secret_path(r)))
                        .transpose()?,
                    interval: self.interval,
                    resync_interval: http
                        .resync_interval
                        .as_deref()
                        .map(|text| duration("spec.source.http.resyncInterval", text))
                        .transpose()?,
                    cursors,
                };
                self.health.set_ready(true);
                poller.run(mapping, submitter, stats, shutdown).await?;
            }
            SourceKind::Generator(generator) => {
                self.health.set_ready(true);
                source::generator::run(
                    generator,
                    self.spec.batch_size,
                    mapping,
                    submitter,
                    stats,
                    shutdown,
                )
                .await
                .or_else(ignore_shutdown)?;
            }
            SourceKind::File(file) => {
                self.health.set_ready(true);
                let records = source::file::read(Path::new(&file.path), file.format).await?;
                let mut good = Vec::with_capacity(records.len());
                for record in records {
                    match record {
                        Ok(record) => good.push(record),
                        Err(error) => {
                            let message = crate::error_chain(&error);
                            tracing::warn!(error = %message, "record rejected");
                            stats.read(1);
                            stats.rejected(1, message);
                        }
                    }
                }
                let items = source::map_records(good.iter(), mapping, stats);
                submitter
                    .submit(&items, shutdown)
                    .await
                    .or_else(ignore_shutdown)?;
                stats.synced();
                tracing::info!(path = %file.path, records = good.len(), "file read; idle until shut down");
                shutdown.cancelled().await;
            }
            SourceKind::Webhook(_) => {
                self.health.set_ready(true);
                shutdown.cancelled().await;
            }
            SourceKind::Nats(nats) => {
                let client = self
                    .connect(nats.url.as_deref().unwrap_or(&self.nats_url))
                    .await?;
                let subject = nats.subject.clone();
                let subscribed = match &nats.queue_group {
                    Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
                    None => client.subscribe(subject.clone()).await,
                };
                let subscriber =
                    subscribed.map_err(|source| AdapterError::Subscribe { subject, source })?;
                self.health.set_ready(true);
                source::nats::run(
                    subscriber,
                    self.spec.batch_size,
                    mapping,
                    submitter,
                    stats,
                    shutdown,
                )
                .await
                .or_else(ignore_shutdown)?;
            }
        }
        Ok(())
    }

    async fn connect(&self, url: &str) -> Result<async_nats::Client, AdapterError> {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|source| AdapterError::Nats {
                url: url.to_owned(),
                source,
            })
    }

    fn secret_path(&self, reference: &SecretKeyRef) -> PathBuf {
        self.secrets_dir.join(&reference.name).join(&reference.key)
    }
}

/// A submission cut short by shutdown is not an error.
fn ignore_shutdown(error: SubmitError) -> Result<(), SubmitError> {
    match error {
        SubmitError::ShutDown => Ok(()),
        other => Err(other),
    }
}

fn duration(field: &'static str, text: &str) -> Result<Duration, AdapterError> {
    crds::validate::parse_duration(text).map_err(|source| AdapterError::Duration {
        field,
        value: text.to_owned(),
        source,
    })
}

/// A token from a mounted Secret file: its first non-blank line, trimmed.
fn read_secret_file(path: &Path) -> Result<String, AdapterError> {
    let text = std::fs::read_to_string(path).map_err(|source| AdapterError::Secret {
        path: path.display().to_string(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
        .to_owned())
}

async fn status(State(stats): State<Arc<Stats>>) -> axum::Json<status::Status> {
    axum::Json(stats.status())
}
