//! The `nats` source: a core NATS subscription (optionally in a queue group, so replicas share
//! the messages) whose messages are JSON records, submitted in batches of what has arrived.
//! Core NATS delivers at most once: a message that arrives while the adapter is down is lost.

use futures::StreamExt;
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use super::super::mapping::Mapping;
use super::super::status::Stats;
use super::super::submit::{SubmitError, Submitter};

/// Submits the records of `subscriber`'s messages until `shutdown` or the subscription ends.
pub async fn run(
    subscriber: async_nats::Subscriber,
    batch_size: u32,
    mapping: &Mapping,
    submitter: &Submitter,
    stats: &Stats,
    shutdown: &CancellationToken,
) -> Result<(), SubmitError> {
    let mut batches = subscriber.ready_chunks(batch_size.max(1) as usize);
    loop {
        let messages = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = batches.next() => match next {
                Some(messages) => messages,
                None => return Ok(()),
            },
        };
        let mut records = Vec::with_capacity(messages.len());
        for message in &messages {
            match serde_json::from_slice::<Json>(&message.payload) {
                Ok(record) => records.push(record),
                Err(error) => {
                    let text = format!("a message on {} is not JSON: {error}", message.subject);
                    tracing::warn!(error = %text, "record rejected");
                    stats.read(1);
                    stats.rejected(1, text);
                }
            }
        }
        let items = super::map_records(records.iter(), mapping, stats);
        submitter.submit(&items, shutdown).await?;
        stats.synced();
    }
}
