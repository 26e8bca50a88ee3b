//! The receiver's decision and grouping, without a server.

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
            erasure: None,
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
        Decision::Append { event, expected } => (*event, expected),
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
