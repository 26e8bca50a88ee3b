//! Where records come from. Every source is one file that builds itself from its part of the
//! Adapter's spec and implements [`Source`]; [`build`] is the only place that names them all.
//! A source reads records and hands them to its [`Feed`], which maps, counts and submits them.

pub mod file;
pub mod generator;
pub mod http;
pub mod jetstream;
pub mod nats;
pub mod oauth;
pub mod pgoutput;
pub mod postgres;
pub mod signature;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use crds::adapter::{AdapterSpec, SourceKind};
use crds::common::SecretKeyRef;
use futures::future::BoxFuture;
use process::Health;
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use super::mapping::{Item, Mapping};
use super::status::Stats;
use super::submit::{HttpClient, SubmitError, Submitter};
use crate::auth::TokensError;
use crate::nats::{BadNatsUrl, NatsServers};

/// A source's failure as the adapter holds it: typed in the source's file, boxed here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A place records come from; what each source file implements.
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    /// The source's name in the spec (`http`, `file`, …), for logs and errors.
    const KIND: &'static str;
    /// Why the source stopped.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Routes the source serves on the adapter's listener, beside the probes and the status.
    fn routes(&self, _feed: &Arc<Feed>, _shutdown: &CancellationToken) -> Option<Router> {
        None
    }

    /// Reads records into `feed` until `shutdown` (or until the source has no more and the
    /// adapter idles). `health` is set ready once the source can read.
    fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A [`Source`] behind a pointer: the adapter holds whichever one the spec names.
pub trait AnySource: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &'static str;
    fn routes(&self, feed: &Arc<Feed>, shutdown: &CancellationToken) -> Option<Router>;
    fn run<'a>(
        &'a self,
        feed: &'a Feed,
        health: &'a Health,
        shutdown: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

impl<S: Source> AnySource for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }

    fn routes(&self, feed: &Arc<Feed>, shutdown: &CancellationToken) -> Option<Router> {
        Source::routes(self, feed, shutdown)
    }

    fn run<'a>(
        &'a self,
        feed: &'a Feed,
        health: &'a Health,
        shutdown: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { Ok(Source::run(self, feed, health, shutdown).await?) })
    }
}

/// What a source may use to build itself: the Adapter's spec and where the rest is.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The Adapter's name.
    pub adapter: &'a str,
    /// The Adapter's namespace.
    pub namespace: &'a str,
    pub spec: &'a AdapterSpec,
    /// `spec.interval`, parsed.
    pub interval: Duration,
    /// NATS servers (the cursor's KV bucket; the `nats` source's default).
    pub nats_url: &'a NatsServers,
    /// Folder of mounted Secrets: `<dir>/<name>/<key>`.
    pub secrets_dir: &'a Path,
    /// The adapter's HTTP client.
    pub client: &'a HttpClient,
}

impl Setup<'_> {
    /// The file a Secret reference names.
    pub fn secret_path(&self, reference: &SecretKeyRef) -> PathBuf {
        self.secrets_dir.join(&reference.name).join(&reference.key)
    }

    /// The token in the Secret file `reference` names.
    pub fn secret(&self, reference: &SecretKeyRef) -> Result<String, SetupError> {
        read_secret_file(&self.secret_path(reference))
    }
}

/// Why a source (or the adapter around it) cannot be set up from its spec.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("Adapter {0:?} sets no source")]
    NoSource(String),
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
    #[error("spec.source.nats.url")]
    NatsUrl(#[source] BadNatsUrl),
    #[error("spec.source.http.oauth2.tokenUrl {url:?} is not a URL: {reason}")]
    TokenUrl { url: String, reason: String },
    #[error("spec.source.jetstream.url")]
    JetStreamUrl(#[source] BadNatsUrl),
}

/// The Adapter's one source (validation allows exactly one): the only match over the kinds.
pub fn build(setup: &Setup<'_>) -> Result<Box<dyn AnySource>, SetupError> {
    let kinds = setup.spec.source.kinds();
    let Some(kind) = kinds.first() else {
        return Err(SetupError::NoSource(setup.adapter.to_owned()));
    };
    Ok(match kind {
        SourceKind::Http(spec) => Box::new(http::HttpPoller::new(spec, setup)?),
        SourceKind::Webhook(spec) => Box::new(webhook::Webhook::new(spec, setup)?),
        SourceKind::Nats(spec) => Box::new(nats::NatsSubscription::new(spec, setup)?),
        SourceKind::JetStream(spec) => Box::new(jetstream::JetStreamConsumer::new(spec, setup)?),
        SourceKind::Postgres(spec) => Box::new(postgres::PostgresCdc::new(spec, setup)?),
        SourceKind::File(spec) => Box::new(file::FileSource::new(spec)),
        SourceKind::Generator(spec) => Box::new(generator::Generator::new(spec, setup)),
    })
}

/// A message of a NATS or JetStream source that is not a record.
#[derive(Debug, thiserror::Error)]
#[error("{message} is not JSON")]
pub struct NotJson {
    /// Which message: its subject, and its stream sequence where it has one.
    message: String,
    #[source]
    source: serde_json::Error,
}

/// Where a source's records go: mapped with the Adapter's [`Mapping`], counted in its
/// [`Stats`] and submitted by its [`Submitter`].
#[derive(Debug)]
pub struct Feed {
    mapping: Mapping,
    submitter: Submitter,
    stats: Arc<Stats>,
}

impl Feed {
    pub fn new(mapping: Mapping, submitter: Submitter, stats: Arc<Stats>) -> Self {
        Feed {
            mapping,
            submitter,
            stats,
        }
    }

    /// The adapter's figures.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Maps `records`, counting each as read. A record that fails mapping is rejected; the
    /// others go on.
    pub fn map<'a>(&self, records: impl IntoIterator<Item = &'a Json>) -> Vec<Item> {
        let mut items = Vec::new();
        for record in records {
            match self.mapping.map(record) {
                Ok(item) => {
                    self.stats.read(1);
                    items.push(item);
                }
                Err(error) => self.reject(&error),
            }
        }
        items
    }

    /// Counts a record that cannot be used as read and rejected, logs why and keeps it as the
    /// last error.
    pub fn reject(&self, error: &dyn std::error::Error) {
        let message = crate::error_chain(error);
        tracing::warn!(error = %message, "record rejected");
        self.stats.read(1);
        self.stats.rejected(1, message);
    }

    /// The records a message source received: each payload parsed as JSON, and each one that
    /// is not rejected (counted, and shown as the last error) under the name `name` gives it.
    pub fn json_records<M>(
        &self,
        messages: &[M],
        payload: impl Fn(&M) -> &[u8],
        name: impl Fn(&M) -> String,
    ) -> Vec<Json> {
        messages
            .iter()
            .filter_map(|message| {
                serde_json::from_slice(payload(message))
                    .map_err(|source| {
                        self.reject(&NotJson {
                            message: name(message),
                            source,
                        })
                    })
                    .ok()
            })
            .collect()
    }

    /// Submits `items` to the receiver (see [`Submitter::submit`]).
    pub async fn submit(
        &self,
        items: &[Item],
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        self.submitter.submit(items, shutdown).await
    }

    /// Maps and submits `records`, then notes the sync: what a source without its own
    /// bookkeeping does with each batch.
    pub async fn deliver(
        &self,
        records: &[Json],
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        let items = self.map(records);
        self.submit(&items, shutdown).await?;
        self.stats.synced();
        Ok(())
    }
}

/// A submission cut short by shutdown is not an error.
pub fn ignore_shutdown(error: SubmitError) -> Result<(), SubmitError> {
    match error {
        SubmitError::ShutDown => Ok(()),
        other => Err(other),
    }
}

pub use crate::nats::{ConnectError, connect};

/// Parses the duration at `field`.
pub fn duration(field: &'static str, text: &str) -> Result<Duration, SetupError> {
    crds::validate::parse_duration(text).map_err(|source| SetupError::Duration {
        field,
        value: text.to_owned(),
        source,
    })
}

/// A token from a mounted Secret file: its first non-blank line, trimmed.
pub fn read_secret_file(path: &Path) -> Result<String, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| SetupError::Secret {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn built(source: &str) -> Result<Box<dyn AnySource>, SetupError> {
        let spec: AdapterSpec = serde_yaml::from_str(&format!(
            "entity: e\nsource: {source}\nmapping: {{id: record.id}}\n"
        ))
        .unwrap();
        let client = super::super::submit::http_client();
        build(&Setup {
            adapter: "feed",
            namespace: "shop",
            spec: &spec,
            interval: Duration::from_secs(60),
            nats_url: &"nats://127.0.0.1:4222".parse().unwrap(),
            secrets_dir: Path::new("/nonexistent"),
            client: &client,
        })
    }

    #[tokio::test]
    async fn each_kind_in_the_spec_builds_the_source_of_that_kind() {
        for (source, kind) in [
            ("{http: {url: 'http://crm/q'}}", "http"),
            ("{webhook: {}}", "webhook"),
            ("{nats: {subject: records}}", "nats"),
            ("{jetstream: {stream: ORDERS}}", "jetstream"),
            ("{file: {path: /data/x.jsonl}}", "file"),
            ("{generator: {rate: 1}}", "generator"),
        ] {
            assert_eq!(built(source).unwrap().kind(), kind, "{source}");
        }
    }

    #[tokio::test]
    async fn a_source_is_set_up_from_its_spec_or_says_what_is_missing() {
        assert!(matches!(built("{}"), Err(SetupError::NoSource(name)) if name == "feed"));
        let error = built("{http: {url: 'http://crm/q', tokenSecretRef: {name: crm, key: token}}}")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read the secret file /nonexistent/crm/token"
        );
        let error = built("{http: {url: 'http://crm/q', resyncInterval: soon}}").unwrap_err();
        assert!(
            matches!(
                &error,
                SetupError::Duration {
                    field: "spec.source.http.resyncInterval",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
