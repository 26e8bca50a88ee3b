//! What the receiver knows of its Entity, as pure functions: the schema check, where the key
//! is, the nesting bound, and what counts as new information.

use crds::Entity;
use crds::entity::{AfterErasure, ReceiverLimits};
use serde_json::Value;

use crate::config::{name_of, namespace_of};
use crate::store::{Key, KeyError, StreamNames};

pub use crate::problem::Violation;

/// Why a submitted state is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the state does not match the {entity} schema")]
    Schema {
        entity: String,
        violations: Vec<Violation>,
    },
    #[error("the state has no key at {pointer}")]
    MissingKey { pointer: String },
    #[error("the key at {pointer} must be a string or an integer")]
    KeyType { pointer: String },
    #[error(
        "the key in the state ({in_state:?}) differs from the key in the request ({requested:?})"
    )]
    KeyMismatch { in_state: String, requested: String },
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    #[error("the key at {pointer} is invalid: {error}")]
    KeyInState { pointer: String, error: KeyError },
    #[error("the state is nested {depth} levels deep; at most {max} are allowed")]
    TooDeep { depth: usize, max: u32 },
    #[error("the state holds a NUL character (U+0000) at {path:?}")]
    Nul { path: String },
}

/// The Entity as the receiver uses it.
#[derive(Debug)]
pub struct EntityModel {
    names: StreamNames,
    key_pointer: String,
    ignore: Vec<String>,
    validator: jsonschema::Validator,
    schema: Value,
    limits: ReceiverLimits,
    after_erasure: AfterErasure,
}

/// Why an Entity's schema cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the schema of Entity {entity} does not compile: {message}")]
pub struct SchemaError {
    entity: String,
    message: String,
}

impl EntityModel {
    /// Compiles the Entity's schema once; the Entity is assumed validated.
    pub fn new(entity: &Entity) -> Result<Self, SchemaError> {
        let name = name_of(&entity.metadata);
        let validator =
            jsonschema::validator_for(&entity.spec.schema).map_err(|error| SchemaError {
                entity: name.to_owned(),
                message: error.to_string(),
            })?;
        Ok(EntityModel {
            names: StreamNames::new(namespace_of(&entity.metadata), name, entity.spec.partitions),
            key_pointer: entity.spec.key.clone(),
            ignore: entity.spec.ignore.clone(),
            validator,
            schema: entity.spec.schema.clone(),
            limits: entity.spec.receiver.limits.clone(),
            after_erasure: entity.spec.after_erasure,
        })
    }

    pub fn names(&self) -> &StreamNames {
        &self.names
    }

    pub fn limits(&self) -> &ReceiverLimits {
        &self.limits
    }

    /// The Entity's JSON Schema of a state.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// What a submission for an erased key does.
    pub fn after_erasure(&self) -> AfterErasure {
        self.after_erasure
    }

    pub fn ignore(&self) -> &[String] {
        &self.ignore
    }

    /// The key a state carries at the Entity's key pointer.
    pub fn key_of(&self, state: &Value) -> Result<Key, Rejection> {
        let missing = || Rejection::MissingKey {
            pointer: self.key_pointer.clone(),
        };
        let raw = match state.pointer(&self.key_pointer).ok_or_else(missing)? {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            Value::Null => return Err(missing()),
            _ => {
                return Err(Rejection::KeyType {
                    pointer: self.key_pointer.clone(),
                });
            }
        };
        Key::new(raw).map_err(|error| Rejection::KeyInState {
            pointer: self.key_pointer.clone(),
            error,
        })
    }

    /// Checks a complete state: nesting, schema, and (when given) that it carries `requested`.
    pub fn check(&self, state: &Value, requested: Option<&Key>) -> Result<Key, Rejection> {
        let depth = depth(state);
        if depth > self.limits.max_depth as usize {
            return Err(Rejection::TooDeep {
                depth,
                max: self.limits.max_depth,
            });
        }
        if let Some(path) = nul_path(state) {
            return Err(Rejection::Nul { path });
        }
        if !self.validator.is_valid(state) {
            return Err(self.violations(state));
        }
        let key = self.key_of(state)?;
        match requested {
            Some(requested) if *requested != key => Err(Rejection::KeyMismatch {
                in_state: key.to_string(),
                requested: requested.to_string(),
            }),
            _ => Ok(key),
        }
    }

    /// Every schema violation of an invalid state.
    fn violations(&self, state: &Value) -> Rejection {
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(state)
            .map(|error| Violation {
                path: error.instance_path().to_string(),
                message: error.to_string(),
            })
            .collect();
        Rejection::Schema {
            entity: self.names.entity().to_owned(),
            violations,
        }
    }
}

/// The JSON pointer of the first string or field name holding NUL (U+0000), if any: every
/// Postgres sink refuses it in text and JSONB, so it is refused before it reaches a stream.
pub fn nul_path(value: &Value) -> Option<String> {
    // Pointers are built only for a state that holds one: checking is on every submission.
    if !holds_nul(value) {
        return None;
    }
    let mut stack = vec![(value, String::new())];
    while let Some((value, path)) = stack.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return Some(path),
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| (item, format!("{path}/{index}"))),
            ),
            Value::Object(fields) => {
                for (name, field) in fields {
                    let pointer = format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
                    if name.contains('\0') {
                        return Some(pointer);
                    }
                    stack.push((field, pointer));
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether any string or field name in `value` holds NUL (U+0000).
fn holds_nul(value: &Value) -> bool {
    let nul = |text: &str| text.as_bytes().contains(&0);
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) if nul(text) => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => {
                for (name, field) in fields {
                    if nul(name) {
                        return true;
                    }
                    stack.push(field);
                }
            }
            _ => {}
        }
    }
    false
}

/// An `occurredAt` (header or batch field), stored as the producer wrote it once it is known
/// to be an RFC 3339 time; `None` when it is not one.
pub fn occurred_at(text: &str) -> Option<String> {
    crate::store::envelope::parse_rfc3339(text).map(|_| text.to_owned())
}

/// Nesting depth of a JSON value: a scalar is 0, `{}` and `[]` are 1.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(level + 1);
                stack.extend(items.iter().map(|v| (v, level + 1)));
            }
            Value::Object(fields) => {
                deepest = deepest.max(level + 1);
                stack.extend(fields.values().map(|v| (v, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> EntityModel {
        let entity: Entity = serde_yaml::from_str(
            r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: shop}
spec:
  key: /id
  ignore: [/syncedAt]
  receiver: {limits: {maxDepth: 4}}
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: [string, integer]}
      name: {type: string, minLength: 1}
      age: {type: integer, minimum: 0}
      syncedAt: {type: string}
      tags: {type: array}
"#,
        )
        .unwrap();
        EntityModel::new(&entity).unwrap()
    }

    #[test]
    fn schema_violations_list_every_failing_path() {
        let error = model()
            .check(&json!({"id": "1", "name": "", "age": -3}), None)
            .unwrap_err();
        let Rejection::Schema { violations, .. } = error else {
            panic!("{error:?}")
        };
        let mut paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["/age", "/name"]);
    }

    #[test]
    fn integer_keys_are_accepted_as_their_decimal_form() {
        assert_eq!(
            model()
                .check(&json!({"id": 42, "name": "n"}), None)
                .unwrap()
                .as_str(),
            "42"
        );
    }

    #[test]
    fn a_state_for_another_key_is_refused() {
        let requested = Key::new("2").unwrap();
        let error = model()
            .check(&json!({"id": "1", "name": "n"}), Some(&requested))
            .unwrap_err();
        assert!(matches!(error, Rejection::KeyMismatch { .. }), "{error:?}");
    }

    #[test]
    fn a_state_without_its_key_is_refused() {
        let error = model().key_of(&json!({"name": "n"})).unwrap_err();
        assert_eq!(
            error,
            Rejection::MissingKey {
                pointer: "/id".into()
            }
        );
    }

    #[test]
    fn nul_anywhere_in_a_state_is_refused_naming_its_path() {
        let model = model();
        for (state, path) in [
            (json!({"id": "1", "name": "a\u{0}b"}), "/name"),
            (
                json!({"id": "1", "name": "n", "tags": ["x", "\u{0}"]}),
                "/tags/1",
            ),
            (json!({"id": "1", "name": "n", "a/b\u{0}": 1}), "/a~1b\u{0}"),
        ] {
            assert_eq!(
                model.check(&state, None),
                Err(Rejection::Nul { path: path.into() }),
                "{state}"
            );
        }
        assert_eq!(nul_path(&json!({"id": "1", "name": "n"})), None);
    }

    #[test]
    fn occurred_at_must_be_an_rfc3339_time() {
        for good in [
            "2026-01-31T13:00:00+01:00",
            "2026-01-31T12:00:00.250Z",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
        ] {
            assert_eq!(occurred_at(good).as_deref(), Some(good));
        }
        for bad in [
            "",
            "yesterday",
            "2026-01-31",
            "2026-01-31T12:00:00",
            "2026-13-01T00:00:00Z",
            "2026-01-31T12Z",
            "2026-01-31T12:00:00Z[Europe/Paris]",
        ] {
            assert_eq!(occurred_at(bad), None, "{bad}");
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let deep = json!({"id": "1", "name": "n", "tags": [[[["x"]]]]});
        assert_eq!(depth(&deep), 5);
        assert!(matches!(
            model().check(&deep, None),
            Err(Rejection::TooDeep { depth: 5, max: 4 })
        ));
        assert_eq!(depth(&json!("x")), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1]})), 2);
    }
}
