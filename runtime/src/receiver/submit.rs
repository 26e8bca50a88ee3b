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
    Append { event: Event, expected: u64 },
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
        event: Event {
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
        },
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

        // One read for every key of the batch; each key's items then follow on from it.
        let keys: Vec<Key> = groups.iter().map(|group| group[0].1.key.clone()).collect();
        let mut prefetched = match self.store.latest_many(&keys).await {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "batch read failed; reading key by key");
                None
            }
        };
        let groups: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let known = match prefetched.as_mut() {
                    Some(found) => Known::from(found.remove(&group[0].1.key)),
                    None => Known::Unread,
                };
                (group, known)
            })
            .collect();
        let mut finished = futures::stream::iter(groups)
            .map(|(group, known)| async move {
                let mut done = Vec::with_capacity(group.len());
                let mut known = known;
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
    async fn submit_from(
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
                    Decision::Append { event, expected } => (event, expected),
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
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> EntityModel {
        let entity: crds::Entity = serde_yaml::from_str(
            r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: shop}
spec:
  key: /id
  ignore: [/syncedAt]
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string, minLength: 1}
      syncedAt: {type: string}
"#,
        )
        .unwrap();
        EntityModel::new(&entity).unwrap()
    }

    fn submission(operation: Operation) -> Submission {
        Submission {
            key: Key::new("7").unwrap(),
            operation,
            if_match: None,
            source: Some("crm".to_owned()),
            occurred_at: None,
            correlation_id: Some("c-1".to_owned()),
        }
    }

    /// Key 7 at version 3, stream sequence 40, with `state` (None: deleted).
    fn stored(state: Option<Value>) -> Stored {
        Stored {
            event: Event {
                id: uuid::Uuid::nil(),
                entity: "customer".to_owned(),
                key: "7".to_owned(),
                version: 3,
                type_: if state.is_some() {
                    EventType::Updated
                } else {
                    EventType::Deleted
                },
                state,
                changes: Vec::new(),
                source: None,
                occurred_at: None,
                recorded_at: "2026-01-01T00:00:00Z".to_owned(),
                correlation_id: None,
            },
            sequence: 40,
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            id: uuid::Uuid::from_u128(1),
            recorded_at: "2026-02-02T00:00:00Z".to_owned(),
        }
    }

    fn no_stamp() -> Stamp {
        panic!("nothing is appended, so no event is stamped")
    }

    fn appended(decision: Decision) -> (Event, u64) {
        match decision {
            Decision::Append { event, expected } => (event, expected),
            other => panic!("expected an append, got {other:?}"),
        }
    }

    #[test]
    fn a_put_of_a_new_key_appends_a_created_event_at_version_one() {
        let put = submission(Operation::Put(json!({"id": "7", "name": "Ada"})));
        let (event, expected) = appended(decide(&model(), &put, None, stamp).unwrap());
        assert_eq!(expected, 0, "the key has no event yet");
        assert_eq!(event.type_, EventType::Created);
        assert_eq!(event.version, 1);
        assert_eq!(event.state, Some(json!({"id": "7", "name": "Ada"})));
        assert_eq!(event.entity, "customer");
        assert_eq!(event.key, "7");
        assert_eq!(event.id, stamp().id);
        assert_eq!(event.recorded_at, stamp().recorded_at);
        assert_eq!(event.source.as_deref(), Some("crm"));
        assert_eq!(event.correlation_id.as_deref(), Some("c-1"));
        assert!(!event.changes.is_empty());
    }

    #[test]
    fn a_put_with_new_information_appends_an_update_expecting_the_latest_sequence() {
        let latest = stored(Some(json!({"id": "7", "name": "Ada"})));
        let put = submission(Operation::Put(json!({"id": "7", "name": "Grace"})));
        let (event, expected) = appended(decide(&model(), &put, Some(&latest), stamp).unwrap());
        assert_eq!(expected, 40);
        assert_eq!(event.type_, EventType::Updated);
        assert_eq!(event.version, 4);
        assert_eq!(
            event.changes,
            diff(latest.event.state.as_ref(), event.state.as_ref())
        );
    }

    #[test]
    fn a_put_of_the_same_information_is_unchanged_at_the_current_version() {
        let latest = stored(Some(
            json!({"id": "7", "name": "Ada", "syncedAt": "monday"}),
        ));
        // Only an ignored field differs.
        let put = submission(Operation::Put(
            json!({"id": "7", "name": "Ada", "syncedAt": "tuesday"}),
        ));
        let decision = decide(&model(), &put, Some(&latest), no_stamp).unwrap();
        assert_eq!(
            decision,
            Decision::Unchanged(Accepted {
                result: Outcome::Unchanged,
                key: "7".to_owned(),
                version: 3,
                sequence: 40,
            })
        );
    }

    #[test]
    fn a_patch_is_merged_into_the_latest_state() {
        let latest = stored(Some(
            json!({"id": "7", "name": "Ada", "syncedAt": "monday"}),
        ));
        let patch = submission(Operation::Patch(json!({"name": "Grace", "syncedAt": null})));
        let (event, expected) = appended(decide(&model(), &patch, Some(&latest), stamp).unwrap());
        assert_eq!(expected, 40);
        assert_eq!(event.state, Some(json!({"id": "7", "name": "Grace"})));
        assert_eq!(event.version, 4);
    }

    #[test]
    fn a_patch_of_a_key_without_state_is_not_found() {
        let patch = submission(Operation::Patch(json!({"name": "Grace"})));
        for latest in [None, Some(stored(None))] {
            let error = decide(&model(), &patch, latest.as_ref(), no_stamp).unwrap_err();
            assert!(matches!(error, ApiError::NotFound(_)), "{error:?}");
        }
    }

    #[test]
    fn a_delete_of_a_stored_key_appends_a_deleted_event() {
        let latest = stored(Some(json!({"id": "7", "name": "Ada"})));
        let delete = submission(Operation::Delete);
        let (event, expected) = appended(decide(&model(), &delete, Some(&latest), stamp).unwrap());
        assert_eq!(expected, 40);
        assert_eq!(event.type_, EventType::Deleted);
        assert_eq!(event.state, None);
        assert_eq!(event.version, 4);
    }

    #[test]
    fn a_delete_of_an_absent_key_is_unchanged() {
        let delete = submission(Operation::Delete);
        let never_written = decide(&model(), &delete, None, no_stamp).unwrap();
        assert_eq!(
            never_written,
            Decision::Unchanged(Accepted {
                result: Outcome::Unchanged,
                key: "7".to_owned(),
                version: 0,
                sequence: 0,
            })
        );
        let deleted = stored(None);
        let again = decide(&model(), &delete, Some(&deleted), no_stamp).unwrap();
        assert_eq!(
            again,
            Decision::Unchanged(Accepted {
                result: Outcome::Unchanged,
                key: "7".to_owned(),
                version: 3,
                sequence: 40,
            })
        );
    }

    #[test]
    fn if_match_of_another_version_fails_the_precondition() {
        let latest = stored(Some(json!({"id": "7", "name": "Ada"})));
        let mut put = submission(Operation::Put(json!({"id": "7", "name": "Ada"})));
        put.if_match = Some(2);
        let error = decide(&model(), &put, Some(&latest), no_stamp).unwrap_err();
        assert!(
            matches!(
                error,
                ApiError::PreconditionFailed {
                    expected: 2,
                    current: 3
                }
            ),
            "{error:?}"
        );
        put.if_match = Some(3);
        assert!(matches!(
            decide(&model(), &put, Some(&latest), no_stamp),
            Ok(Decision::Unchanged(_))
        ));
        // 0: the key must not exist yet.
        put.if_match = Some(0);
        assert!(matches!(
            decide(&model(), &put, None, stamp),
            Ok(Decision::Append { expected: 0, .. })
        ));
    }

    #[test]
    fn an_invalid_state_is_refused_before_its_precondition() {
        let latest = stored(Some(json!({"id": "7", "name": "Ada"})));
        let mut put = submission(Operation::Put(json!({"id": "7", "name": ""})));
        put.if_match = Some(1);
        let error = decide(&model(), &put, Some(&latest), no_stamp).unwrap_err();
        assert_eq!(error.reason(), "schema", "{error:?}");
        let other_key = submission(Operation::Put(json!({"id": "8", "name": "Ada"})));
        let error = decide(&model(), &other_key, None, no_stamp).unwrap_err();
        assert_eq!(error.reason(), "key_mismatch", "{error:?}");
    }

    #[test]
    fn a_batch_is_grouped_by_key_in_submission_order() {
        let item = |key: &str| Submission {
            key: Key::new(key).unwrap(),
            ..submission(Operation::Delete)
        };
        let groups = group_by_key([
            (0, item("b")),
            (2, item("a")),
            (3, item("b")),
            (5, item("c")),
        ]);
        let shape: Vec<Vec<(usize, String)>> = groups
            .iter()
            .map(|group| group.iter().map(|(i, s)| (*i, s.key.to_string())).collect())
            .collect();
        assert_eq!(
            shape,
            [
                vec![(0, "b".to_owned()), (3, "b".to_owned())],
                vec![(2, "a".to_owned())],
                vec![(5, "c".to_owned())],
            ]
        );
    }
}
