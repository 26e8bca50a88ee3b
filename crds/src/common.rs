//! Pieces shared by the three kinds: secret references, conditions and schema helpers.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A key in a Secret of the resource's own namespace. DreamPipe reads secrets by reference only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret whose value is used; `token` when omitted.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "token".to_owned()
}

/// Bearer-token authentication: the accepted tokens are the lines of a Secret's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenAuth {
    /// The Secret key holding the bearer token(s), one per line.
    pub secret_ref: SecretKeyRef,
}

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of a resource's state, as in `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Kind of condition: `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds: True, False or Unknown.
    pub status: ConditionStatus,
    /// One CamelCase word saying why, for machines.
    pub reason: String,
    /// What happened, for people; names the field at fault when the spec is invalid.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339). Unchanged when only reason or message change.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition of `type_`, stamped with `now` (RFC 3339).
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        now: &str,
    ) -> Self {
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: now.to_owned(),
            observed_generation: None,
        }
    }
}

/// Puts `new` into `conditions`, replacing the one of the same type. The transition time of
/// the existing condition is kept unless the status flips, as Kubernetes conventions ask.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// Schema of a `conditions` list: a list-map keyed by `type`, so server-side apply merges
/// conditions one by one instead of replacing the list.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "maxItems": 16,
    })
}

/// Schema of a free-form JSON object kept as it is (an Entity's JSON Schema).
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: ConditionStatus, reason: &str, at: &str) -> Condition {
        Condition::new("Ready", status, reason, "", at)
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = vec![ready(ConditionStatus::False, "Building", "t1")];
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "StillBuilding", "t2"),
        );
        assert_eq!(conditions[0].last_transition_time, "t1");
        assert_eq!(conditions[0].reason, "StillBuilding");
        set_condition(&mut conditions, ready(ConditionStatus::True, "Live", "t3"));
        assert_eq!(conditions[0].last_transition_time, "t3");
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let mut conditions = vec![ready(ConditionStatus::True, "Live", "t1")];
        set_condition(
            &mut conditions,
            Condition::new("Degraded", ConditionStatus::False, "Healthy", "", "t2"),
        );
        assert_eq!(conditions.len(), 2);
    }
}
