//! The command side's rule: append an event only when a submission carries new information,
//! decided against the latest *stored* state, and never lose an update when writers race.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::metrics::Metrics;
use super::model::EntityModel;
use super::problem::ApiError;
use crate::store::envelope::{diff, same_information};
use crate::store::jetstream::{Appended, EventStore, StoreError, Stored};
use crate::store::{Event, EventType, Key};

/// Appends retried after a conflict before the request gives up with a 503.
const MAX_ATTEMPTS: u32 = 64;

/// What a submission asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// Replace the state with this full snapshot.
    Put(Value),
    /// Apply an RFC 7396 JSON merge patch to the current state.
    Patch(Value),
    /// Delete the key.
    Delete,
}

/// One submission for one key.
#[derive(Clone, Debug)]
pub struct Submission {
    pub key: Key,
    pub operation: Operation,
    /// Client-side optimistic concurrency: the version the client last saw (0: must not exist).
    pub if_match: Option<u64>,
    pub source: Option<String>,
    pub occurred_at: Option<String>,
    pub correlation_id: Option<String>,
}

/// What a submission did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Deleted,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Deleted => "deleted",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// The answer to a submission: what happened and where the key now stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub result: Outcome,
    pub key: String,
    pub version: u64,
    pub sequence: u64,
}

/// The Event Receiver's core: the Entity, its store and its metrics.
#[derive(Debug)]
pub struct Receiver {
    pub model: EntityModel,
    pub store: EventStore,
    pub metrics: Arc<Metrics>,
}

impl Receiver {
    /// A receiver for `model` over its (ensured) stream.
    pub async fn open(
        client: &async_nats::Client,
        model: EntityModel,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let store = EventStore::open(client, model.names().clone(), model.replicas()).await?;
        Ok(Receiver {
            model,
            store,
            metrics,
        })
    }

    /// Applies one submission: read the latest stored event, decide, append with the expected
    /// subject sequence, and on a conflict read again and decide again.
    pub async fn submit(&self, submission: Submission) -> Result<Accepted, ApiError> {
        self.submit_after(submission, None)
            .await
            .map(|(accepted, _)| accepted)
    }

    /// Like [`Receiver::submit`], starting from `known`: the key's latest stored event as read
    /// (or appended) by this same request after it arrived, so deciding on it is deciding on
    /// the latest state at a moment within the request. Returns the key's latest event after
    /// the submission, for the request's next item of the same key.
    pub async fn submit_after(
        &self,
        submission: Submission,
        known: Option<Option<Stored>>,
    ) -> Result<(Accepted, Option<Stored>), ApiError> {
        let mut known = known;
        for attempt in 1..=MAX_ATTEMPTS {
            let latest = match known.take() {
                Some(latest) => latest,
                None => self.store.latest(&submission.key).await?,
            };
            let (event, expected) = match self.decide(&submission, latest.as_ref())? {
                Decision::Unchanged(accepted) => return Ok((accepted, latest)),
                Decision::Append(event) => (event, latest.as_ref().map_or(0, |s| s.sequence)),
            };
            let started = Instant::now();
            let appended = match self.store.append(&submission.key, &event, expected).await {
                Err(StoreError::EventTooLarge { size, limit, .. }) => {
                    return Err(ApiError::EventTooLarge {
                        key: submission.key.to_string(),
                        size,
                        limit,
                    });
                }
                other => other?,
            };
            match appended {
                Appended::Stored { sequence } => {
                    self.metrics
                        .append_seconds
                        .observe(started.elapsed().as_secs_f64());
                    let result = match event.type_ {
                        EventType::Created => Outcome::Created,
                        EventType::Updated => Outcome::Updated,
                        EventType::Deleted => Outcome::Deleted,
                    };
                    let accepted = Accepted {
                        result,
                        key: event.key.clone(),
                        version: event.version,
                        sequence,
                    };
                    return Ok((accepted, Some(Stored { event, sequence })));
                }
                Appended::Conflict => {
                    self.metrics.conflicts_retried.inc();
                    if attempt > 8 {
                        // Many writers on one key: step aside briefly so one of them wins.
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
                    }
                }
            }
        }
        Err(ApiError::Contended {
            key: submission.key.to_string(),
        })
    }

    /// The pure part: given the latest stored event, what the submission means.
    fn decide(
        &self,
        submission: &Submission,
        latest: Option<&Stored>,
    ) -> Result<Decision, ApiError> {
        let current_version = latest.map_or(0, |s| s.event.version);
        let current_state = latest.and_then(|s| s.event.state.as_ref());
        let next_state = match &submission.operation {
            Operation::Put(state) => {
                self.model.check(state, Some(&submission.key))?;
                Some(state.clone())
            }
            Operation::Patch(patch) => {
                let Some(current) = current_state else {
                    return Err(ApiError::NotFound(format!(
                        "key {} has no state to patch; PUT a full state first",
                        submission.key
                    )));
                };
                let mut patched = current.clone();
                json_patch::merge(&mut patched, patch);
                self.model.check(&patched, Some(&submission.key))?;
                Some(patched)
            }
            // Deleting a key that is absent (never written, or deleted) is no new information.
            Operation::Delete => None,
        };
        // After the request's own checks (RFC 9110 §13.2.1): invalid content is refused as
        // such, whatever version it names.
        if let Some(expected) = submission.if_match
            && expected != current_version
        {
            return Err(ApiError::PreconditionFailed {
                expected,
                current: current_version,
            });
        }

        let unchanged = match (current_state, &next_state) {
            (None, None) => true,
            (Some(current), Some(next)) => same_information(current, next, self.model.ignore()),
            _ => false,
        };
        if unchanged {
            // A key never written stands at version 0, before stream sequence 1.
            return Ok(Decision::Unchanged(Accepted {
                result: Outcome::Unchanged,
                key: submission.key.to_string(),
                version: current_version,
                sequence: latest.map_or(0, |s| s.sequence),
            }));
        }

        let type_ = match (current_state, &next_state) {
            (_, None) => EventType::Deleted,
            (None, Some(_)) => EventType::Created,
            (Some(_), Some(_)) => EventType::Updated,
        };
        Ok(Decision::Append(Event {
            id: uuid::Uuid::now_v7(),
            entity: self.model.names().entity().to_owned(),
            key: submission.key.to_string(),
            version: current_version + 1,
            type_,
            changes: diff(current_state, next_state.as_ref()),
            state: next_state,
            source: submission.source.clone(),
            occurred_at: submission.occurred_at.clone(),
            recorded_at: jiff::Timestamp::now().to_string(),
            correlation_id: submission.correlation_id.clone(),
        }))
    }
}

enum Decision {
    Unchanged(Accepted),
    Append(Event),
}
