//! The command side's rule (ADR 2): append an event only when a submission carries new
//! information, decided against the latest *stored* state, and never lose an update when
//! writers race. [`decide`] is the rule itself (pure); [`Receiver`] reads, calls it and
//! appends, one submission or a batch at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument as _;

use crds::entity::AfterErasure;

use super::keys::KeyLocks;
use super::metrics::Metrics;
use super::model::EntityModel;
use super::problem::ApiError;
use crate::store::envelope::{diff, same_information};
use crate::store::jetstream::{Appended, EventStore, StoreError, Stored};
use crate::store::{Event, EventType, Key};

/// Appends retried after a conflict before the request gives up with a 503.
const MAX_ATTEMPTS: u32 = 64;

/// Keys in flight at once within one batch; one key's items stay in order.
const BATCH_CONCURRENCY: usize = 256;

/// Lock stripes keys are hashed onto (ADR 81): far more than the keys in flight at once.
const KEY_STRIPES: usize = 4096;

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

/// What a request knows of a key's latest stored event before it decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// Nothing yet: the key is read from the stream.
    Unread,
    /// Read (or appended) by this same request after it arrived: the key has no event.
    Absent,
    /// Read (or appended) by this same request after it arrived: the key's latest event.
    Latest(Box<Stored>),
}

impl From<Option<Stored>> for Known {
    fn from(latest: Option<Stored>) -> Self {
        match latest {
            Some(stored) => Known::Latest(Box::new(stored)),
            None => Known::Absent,
        }
    }
}

/// What a submission means, given the key's latest stored event.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// No new information: nothing is appended, and this is the answer.
    Unchanged(Accepted),
    /// New information: append `event`, expecting the key's latest at subject sequence
    /// `expected` (0: the key has no event yet).
    Append { event: Box<Event>, expected: u64 },
}

/// What an event appended now is stamped with: its id and the time it is recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Stamp {
    pub id: uuid::Uuid,
    pub recorded_at: String,
}

impl Stamp {
    /// A fresh UUIDv7 and the current time.
    pub fn now() -> Stamp {
        Stamp {
            id: uuid::Uuid::now_v7(),
            recorded_at: jiff::Timestamp::now().to_string(),
        }
    }
}

/// The rule of ADR 2, pure: given the key's latest stored event (or none), what `submission`
/// means. `stamp` is called only when there is an event to append. Refuses an invalid state,
/// a patch of a key without state (404) and an `If-Match` naming another version (412).
pub fn decide(
    model: &EntityModel,
    submission: &Submission,
    latest: Option<&Stored>,
    stamp: impl FnOnce() -> Stamp,
) -> Result<Decision, ApiError> {
    let current_version = latest.map_or(0, |s| s.event.version);
    if let Some(erased) = latest.filter(|s| s.event.is_tombstone())
        && model.after_erasure() == AfterErasure::Refuse
    {
        return Err(ApiError::Erased {
            key: submission.key.to_string(),
            version: erased.event.version,
        });
    }
    let current_state = latest.and_then(|s| s.event.state.as_ref());
    let next_state = match &submission.operation {
        Operation::Put(state) => {
            model.check(state, Some(&submission.key))?;
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
            model.check(&patched, Some(&submission.key))?;
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
        (Some(current), Some(next)) => same_information(current, next, model.ignore()),
        _ => false,
    };
    let sequence = latest.map_or(0, |s| s.sequence);
    if unchanged {
        // A key never written stands at version 0, before stream sequence 1.
        return Ok(Decision::Unchanged(Accepted {
            result: Outcome::Unchanged,
            key: submission.key.to_string(),
            version: current_version,
            sequence,
        }));
    }

    let type_ = match (current_state, &next_state) {
        (_, None) => EventType::Deleted,
        (None, Some(_)) => EventType::Created,
        (Some(_), Some(_)) => EventType::Updated,
    };
    let Stamp { id, recorded_at } = stamp();
    Ok(Decision::Append {
        event: Box::new(Event {
            id,
            entity: model.names().entity().to_owned(),
            key: submission.key.to_string(),
            version: current_version + 1,
            type_,
            changes: diff(current_state, next_state.as_ref()),
            state: next_state,
            source: submission.source.clone(),
            occurred_at: submission.occurred_at.clone(),
            recorded_at,
            correlation_id: submission.correlation_id.clone(),
            erasure: None,
        }),
        expected: sequence,
    })
}

/// A batch's valid submissions grouped by key, each group in submission order, the groups in
/// the order their keys first appear; with each submission's index in the batch.
fn group_by_key(
    items: impl IntoIterator<Item = (usize, Submission)>,
) -> Vec<Vec<(usize, Submission)>> {
    let mut groups: Vec<Vec<(usize, Submission)>> = Vec::new();
    let mut group_of: HashMap<Key, usize> = HashMap::new();
    for (index, submission) in items {
        let group = *group_of.entry(submission.key.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push((index, submission));
    }
    groups
}

/// The Event Receiver's core: the Entity, its store and its metrics.
#[derive(Debug)]
pub struct Receiver {
    pub model: EntityModel,
    pub store: EventStore,
    pub metrics: Arc<Metrics>,
    /// One writer per key in this process (ADR 81).
    keys: KeyLocks,
}

impl Receiver {
    /// A receiver for `model` over its (ensured) stream.
    pub async fn open(
        client: &async_nats::Client,
        model: EntityModel,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let store = EventStore::open(client, model.names().clone()).await?;
        Ok(Receiver {
            model,
            store,
            metrics,
            keys: KeyLocks::new(KEY_STRIPES),
        })
    }

    /// What `/v1/status` and the heartbeats say: the Entity's stream and its figures.
    pub async fn report(&self) -> Result<crds::report::ReceiverReport, StoreError> {
        Ok(crds::report::ReceiverReport {
            entity: self.model.names().entity().to_owned(),
            stream: self.model.names().stream(),
            stats: self.store.stats().await?,
        })
    }

    /// Applies one submission: read the latest stored event, decide, append with the expected
    /// subject sequence, and on a conflict read again and decide again.
    pub async fn submit(&self, submission: Submission) -> Result<Accepted, ApiError> {
        let entered = self.keys.enter(&submission.key);
        let _held = entered.hold().await;
        self.submit_from(submission, Known::Unread)
            .await
            .map(|(accepted, _)| accepted)
    }

    /// Applies a batch, answering each item in its place (items already refused stay so).
    /// The latest events of all its keys are read at once; each key's items then follow in
    /// order, each starting from what the one before read or appended (ADR 2). Keys are
    /// decided concurrently.
    pub async fn submit_batch(
        &self,
        items: Vec<Result<Submission, ApiError>>,
    ) -> Vec<Result<Accepted, ApiError>> {
        let mut results: Vec<Option<Result<Accepted, ApiError>>> = Vec::with_capacity(items.len());
        let mut valid = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(submission) => {
                    valid.push((index, submission));
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let groups = group_by_key(valid);

        // One read for every key of the batch; each key's items then follow on from it. Its
        // writers enter first, so that each learns whether another appended after the read.
        let keys: Vec<Key> = groups.iter().map(|group| group[0].1.key.clone()).collect();
        let writers: Vec<_> = keys.iter().map(|key| self.keys.enter(key)).collect();
        let mut prefetched = match self.store.latest_many(&keys).await {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "batch read failed; reading key by key");
                None
            }
        };
        let groups: Vec<_> = groups
            .into_iter()
            .zip(writers)
            .map(|(group, entered)| {
                let known = match prefetched.as_mut() {
                    Some(found) => Known::from(found.remove(&group[0].1.key)),
                    None => Known::Unread,
                };
                (group, entered, known)
            })
            .collect();
        let mut finished = futures::stream::iter(groups)
            .map(|(group, entered, known)| async move {
                let mut done = Vec::with_capacity(group.len());
                let held = entered.hold().await;
                // Another writer of the key appended after the batch read: read again.
                let mut known = if held.stale { Known::Unread } else { known };
                for (index, submission) in group {
                    let outcome = match self.submit_from(submission, known).await {
                        Ok((accepted, latest)) => {
                            known = Known::from(latest);
                            Ok(accepted)
                        }
                        Err(error) => {
                            known = Known::Unread;
                            Err(error)
                        }
                    };
                    done.push((index, outcome));
                }
                drop(held);
                done
            })
            .buffer_unordered(BATCH_CONCURRENCY);
        while let Some(done) = finished.next().await {
            for (index, outcome) in done {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every item has a result"))
            .collect()
    }

    /// Applies one submission starting from `known`, retrying on conflicts. Returns the key's
    /// latest event after the submission, for the request's next item of the same key.
    /// Traced as `receiver.decide`, the parent of the append it makes.
    async fn submit_from(
        &self,
        submission: Submission,
        known: Known,
    ) -> Result<(Accepted, Option<Stored>), ApiError> {
        let span = crate::span!(
            "receiver.decide",
            entity = self.model.names().entity(),
            key = %submission.key,
            result = tracing::field::Empty,
        );
        let decided = self
            .decide_and_append(submission, known)
            .instrument(span.clone())
            .await;
        if !span.is_none() {
            match &decided {
                Ok((accepted, _)) => span.record("result", accepted.result.as_str()),
                Err(error) => span.record("result", error.reason()),
            };
        }
        decided
    }

    async fn decide_and_append(
        &self,
        submission: Submission,
        known: Known,
    ) -> Result<(Accepted, Option<Stored>), ApiError> {
        let mut known = known;
        for attempt in 1..=MAX_ATTEMPTS {
            let latest = match std::mem::replace(&mut known, Known::Unread) {
                Known::Unread => self.store.latest(&submission.key).await?,
                Known::Absent => None,
                Known::Latest(stored) => Some(*stored),
            };
            let (event, expected) =
                match decide(&self.model, &submission, latest.as_ref(), Stamp::now)? {
                    Decision::Unchanged(accepted) => return Ok((accepted, latest)),
                    Decision::Append { event, expected } => (*event, expected),
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
}

#[cfg(test)]
mod tests;
