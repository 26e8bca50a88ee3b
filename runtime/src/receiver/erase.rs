//! Erasure of one key (ADR 75): a tombstone event that keeps no data (who asked, why, at the
//! next version), appended with the expected subject sequence like any event, then a purge of
//! the key's subject before the tombstone. [`tombstone`] is the rule (pure); [`Receiver::erase`]
//! reads, appends, retries on conflicts and purges. [`answer_erasures`] serves the same
//! operation over NATS request-reply, for the operator's `Erasure` controller (ADR 76).

use std::sync::Arc;

use crds::erasure::{ErasureCommand, ErasureReply, erasure_subject};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::problem::ApiError;
use super::submit::{Receiver, Stamp};
use crate::store::jetstream::{Appended, Stored};
use crate::store::{Erasure, Event, EventType, Key};

/// Appends retried after a conflict before the request gives up with a 503.
const MAX_ATTEMPTS: u32 = 64;

/// What an erasure request says: who asks and why. Nothing of the erased data.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseRequest {
    pub requested_by: String,
    pub reason: String,
}

/// The answer to an erasure: where the tombstone stands and how many events left the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Erased {
    pub result: &'static str,
    pub key: String,
    /// The tombstone's version: one after the key's last event.
    pub version: u64,
    /// The tombstone's stream sequence.
    pub sequence: u64,
    /// The key's ordering partition.
    pub partition: u32,
    /// Events purged by this request (0 when an earlier request already purged them).
    pub purged: u64,
}

/// What erasing a key whose latest stored event is `latest` appends: a tombstone at the next
/// version, or nothing when the latest event already is one (the request is repeated, e.g.
/// after a purge that failed). A key never written cannot be erased (404).
pub fn tombstone(
    entity: &str,
    key: &Key,
    request: &EraseRequest,
    latest: Option<&Stored>,
    stamp: impl FnOnce() -> Stamp,
) -> Result<Option<Event>, ApiError> {
    let Some(latest) = latest else {
        return Err(ApiError::NotFound(format!(
            "key {key} has no events to erase"
        )));
    };
    if latest.event.is_tombstone() {
        return Ok(None);
    }
    let Stamp { id, recorded_at } = stamp();
    Ok(Some(Event {
        id,
        entity: entity.to_owned(),
        key: key.to_string(),
        version: latest.event.version + 1,
        type_: EventType::Deleted,
        state: None,
        changes: Vec::new(),
        source: None,
        occurred_at: None,
        recorded_at,
        correlation_id: None,
        erasure: Some(Erasure {
            requested_by: request.requested_by.clone(),
            reason: request.reason.clone(),
        }),
    }))
}

impl Receiver {
    /// Erases `key`: appends its tombstone (retrying on conflicts), then purges every event of
    /// the key before it. Safe to repeat: a key whose latest event is its tombstone is only
    /// purged again. Answers only once the purge is acknowledged.
    pub async fn erase(&self, key: &Key, request: &EraseRequest) -> Result<Erased, ApiError> {
        let entity = self.model.names().entity();
        // Checked before the tombstone: an erasure that cannot purge must append nothing.
        if !self.store.purge_allowed() {
            return Err(ApiError::PurgeDenied {
                stream: self.model.names().stream(),
            });
        }
        for _ in 1..=MAX_ATTEMPTS {
            let latest = self.store.latest(key).await?;
            let (version, sequence) =
                match tombstone(entity, key, request, latest.as_ref(), Stamp::now)? {
                    None => {
                        let latest = latest.expect("a tombstone was read");
                        (latest.event.version, latest.sequence)
                    }
                    Some(event) => {
                        let expected = latest.as_ref().map_or(0, |s| s.sequence);
                        match self.store.append(key, &event, expected).await? {
                            Appended::Stored { sequence } => (event.version, sequence),
                            Appended::Conflict => {
                                self.metrics.conflicts_retried.inc();
                                continue;
                            }
                        }
                    }
                };
            let purged = self.store.purge_before(key, sequence).await?;
            self.metrics.erasures.inc();
            self.metrics.purged_events.inc_by(purged);
            tracing::info!(
                entity,
                key = %key,
                version,
                sequence,
                purged,
                requested_by = %request.requested_by,
                "key erased"
            );
            return Ok(Erased {
                result: "erased",
                key: key.to_string(),
                version,
                sequence,
                partition: key.partition(self.model.names().partitions()),
                purged,
            });
        }
        Err(ApiError::Contended {
            key: key.to_string(),
        })
    }
}

/// Why the erasure service could not start.
#[derive(Debug, thiserror::Error)]
#[error("subscribing to erasure requests on {subject}")]
pub struct SubscribeError {
    pub subject: String,
    #[source]
    pub source: async_nats::SubscribeError,
}

/// Answers erasure requests on the Entity's erasure subject (queue group `receivers`, so one
/// replica answers each) until `shutdown`: the same checks and the same [`Receiver::erase`] as
/// `POST .../erasure`. Who may ask is decided by who may publish to the subject: NATS
/// permissions, as for the JetStream API itself (ADR 76).
pub async fn answer_erasures(
    receiver: Arc<Receiver>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, SubscribeError> {
    let names = receiver.model.names();
    let subject = erasure_subject(names.namespace(), names.entity());
    let mut requests = client
        .queue_subscribe(subject.clone(), "receivers".to_owned())
        .await
        .map_err(|source| SubscribeError {
            subject: subject.clone(),
            source,
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = requests.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            let Some(reply_to) = message.reply.clone() else {
                tracing::warn!(%subject, "an erasure request without a reply subject was ignored");
                continue;
            };
            let reply = erase_command(&receiver, &message.payload).await;
            let body = serde_json::to_vec(&reply).expect("a reply serialises");
            if let Err(error) = client.publish(reply_to, body.into()).await {
                tracing::warn!(%error, "could not answer an erasure request");
            }
        }
    }))
}

/// One erasure request read, checked and carried out; every failure is a problem reply.
async fn erase_command(receiver: &Receiver, payload: &[u8]) -> ErasureReply {
    let outcome = async {
        let command: ErasureCommand = serde_json::from_slice(payload)
            .map_err(|error| ApiError::BadRequest(format!("the erasure request: {error}")))?;
        if command.requested_by.trim().is_empty() || command.reason.trim().is_empty() {
            return Err(ApiError::BadRequest(
                "an erasure request names requestedBy and a reason".to_owned(),
            ));
        }
        let key = Key::new(command.key).map_err(|e| ApiError::Rejected(e.into()))?;
        let request = EraseRequest {
            requested_by: command.requested_by,
            reason: command.reason,
        };
        receiver.erase(&key, &request).await
    }
    .await;
    match outcome {
        Ok(erased) => ErasureReply::Erased {
            version: erased.version,
            sequence: erased.sequence,
            partition: erased.partition,
            purged: erased.purged,
        },
        Err(error) => ErasureReply::Problem {
            status: error.status().as_u16(),
            type_: error.reason().to_owned(),
            detail: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: u64, erasure: Option<Erasure>) -> Stored {
        Stored {
            event: Event {
                id: uuid::Uuid::from_u128(7),
                entity: "customer".into(),
                key: "c-1".into(),
                version,
                type_: EventType::Updated,
                state: Some(serde_json::json!({"id": "c-1", "name": "Ada"})),
                changes: Vec::new(),
                source: None,
                occurred_at: None,
                recorded_at: "2026-01-01T00:00:00Z".into(),
                correlation_id: None,
                erasure,
            },
            sequence: 40,
        }
    }

    fn request() -> EraseRequest {
        EraseRequest {
            requested_by: "dpo@example.com".into(),
            reason: "ticket 12".into(),
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            id: uuid::Uuid::from_u128(9),
            recorded_at: "2026-02-02T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_tombstone_is_the_next_version_and_keeps_who_asked_and_why_but_no_data() {
        let key = Key::new("c-1").unwrap();
        let event = tombstone("customer", &key, &request(), Some(&stored(3, None)), stamp)
            .unwrap()
            .unwrap();
        assert_eq!(event.version, 4);
        assert_eq!(event.type_, EventType::Deleted);
        assert_eq!((event.state, event.changes), (None, Vec::new()));
        let erasure = event.erasure.unwrap();
        assert_eq!(erasure.requested_by, "dpo@example.com");
        assert_eq!(erasure.reason, "ticket 12");
    }

    #[test]
    fn erasing_an_erased_key_appends_nothing_and_an_unknown_key_is_not_found() {
        let key = Key::new("c-1").unwrap();
        let erased = stored(4, Some(request().into_erasure()));
        let again = tombstone("customer", &key, &request(), Some(&erased), stamp).unwrap();
        assert!(again.is_none());
        let error = tombstone("customer", &key, &request(), None, stamp).unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::NOT_FOUND);
    }

    impl EraseRequest {
        fn into_erasure(self) -> Erasure {
            Erasure {
                requested_by: self.requested_by,
                reason: self.reason,
            }
        }
    }
}
