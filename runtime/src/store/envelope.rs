//! The event envelope (DESIGN §3) and the field-level diff between two states.

use std::borrow::Cow;

use crds::pointer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crds::projection::EventType;

/// One event in an Entity stream: the full state after it, and what changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// UUIDv7: unique and ordered by time.
    pub id: uuid::Uuid,
    /// The Entity's name.
    pub entity: String,
    /// The key of the object.
    pub key: String,
    /// 1, 2, 3… per key, without gaps.
    pub version: u64,
    /// `created`, `updated` or `deleted`.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// The full state after the event; null when deleted.
    pub state: Option<Value>,
    /// Field-level changes from the previous state; enough to rebuild it.
    pub changes: Vec<Change>,
    /// Who submitted it (an adapter's name, an application), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the change happened, as the producer says (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// When the receiver appended it (RFC 3339).
    pub recorded_at: String,
    /// Ties the event to the request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Set on an erasure's tombstone (type `deleted`, no state, no changes): the key's
    /// earlier events were purged from the stream and every reader must forget them (ADR 75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Erasure>,
}

/// Who asked for a key's erasure and why: all a tombstone keeps, none of the erased data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// Who asked (a person, a team, the Erasure resource that asked for it).
    pub requested_by: String,
    /// Why, in the requester's words (e.g. a ticket of the data-protection team).
    pub reason: String,
}

impl Event {
    /// Whether this is an erasure's tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.erasure.is_some()
    }

    /// Decodes an event without its `changes` (skipped by the parser, never built): what
    /// deciding on a state or projecting it needs, for about half the work, since a created
    /// event's changes repeat every field.
    pub fn from_slice_without_changes(payload: &[u8]) -> Result<Event, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            id: uuid::Uuid,
            entity: String,
            key: String,
            version: u64,
            #[serde(rename = "type")]
            type_: EventType,
            state: Option<Value>,
            #[serde(default)]
            source: Option<String>,
            #[serde(default)]
            occurred_at: Option<String>,
            recorded_at: String,
            #[serde(default)]
            correlation_id: Option<String>,
            #[serde(default)]
            erasure: Option<Erasure>,
        }
        let head: Head = serde_json::from_slice(payload)?;
        Ok(Event {
            id: head.id,
            entity: head.entity,
            key: head.key,
            version: head.version,
            type_: head.type_,
            state: head.state,
            changes: Vec::new(),
            source: head.source,
            occurred_at: head.occurred_at,
            recorded_at: head.recorded_at,
            correlation_id: head.correlation_id,
            erasure: head.erasure,
        })
    }
}

/// Reads an RFC 3339 time (`occurredAt`, `asOf`): a date, a time to the second, and `Z` or a
/// numeric offset. An instant beyond what jiff represents (about years -9999 to 9999 in UTC,
/// e.g. `9999-12-31T23:00:00-05:00`) saturates at the nearer end instead of being refused.
pub fn parse_rfc3339(text: &str) -> Option<jiff::Timestamp> {
    // jiff also reads ISO 8601 forms RFC 3339 lacks (`T12` without minutes, `[Europe/Paris]`).
    let b = text.as_bytes();
    let shaped = b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':'
        && !text.contains('[');
    if !shaped {
        return None;
    }
    match text.parse::<jiff::Timestamp>() {
        Ok(time) => Some(time),
        Err(_) => {
            let pieces = jiff::fmt::temporal::Pieces::parse(text).ok()?;
            pieces.time()?;
            pieces.offset()?;
            Some(if pieces.date().year() > 0 {
                jiff::Timestamp::MAX
            } else {
                jiff::Timestamp::MIN
            })
        }
    }
}

/// One changed field. An absent `from` means the field did not exist; an absent `to` means it
/// was removed. Arrays and scalars are replaced whole; objects are compared field by field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// JSON pointer of the field.
    pub path: String,
    /// The previous value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// The changes that turn `previous` into `next` (either may be absent: created, deleted).
pub fn diff(previous: Option<&Value>, next: Option<&Value>) -> Vec<Change> {
    let mut changes = Vec::new();
    diff_at(String::new(), previous, next, &mut changes);
    changes
}

fn diff_at(path: String, from: Option<&Value>, to: Option<&Value>, out: &mut Vec<Change>) {
    match (from, to) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for (field, old) in a {
                let new = b.get(field);
                // Most fields of an update are unchanged: no path is built for them.
                if new != Some(old) {
                    diff_at(child(&path, field), Some(old), new, out);
                }
            }
            for (field, new) in b.iter().filter(|(field, _)| !a.contains_key(*field)) {
                diff_at(child(&path, field), None, Some(new), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
            from: a.cloned(),
            to: b.cloned(),
        }),
    }
}

fn child(path: &str, field: &str) -> String {
    format!("{path}/{}", pointer::escape(field))
}

/// Rebuilds the state before `changes` from the state after them.
pub fn revert(after: Option<&Value>, changes: &[Change]) -> Option<Value> {
    let mut state = after.cloned();
    for change in changes {
        if change.path == "/" {
            state = change.from.clone();
            continue;
        }
        let root = state.get_or_insert_with(|| Value::Object(Map::new()));
        set_pointer(root, &change.path, change.from.clone());
    }
    state
}

/// Sets (or with `None`, removes) the value at a JSON pointer, creating parent objects.
fn set_pointer(root: &mut Value, pointer: &str, value: Option<Value>) {
    let tokens: Vec<String> = pointer::split(pointer).map(Cow::into_owned).collect();
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut node = root;
    for token in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node
            .as_object_mut()
            .expect("made an object above")
            .entry(token.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(object) = node.as_object_mut() {
        match value {
            Some(value) => {
                object.insert(last.clone(), value);
            }
            None => {
                object.remove(last);
            }
        }
    }
}

/// Whether two states carry the same information: equal once the `ignored` pointers are
/// left out. Object key order never matters (JSON objects compare as maps).
pub fn same_information(a: &Value, b: &Value, ignored: &[String]) -> bool {
    if ignored.is_empty() {
        return a == b;
    }
    let tokens: Vec<Vec<String>> = ignored
        .iter()
        .map(|p| pointer::split(p).map(Cow::into_owned).collect())
        .collect();
    let paths: Vec<&[String]> = tokens.iter().map(Vec::as_slice).collect();
    equal_except(a, b, &paths)
}

/// Compares `a` and `b`, skipping the fields at `ignored` (paths relative to them).
fn equal_except(a: &Value, b: &Value, ignored: &[&[String]]) -> bool {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return a == b;
    };
    let skipped = |field: &str| {
        ignored
            .iter()
            .any(|path| path.len() == 1 && path[0] == field)
    };
    let nested = |field: &str| -> Vec<&[String]> {
        ignored
            .iter()
            .filter(|path| path.len() > 1 && path[0] == field)
            .map(|path| &path[1..])
            .collect()
    };
    let fields_match = |x: &Map<String, Value>, y: &Map<String, Value>| {
        x.iter().all(|(field, value)| {
            if skipped(field) {
                return true;
            }
            match y.get(field) {
                Some(other) => {
                    let inner = nested(field);
                    if inner.is_empty() {
                        value == other
                    } else {
                        equal_except(value, other, &inner)
                    }
                }
                None => false,
            }
        })
    };
    fields_match(a, b)
        && b.keys()
            .all(|field| skipped(field) || a.contains_key(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_lists_changed_added_and_removed_fields_by_path() {
        let before = json!({"id": "1", "name": "Ada", "address": {"city": "Lyon", "zip": "69001"}, "tags": ["a"]});
        let after = json!({"id": "1", "name": "Ada L.", "address": {"city": "Oslo"}, "tags": ["a", "b"], "vip": true});
        let changes = diff(Some(&before), Some(&after));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/address/city", "/address/zip", "/name", "/tags", "/vip"]
        );
        assert_eq!(
            changes[1],
            Change {
                path: "/address/zip".into(),
                from: Some(json!("69001")),
                to: None
            }
        );
        assert_eq!(
            changes[4],
            Change {
                path: "/vip".into(),
                from: None,
                to: Some(json!(true))
            }
        );
    }

    #[test]
    fn changes_are_enough_to_rebuild_the_previous_state() {
        let cases = [
            (
                Some(json!({"a": 1, "b": {"c": null, "d/e": [1]}})),
                Some(json!({"a": 2, "b": {"x~y": 3}})),
            ),
            (None, Some(json!({"id": "1"}))),
            (Some(json!({"id": "1"})), None),
            (
                Some(json!({"n": {"deep": {"er": 1}}})),
                Some(json!({"n": 5})),
            ),
            (Some(json!({"n": 5})), Some(json!({"n": {"deep": 1}}))),
        ];
        for (before, after) in cases {
            let changes = diff(before.as_ref(), after.as_ref());
            assert_eq!(
                revert(after.as_ref(), &changes),
                before,
                "changes {changes:?}"
            );
        }
    }

    #[test]
    fn null_and_absent_are_different_values() {
        let changes = diff(Some(&json!({"a": null})), Some(&json!({})));
        assert_eq!(
            changes,
            [Change {
                path: "/a".into(),
                from: Some(Value::Null),
                to: None
            }]
        );
    }

    #[test]
    fn ignored_fields_and_key_order_are_not_information() {
        let ignored = vec!["/lastSyncedAt".to_owned(), "/meta/etag".to_owned()];
        let a: Value = serde_json::from_str(
            r#"{"id":"1","name":"Ada","lastSyncedAt":"t1","meta":{"etag":"x","v":1}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"meta":{"v":1,"etag":"y"},"name":"Ada","id":"1","lastSyncedAt":"t2"}"#,
        )
        .unwrap();
        assert!(same_information(&a, &b, &ignored));
        let without_ignored = json!({"id": "1", "name": "Ada", "meta": {"v": 1}});
        assert!(
            same_information(&a, &without_ignored, &ignored),
            "an ignored field may come and go"
        );
        let c = json!({"id": "1", "name": "Ada", "meta": {"v": 2}});
        assert!(!same_information(&a, &c, &ignored));
        let extra = json!({"id": "1", "name": "Ada", "meta": {"v": 1, "w": 0}});
        assert!(
            !same_information(&extra, &a, &ignored),
            "a field only the new state has is new information"
        );
        assert!(
            !same_information(&a, &extra, &ignored),
            "a field only the old state has is information too"
        );
        assert!(same_information(&json!({"a": 1}), &json!({"a": 1}), &[]));
    }

    #[test]
    fn an_event_decoded_without_changes_is_the_event_minus_its_changes() {
        let state = json!({"id": "1", "name": "Ada"});
        let event = Event {
            id: uuid::Uuid::now_v7(),
            entity: "customer".into(),
            key: "1".into(),
            version: 3,
            type_: EventType::Updated,
            changes: diff(Some(&json!({"id": "1"})), Some(&state)),
            state: Some(state),
            source: Some("crm".into()),
            occurred_at: Some("2026-11-23T09:00:00Z".into()),
            recorded_at: "2026-11-23T10:00:00Z".into(),
            correlation_id: None,
            erasure: None,
        };
        let decoded =
            Event::from_slice_without_changes(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(
            decoded,
            Event {
                changes: Vec::new(),
                ..event
            }
        );
    }

    #[test]
    fn envelope_serialises_with_the_documented_field_names() {
        let event = Event {
            id: uuid::Uuid::now_v7(),
            entity: "customer".into(),
            key: "1".into(),
            version: 1,
            type_: EventType::Created,
            state: Some(json!({"id": "1"})),
            changes: diff(None, Some(&json!({"id": "1"}))),
            source: Some("crm".into()),
            occurred_at: None,
            recorded_at: "2026-11-23T10:00:00Z".into(),
            correlation_id: Some("req-1".into()),
            erasure: None,
        };
        let value = serde_json::to_value(&event).unwrap();
        for field in [
            "id",
            "entity",
            "key",
            "version",
            "type",
            "state",
            "changes",
            "source",
            "recordedAt",
            "correlationId",
        ] {
            assert!(value.get(field).is_some(), "missing {field} in {value}");
        }
        assert_eq!(value["type"], "created");
        assert_eq!(serde_json::from_value::<Event>(value).unwrap(), event);
    }
}
