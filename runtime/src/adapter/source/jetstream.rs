//! The `jetstream` source: a durable pull consumer on an existing stream whose messages are
//! JSON records (issue 18, ADR 77). A batch is acknowledged (by its last message, ack policy
//! `All`) only after the receiver acknowledged the batch's records, so nothing the stream holds
//! is lost when the adapter, the receiver or NATS goes away: what was not acknowledged is
//! delivered again, and the receiver's `unchanged` absorbs a record it already stored.
//!
//! One batch is in flight at a time (`max_ack_pending` is the batch size), so redeliveries come
//! in the stream's order; while the receiver is retried, the batch's messages are kept from
//! redelivery with progress acknowledgements.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::pull::Config;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use crds::adapter::{JetStreamDeliver, JetStreamSource};
use futures::StreamExt;
use process::Health;
use tokio_util::sync::CancellationToken;

use super::super::submit::SubmitError;
use super::{ConnectError, Feed, Setup, SetupError, Source};
use crate::nats::NatsServers;

/// How long one fetch waits for messages before it asks again.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);

/// Why the consumer could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "JetStream stream {stream:?} cannot be read (it must exist; the adapter never creates it)"
    )]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("cannot create or open consumer {consumer:?} on stream {stream:?}")]
    Consumer {
        stream: String,
        consumer: String,
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error("fetching from consumer {consumer:?} failed")]
    Fetch {
        consumer: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("acknowledging message {sequence} of stream {stream:?} failed")]
    Ack {
        stream: String,
        sequence: u64,
        #[source]
        source: async_nats::Error,
    },
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// A durable consumer of one stream.
#[derive(Debug)]
pub struct JetStreamConsumer {
    spec: JetStreamSource,
    consumer: String,
    url: NatsServers,
    batch_size: u32,
    ack_wait: Duration,
}

impl JetStreamConsumer {
    /// The consumer `spec` asks for, on its own server or the adapter's.
    pub fn new(spec: &JetStreamSource, setup: &Setup<'_>) -> Result<Self, SetupError> {
        let url = match &spec.url {
            Some(url) => url.parse().map_err(SetupError::JetStreamUrl)?,
            None => setup.nats_url.clone(),
        };
        Ok(JetStreamConsumer {
            consumer: spec
                .consumer
                .clone()
                .unwrap_or_else(|| format!("dreampipe-{}", setup.adapter)),
            spec: spec.clone(),
            url,
            batch_size: setup.spec.batch_size.max(1),
            ack_wait: super::duration("spec.source.jetstream.ackWait", &spec.ack_wait)?,
        })
    }

    /// The consumer's configuration; an existing durable consumer keeps its own.
    fn config(&self) -> Config {
        Config {
            durable_name: Some(self.consumer.clone()),
            description: Some(
                "DreamPipe adapter: acknowledged once the receiver stored it".to_owned(),
            ),
            deliver_policy: match self.spec.deliver {
                JetStreamDeliver::All => DeliverPolicy::All,
                JetStreamDeliver::New => DeliverPolicy::New,
            },
            // One batch in flight, acknowledged by its last message.
            ack_policy: AckPolicy::All,
            ack_wait: self.ack_wait,
            max_ack_pending: i64::from(self.batch_size),
            filter_subject: self.spec.filter_subject.clone().unwrap_or_default(),
            ..Config::default()
        }
    }

    async fn open(&self) -> Result<PullConsumer, JetStreamError> {
        let client = super::connect(&self.url).await?;
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream
            .get_stream(&self.spec.stream)
            .await
            .map_err(|source| JetStreamError::Stream {
                stream: self.spec.stream.clone(),
                source,
            })?;
        stream
            .get_or_create_consumer(&self.consumer, self.config())
            .await
            .map_err(|source| JetStreamError::Consumer {
                stream: self.spec.stream.clone(),
                consumer: self.consumer.clone(),
                source,
            })
    }

    /// One fetch: up to a batch of messages, or none after [`FETCH_EXPIRES`].
    async fn fetch(
        &self,
        consumer: &PullConsumer,
    ) -> Result<Vec<async_nats::jetstream::Message>, JetStreamError> {
        let fetch_failed = |source: async_nats::Error| JetStreamError::Fetch {
            consumer: self.consumer.clone(),
            source,
        };
        let mut batch = consumer
            .fetch()
            .max_messages(self.batch_size as usize)
            .expires(FETCH_EXPIRES)
            .messages()
            .await
            .map_err(|e| fetch_failed(Box::new(e)))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(fetch_failed)?);
        }
        Ok(messages)
    }

    /// Submits the records of `messages`, telling the server the batch is still being worked
    /// on every third of `ack_wait` while the receiver is retried.
    async fn deliver(
        &self,
        feed: &Feed,
        messages: &[async_nats::jetstream::Message],
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        let records = feed.json_records(
            messages,
            |message| &message.payload,
            |message| {
                format!(
                    "message {} on {}",
                    stream_sequence(message),
                    message.subject
                )
            },
        );
        let delivery = feed.deliver(&records, shutdown);
        tokio::pin!(delivery);
        let mut progress = tokio::time::interval(self.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                done = &mut delivery => return done,
                _ = progress.tick() => {
                    for message in messages {
                        if let Err(error) = message.ack_with(AckKind::Progress).await {
                            tracing::warn!(%error, "could not report progress on a message");
                        }
                    }
                }
            }
        }
    }
}

fn stream_sequence(message: &async_nats::jetstream::Message) -> u64 {
    message.info().map_or(0, |info| info.stream_sequence)
}

impl Source for JetStreamConsumer {
    const KIND: &'static str = "jetstream";
    type Error = JetStreamError;

    /// Fetches, submits and acknowledges batch after batch until `shutdown`.
    async fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), JetStreamError> {
        let consumer = self.open().await?;
        health.set_ready(true);
        loop {
            let messages = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                fetched = self.fetch(&consumer) => fetched?,
            };
            // Each message says how many are pending after it; a fetch that waited in vain
            // means none are.
            feed.stats().backlog(
                messages
                    .last()
                    .and_then(|m| m.info().ok())
                    .map_or(0, |i| i.pending),
            );
            if messages.is_empty() {
                continue;
            }
            match self.deliver(feed, &messages, shutdown).await {
                Ok(()) => {}
                Err(SubmitError::ShutDown) => {
                    // Not acknowledged: the next adapter gets them again, in order.
                    for message in &messages {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    }
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
            // Rejected records are acknowledged too: a record the receiver refused (or that is
            // no JSON) is counted, and delivering it again would be refused again. The batch's
            // last message acknowledges the batch (ack policy `All`), confirmed by the server
            // before the next fetch.
            let last = messages.last().expect("the batch is not empty");
            last.double_ack()
                .await
                .map_err(|source| JetStreamError::Ack {
                    stream: self.spec.stream.clone(),
                    sequence: stream_sequence(last),
                    source,
                })?;
        }
    }
}
