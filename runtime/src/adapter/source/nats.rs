//! The `nats` source: a core NATS subscription (optionally in a queue group, so replicas share
//! the messages) whose messages are JSON records, submitted in batches of what has arrived.
//! Core NATS delivers at most once: a message that arrives while the adapter is down is lost.

use crds::adapter::NatsSource;
use futures::StreamExt;
use process::Health;
use tokio_util::sync::CancellationToken;

use super::super::submit::SubmitError;
use super::{ConnectError, Feed, Setup, SetupError, Source};
use crate::nats::NatsServers;

/// Why the subscription could not be made or fed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot subscribe to {subject:?}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// A subscription to one subject.
#[derive(Debug)]
pub struct NatsSubscription {
    spec: NatsSource,
    url: NatsServers,
    batch_size: u32,
}

impl NatsSubscription {
    /// The subscription `spec` asks for, on its own server or the adapter's.
    pub fn new(spec: &NatsSource, setup: &Setup<'_>) -> Result<Self, SetupError> {
        let url = match &spec.url {
            Some(url) => url.parse().map_err(SetupError::NatsUrl)?,
            None => setup.nats_url.clone(),
        };
        Ok(NatsSubscription {
            spec: spec.clone(),
            url,
            batch_size: setup.spec.batch_size,
        })
    }

    async fn subscribe(&self) -> Result<async_nats::Subscriber, NatsError> {
        let client = super::connect(&self.url).await?;
        let subject = self.spec.subject.clone();
        let subscribed = match &self.spec.queue_group {
            Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
            None => client.subscribe(subject.clone()).await,
        };
        subscribed.map_err(|source| NatsError::Subscribe { subject, source })
    }
}

impl Source for NatsSubscription {
    const KIND: &'static str = "nats";
    type Error = NatsError;

    /// Submits the records of the messages until `shutdown` or the subscription ends.
    async fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), NatsError> {
        let subscriber = self.subscribe().await?;
        health.set_ready(true);
        let mut batches = subscriber.ready_chunks(self.batch_size.max(1) as usize);
        loop {
            let messages = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = batches.next() => match next {
                    Some(messages) => messages,
                    None => return Ok(()),
                },
            };
            let records = feed.json_records(
                &messages,
                |message| &message.payload,
                |message| format!("a message on {}", message.subject),
            );
            if let Err(error) = feed.deliver(&records, shutdown).await {
                return Ok(super::ignore_shutdown(error)?);
            }
        }
    }
}
