//! `Erasure`: a request to forget one key of an Entity (issue 19, ADR 76). The operator asks
//! the Entity's receiver to write the key's tombstone and purge its events, then follows every
//! Projection of the Entity until each has applied the tombstone, so the Erasure is Complete
//! only when nothing readable holds the key's data.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, conditions_schema};
use crate::validate::{Invalid, Problems};

/// A request to erase one key of an Entity: who asks, which key, and why.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "dreampipe.io",
    version = "v1alpha1",
    kind = "Erasure",
    doc = "An Erasure: one key of an Entity forgotten, in its stream and in every Projection.",
    namespaced,
    status = "ErasureStatus",
    shortname = "era",
    category = "dreampipe",
    printcolumn = r#"{"name":"Entity","type":"string","jsonPath":".spec.entity"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.key"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Scrubbed","type":"string","jsonPath":".status.scrubbed","description":"Projections that hold nothing of the key, of all the Entity's Projections"}"#,
    printcolumn = r#"{"name":"Purged","type":"integer","jsonPath":".status.purgedEvents","priority":1}"#,
    printcolumn = r#"{"name":"Requested By","type":"string","jsonPath":".spec.requestedBy","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an Erasure cannot be changed; create another one"))]
#[serde(rename_all = "camelCase")]
pub struct ErasureSpec {
    /// Name of the Entity (same namespace) whose key is erased.
    #[schemars(length(min = 1, max = 63))]
    pub entity: String,
    /// The key to erase, exactly as submitted (the value at the Entity's key pointer).
    #[schemars(length(min = 1, max = 512))]
    pub key: String,
    /// Who asks: a person, a ticket system, a team. Recorded in the tombstone.
    #[schemars(length(min = 1, max = 253))]
    pub requested_by: String,
    /// Why, e.g. `GDPR art. 17 request #4711`. Recorded in the tombstone.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// Where an Erasure stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ErasurePhase {
    /// Not carried out yet: the Entity or its receiver is not there.
    #[default]
    Pending,
    /// The tombstone is written and the stream purged; Projections are still scrubbing.
    Erasing,
    /// Nothing readable holds the key's data.
    Complete,
    /// It cannot be carried out (the key has no events, the stream denies purge); the
    /// condition says why. Nothing was appended.
    Failed,
}

/// What DreamPipe observed of an Erasure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Complete` (and `Ready`, the same): True once nothing readable holds the key's data;
    /// `Progressing` while under way; `Degraded` once it failed.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Erasing`, `Complete` or `Failed`.
    #[serde(default)]
    pub phase: ErasurePhase,
    /// The tombstone written in the key's place, once the receiver wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Tombstone>,
    /// Events of the key that left the stream.
    #[serde(default)]
    pub purged_events: u64,
    /// `<scrubbed>/<projections>`: the Entity's Projections that hold nothing of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrubbed: Option<String>,
    /// Each Projection of the Entity, and whether it still holds the key's data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub projections: Vec<ProjectionErasure>,
    /// When the stream was purged (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_time: Option<String>,
    /// When the last Projection was scrubbed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// The event that replaced the key's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// The key's version the tombstone holds (one after its last event).
    pub version: u64,
    /// Its stream sequence: a generation that applied it scrubbed the key.
    pub sequence: u64,
    /// The ordering partition of the key.
    pub partition: u32,
}

/// One Projection of the Entity in the erasure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionErasure {
    /// The Projection's name.
    pub name: String,
    /// Every generation (building, live or retired) applied the tombstone, or holds nothing.
    pub scrubbed: bool,
    /// Why not yet, for people: the generations still before the tombstone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Every problem of an Erasure the API server's schema cannot see, each with its path.
pub fn validate_erasure(erasure: &Erasure) -> Result<(), Invalid> {
    let mut problems = Problems::default();
    problems.check_name("metadata.name", erasure.metadata.name.as_deref());
    let spec = &erasure.spec;
    problems.check_reference("spec.entity", &spec.entity);
    if spec.key.is_empty() {
        problems.add("spec.key", "is required");
    } else if spec.key.len() > 512 {
        problems.add(
            "spec.key",
            format!("is {} bytes long; at most 512 are allowed", spec.key.len()),
        );
    } else if spec.key.chars().any(char::is_control) {
        problems.add("spec.key", "must not contain a control character");
    }
    if spec.requested_by.trim().is_empty() {
        problems.add("spec.requestedBy", "must name who asks (it is blank)");
    }
    if spec.reason.trim().is_empty() {
        problems.add("spec.reason", "must say why (it is blank)");
    }
    problems.finish("Erasure", erasure.metadata.name.as_deref())
}

/// The NATS subject a receiver of `entity` in `namespace` answers erasure requests on
/// (request-reply, ADR 76). Outside every stream's `dp.>` subjects.
pub fn erasure_subject(namespace: &str, entity: &str) -> String {
    format!("dreampipe.erasure.{namespace}.{entity}")
}

/// An erasure request sent to a receiver over NATS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErasureCommand {
    pub key: String,
    pub requested_by: String,
    pub reason: String,
}

/// A receiver's answer to an [`ErasureCommand`]: the tombstone, or a problem with the HTTP
/// status the same request would get from its HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErasureReply {
    Erased {
        version: u64,
        sequence: u64,
        partition: u32,
        purged: u64,
    },
    Problem {
        status: u16,
        #[serde(rename = "type")]
        type_: String,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erasure(spec: ErasureSpec) -> Erasure {
        Erasure::new("forget-c-1", spec)
    }

    fn spec() -> ErasureSpec {
        ErasureSpec {
            entity: "customer".into(),
            key: "c-1".into(),
            requested_by: "privacy@example.com".into(),
            reason: "GDPR art. 17".into(),
        }
    }

    #[test]
    fn a_blank_requester_or_reason_is_named_by_path() {
        assert!(validate_erasure(&erasure(spec())).is_ok());
        let blank = ErasureSpec {
            requested_by: "  ".into(),
            reason: String::new(),
            ..spec()
        };
        let problems = validate_erasure(&erasure(blank)).unwrap_err().to_string();
        assert!(problems.contains("spec.requestedBy"), "{problems}");
        assert!(problems.contains("spec.reason"), "{problems}");
    }

    #[test]
    fn replies_read_back_as_written() {
        for reply in [
            ErasureReply::Erased {
                version: 4,
                sequence: 17,
                partition: 2,
                purged: 3,
            },
            ErasureReply::Problem {
                status: 404,
                type_: "not_found".into(),
                detail: "key c-9 has no events to erase".into(),
            },
        ] {
            let text = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<ErasureReply>(&text).unwrap(), reply);
        }
        assert_eq!(
            erasure_subject("shop", "customer"),
            "dreampipe.erasure.shop.customer"
        );
    }
}
