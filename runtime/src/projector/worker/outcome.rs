//! The pure decisions of a worker: what each fetched message becomes (a row, a message to
//! republish, a poison event), where `onError: Stop` cuts a chunk, and what a commit of some
//! items writes and records.

use crds::projection::OnError;
use serde_json::Value as Json;

use super::super::database::{Checkpoint, DeadLetter, Progress, sqlstate};
use super::super::evaluate::run_filters;
use super::super::plan::{Assignments, Output, Plan};
use super::super::rows::{Effect, Erasures, Poison, Projected, effect};
use crate::expr::Evaluator;
use crate::store::Event;

/// A message to republish (NATS sink).
#[derive(Debug, PartialEq)]
pub(super) struct Outbound {
    pub message_id: String,
    pub payload: bytes::Bytes,
    /// The key this republished tombstone erases: its dead letters are scrubbed at commit.
    pub erases: Option<String>,
}

/// One event's outcome in a batch.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Row(Projected),
    Publish(Option<Outbound>),
    Poison(DeadLetter),
}

/// A fetched message and its outcome.
#[derive(Debug, PartialEq)]
pub(super) struct Item {
    pub sequence: u64,
    /// Events left in the partition after this one.
    pub pending: u64,
    /// Kept (cheaply: `Bytes` shares the buffer) for the dead letter of a row Postgres refuses.
    pub payload: bytes::Bytes,
    /// The `traceparent` stored with the event, which its commit continues (ADR 49).
    pub trace: Option<String>,
    pub outcome: Outcome,
}

/// The outcome of the message at `sequence`.
pub(super) fn project(
    plan: &Plan,
    evaluator: &Evaluator,
    sequence: u64,
    payload: &bytes::Bytes,
) -> Outcome {
    let event = match decode(plan, payload) {
        Ok(event) => event,
        Err(error) => {
            let poison = Poison::NotAnEvent(error);
            return Outcome::Poison(
                DeadLetter::new(sequence, None, None, payload.clone(), poison.reason())
                    .caused_by(poison.cause()),
            );
        }
    };
    let result = match &plan.output {
        Output::Postgres(view) => effect(plan, view, evaluator, &event).map(|effect| {
            Outcome::Row(Projected {
                sequence,
                key: event.key.clone(),
                version: event.version,
                type_: event.type_,
                effect,
            })
        }),
        // A tombstone passes whatever the filters say: it tells the subject's readers to
        // forget the key (ADR 75).
        Output::Nats { .. } if event.is_tombstone() => Ok(Outcome::Publish(Some(republished(
            plan,
            &event,
            Assignments::default(),
        )))),
        Output::Nats { .. } => run_filters(plan, evaluator, &event)
            .map_err(Poison::Filter)
            .map(|passed| {
                Outcome::Publish(passed.map(|assigned| republished(plan, &event, assigned)))
            }),
    };
    result.unwrap_or_else(|poison| {
        Outcome::Poison(
            DeadLetter::new(
                sequence,
                Some(event.key.clone()),
                Some(event.version),
                payload.clone(),
                poison.reason(),
            )
            .caused_by(poison.cause()),
        )
    })
}

/// Decodes an event. Where nothing reads `changes` (no `previous` or `event` in the filters,
/// a Postgres sink), they are skipped: they are often the larger half of the payload.
fn decode(plan: &Plan, payload: &[u8]) -> Result<Event, serde_json::Error> {
    if plan.needs.previous || plan.needs.event || matches!(plan.output, Output::Nats { .. }) {
        return serde_json::from_slice(payload);
    }
    Event::from_slice_without_changes(payload)
}

/// The event republished by a NATS sink: the envelope with `set` assignments laid over its
/// state, under the message id `<projection>/<generation>/<key>/<version>`.
fn republished(plan: &Plan, event: &Event, assigned: Assignments) -> Outbound {
    let mut event = event.clone();
    if let Some(Json::Object(state)) = &mut event.state {
        state.extend(assigned);
    }
    Outbound {
        message_id: format!(
            "{}/{}/{}/{}",
            plan.projection, plan.generation, event.key, event.version
        ),
        payload: serde_json::to_vec(&event)
            .expect("an event always serialises")
            .into(),
        erases: event.is_tombstone().then(|| event.key.clone()),
    }
}

/// Under `onError: Stop`, cuts a chunk before its first poison event: the items to commit,
/// and the poison event the partition stops at. Otherwise every item commits.
pub(super) fn split_at_stop(mut items: Vec<Item>, on_error: OnError) -> (Vec<Item>, Option<Item>) {
    if on_error != OnError::Stop {
        return (items, None);
    }
    match items
        .iter()
        .position(|i| matches!(i.outcome, Outcome::Poison(_)))
    {
        Some(at) => {
            let stop = items.split_off(at).into_iter().next();
            (items, stop)
        }
        None => (items, None),
    }
}

/// What committing `items` (in order, not empty) after checkpoint `from` records.
pub(super) fn progress_of(items: &[Item], from: u64) -> Progress {
    Progress {
        sequence: items.last().map_or(from, |i| i.sequence),
        events: items.len() as u64,
        lag: items.last().map_or(0, |i| i.pending),
    }
}

/// Whether an idle partition (nothing more to read) must record that it has caught up: its
/// checkpoint shows a lag, no lag yet, or a failure.
pub(super) fn records_caught_up(checkpoint: &Checkpoint) -> bool {
    checkpoint.lag != Some(0) || checkpoint.failing
}

/// What a partition that has read everything records: its checkpoint, with no lag.
pub(super) fn caught_up(checkpoint: &Checkpoint) -> Progress {
    Progress {
        sequence: checkpoint.sequence,
        events: 0,
        lag: 0,
    }
}

/// What a partition stopping at `poison` records: its checkpoint stays before the poison
/// event, which counts in the lag.
pub(super) fn stopped_at(checkpoint: &Checkpoint, poison: &Item) -> Progress {
    Progress {
        sequence: checkpoint.sequence,
        events: 0,
        lag: poison.pending + 1,
    }
}

/// The reason recorded with a partition stopped at the poison event at `sequence`.
pub(super) fn stop_reason(sequence: u64, dead: &DeadLetter) -> String {
    format!("sequence {sequence}: {}", dead.reason)
}

/// A row Postgres refused with `error`, as the poison event it is. Only a row can be
/// refused; anything else gives the error back.
pub(super) fn rejected(item: Item, error: sqlx::Error) -> Result<Item, sqlx::Error> {
    let Outcome::Row(projected) = item.outcome else {
        return Err(error);
    };
    let code = sqlstate(&error).unwrap_or_default();
    let poison = Poison::Rejected {
        code,
        source: error,
    };
    Ok(Item {
        outcome: Outcome::Poison(
            DeadLetter::new(
                projected.sequence,
                Some(projected.key),
                Some(projected.version),
                item.payload.clone(),
                poison.reason(),
            )
            .caused_by(poison.cause()),
        ),
        ..item
    })
}

/// What a commit of some items writes: rows, messages to publish, dead letters, and the
/// poison events skipped (`onError: Skip`).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sorted<'a> {
    pub rows: Vec<&'a Projected>,
    pub outbound: Vec<&'a Outbound>,
    pub dead_letters: Vec<DeadLetter>,
    pub skipped: Vec<&'a DeadLetter>,
    /// Tombstones met, in either sink.
    pub erased: Erasures,
}

/// Sorts `items` into what their commit writes, honouring `on_error` for poison events
/// (none reaches a commit under `Stop`, which cuts the chunk before them).
pub(super) fn sort(items: &[Item], on_error: OnError) -> Sorted<'_> {
    let mut sorted = Sorted::default();
    for item in items {
        match &item.outcome {
            Outcome::Row(row) => {
                if row.effect == Effect::Erase {
                    sorted.erased.push(&row.key, row.sequence);
                }
                sorted.rows.push(row)
            }
            Outcome::Publish(Some(message)) => {
                if let Some(key) = &message.erases {
                    sorted.erased.push(key, item.sequence);
                }
                sorted.outbound.push(message)
            }
            Outcome::Publish(None) => {}
            Outcome::Poison(letter) => match on_error {
                OnError::Skip => sorted.skipped.push(letter),
                OnError::DeadLetter | OnError::Stop => sorted.dead_letters.push(letter.clone()),
            },
        }
    }
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::evaluate::tests::event;
    use serde_json::json;

    fn plan(filters: &str, sink: &str) -> Plan {
        let yaml = format!(
            "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {{name: p}}\nspec:\n  entity: customer\n  filters: {filters}\n  sink: {sink}\n"
        );
        Plan::new(&serde_yaml::from_str(&yaml).unwrap(), 4).unwrap()
    }

    fn postgres() -> Plan {
        plan(
            r#"[{where: "state.spend > 10"}]"#,
            "{postgres: {view: v, columns: [{name: spend, type: bigint}]}}",
        )
    }

    fn payload(event: &Event) -> bytes::Bytes {
        serde_json::to_vec(event).unwrap().into()
    }

    fn item(sequence: u64, pending: u64, outcome: Outcome) -> Item {
        Item {
            sequence,
            pending,
            payload: bytes::Bytes::from_static(b"{}"),
            trace: None,
            outcome,
        }
    }

    fn poison(sequence: u64) -> Outcome {
        Outcome::Poison(DeadLetter::new(
            sequence,
            None,
            None,
            bytes::Bytes::new(),
            "bad",
        ))
    }

    fn row(sequence: u64) -> Outcome {
        Outcome::Row(Projected {
            sequence,
            key: format!("k{sequence}"),
            version: 1,
            type_: crate::store::EventType::Created,
            effect: Effect::Remove,
        })
    }

    #[test]
    fn a_nats_sink_republishes_a_tombstone_that_its_filters_would_drop_and_marks_it_erasing() {
        let nats = plan(r#"[{where: "state.spend > 10"}]"#, "{nats: {subject: out}}");
        let tombstone = Event {
            type_: crate::store::EventType::Deleted,
            erasure: Some(crate::store::Erasure {
                requested_by: "dpo".into(),
                reason: "ticket".into(),
            }),
            ..event("k", 3, None, None)
        };
        let outcome = project(&nats, &Evaluator::default(), 9, &payload(&tombstone));
        let Outcome::Publish(Some(outbound)) = &outcome else {
            panic!("not republished: {outcome:?}");
        };
        assert_eq!(outbound.erases.as_deref(), Some("k"));
        let items = [item(9, 0, outcome)];
        let sorted = sort(&items, OnError::DeadLetter);
        assert_eq!(sorted.erased.keys, ["k"]);
        assert_eq!(sorted.erased.sequences, [9]);
        let plain = event("j", 1, None, Some(json!({"spend": 1})));
        assert_eq!(
            project(&nats, &Evaluator::default(), 10, &payload(&plain)),
            Outcome::Publish(None)
        );
    }

    #[test]
    fn a_payload_that_is_not_an_event_is_poison_without_key_or_version() {
        let message = bytes::Bytes::from_static(b"not json");
        let Outcome::Poison(dead) = project(&postgres(), &Evaluator::default(), 4, &message) else {
            panic!("not poison");
        };
        assert_eq!((dead.sequence, dead.key, dead.version), (4, None, None));
        assert_eq!(dead.message, message);
        assert!(
            dead.reason
                .starts_with("the payload is not a DreamPipe event: "),
            "{}",
            dead.reason
        );
    }

    #[test]
    fn an_event_becomes_its_row_and_a_failing_filter_makes_it_poison_with_its_key() {
        let plan = postgres();
        let evaluator = Evaluator::default();
        let good = event("a", 2, None, Some(json!({"spend": 12})));
        let Outcome::Row(projected) = project(&plan, &evaluator, 7, &payload(&good)) else {
            panic!("not a row");
        };
        assert_eq!((projected.sequence, projected.key.as_str()), (7, "a"));
        assert_eq!(projected.effect, Effect::Row(vec![json!(12)]));

        let bad = event("b", 3, None, Some(json!({"spend": "lots"})));
        let Outcome::Poison(dead) = project(&plan, &evaluator, 8, &payload(&bad)) else {
            panic!("not poison");
        };
        assert_eq!(
            (dead.sequence, dead.key.as_deref(), dead.version),
            (8, Some("b"), Some(3))
        );
        assert!(
            dead.reason.starts_with("a filter failed"),
            "{}",
            dead.reason
        );
    }

    #[test]
    fn a_nats_sink_republishes_the_state_with_assignments_under_a_stable_id() {
        let plan = plan(
            r#"[{where: "state.spend > 10"}, {set: {doubled: "state.spend * 2"}}]"#,
            "{nats: {subject: out}}",
        );
        let evaluator = Evaluator::default();
        let passing = event("a", 2, None, Some(json!({"spend": 12})));
        let Outcome::Publish(Some(outbound)) = project(&plan, &evaluator, 1, &payload(&passing))
        else {
            panic!("not published");
        };
        assert_eq!(
            outbound.message_id,
            format!("{}/{}/a/2", plan.projection, plan.generation)
        );
        let republished: Event = serde_json::from_slice(&outbound.payload).unwrap();
        assert_eq!(republished.state, Some(json!({"spend": 12, "doubled": 24})));

        let filtered = event("b", 1, None, Some(json!({"spend": 1})));
        assert_eq!(
            project(&plan, &evaluator, 2, &payload(&filtered)),
            Outcome::Publish(None)
        );
    }

    #[test]
    fn stop_cuts_a_chunk_before_its_first_poison_event_and_other_policies_keep_it_whole() {
        let chunk = || {
            vec![
                item(1, 3, row(1)),
                item(2, 2, poison(2)),
                item(3, 1, row(3)),
            ]
        };
        let (commit, stop) = split_at_stop(chunk(), OnError::Stop);
        assert_eq!(commit, vec![item(1, 3, row(1))]);
        assert_eq!(stop, Some(item(2, 2, poison(2))));
        for policy in [OnError::DeadLetter, OnError::Skip] {
            assert_eq!(split_at_stop(chunk(), policy), (chunk(), None));
        }
        let (commit, stop) = split_at_stop(vec![item(4, 0, poison(4))], OnError::Stop);
        assert_eq!((commit, stop), (vec![], Some(item(4, 0, poison(4)))));
    }

    #[test]
    fn a_commit_moves_the_checkpoint_to_its_last_item_and_records_that_items_lag() {
        let items = [item(5, 9, row(5)), item(7, 4, poison(7))];
        assert_eq!(
            progress_of(&items, 4),
            Progress {
                sequence: 7,
                events: 2,
                lag: 4
            }
        );
        let at = Checkpoint {
            sequence: 4,
            lag: Some(6),
            failing: false,
        };
        assert_eq!(
            stopped_at(&at, &item(5, 5, poison(5))),
            Progress {
                sequence: 4,
                events: 0,
                lag: 6
            },
            "the poison event itself is not applied"
        );
        assert_eq!(
            caught_up(&at),
            Progress {
                sequence: 4,
                events: 0,
                lag: 0
            }
        );
    }

    #[test]
    fn an_idle_partition_records_catching_up_only_when_its_checkpoint_says_otherwise() {
        let checkpoint = |lag, failing| Checkpoint {
            sequence: 3,
            lag,
            failing,
        };
        assert!(records_caught_up(&checkpoint(None, false)));
        assert!(records_caught_up(&checkpoint(Some(2), false)));
        assert!(records_caught_up(&checkpoint(Some(0), true)));
        assert!(!records_caught_up(&checkpoint(Some(0), false)));
    }

    #[test]
    fn poison_events_are_dead_lettered_unless_skipped() {
        let items = [item(1, 2, row(1)), item(2, 1, poison(2))];
        for policy in [OnError::DeadLetter, OnError::Stop] {
            let sorted = sort(&items, policy);
            assert_eq!(sorted.rows.len(), 1);
            assert_eq!(sorted.dead_letters.len(), 1);
            assert!(sorted.skipped.is_empty());
        }
        let sorted = sort(&items, OnError::Skip);
        assert!(sorted.dead_letters.is_empty());
        assert_eq!(sorted.skipped.len(), 1);
    }

    #[test]
    fn a_refused_row_becomes_its_dead_letter_and_anything_else_stays_an_error() {
        let refused = rejected(item(6, 0, row(6)), sqlx::Error::Protocol("refused".into()));
        let Ok(Item {
            sequence: 6,
            outcome: Outcome::Poison(dead),
            payload,
            ..
        }) = refused
        else {
            panic!("not poison: {refused:?}");
        };
        assert_eq!((dead.key.as_deref(), dead.version), (Some("k6"), Some(1)));
        assert_eq!(dead.message, payload);
        assert!(
            dead.reason
                .starts_with("the database rejected the row (SQLSTATE )"),
            "{}",
            dead.reason
        );
        assert!(rejected(item(7, 0, poison(7)), sqlx::Error::Protocol("x".into())).is_err());
    }

    #[test]
    fn a_stopped_partition_names_the_sequence_it_stopped_at() {
        let dead = DeadLetter::new(9, None, None, bytes::Bytes::new(), "a filter failed");
        assert_eq!(stop_reason(9, &dead), "sequence 9: a filter failed");
    }
}
