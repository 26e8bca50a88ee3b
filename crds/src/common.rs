//! Pieces shared by the three kinds: secret references, pod settings, conditions and schema
//! helpers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::validate::{Problems, is_dns_subdomain, is_label_value, is_qualified_name};

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

/// The labels DreamPipe puts on every pod it runs; it selects pods by some of them, so a
/// resource's `spec.pod.podLabels` may not set any.
pub const DREAMPIPE_LABELS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
];

/// The annotation prefix DreamPipe keeps for itself (the config hash that rolls pods).
pub const DREAMPIPE_ANNOTATION_PREFIX: &str = "dreampipe.io/";

/// Pod settings of the Deployment a resource runs, laid over what DreamPipe builds: what a
/// platform team sets on every workload (requests, placement, spread, identity). Fields left
/// out keep DreamPipe's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverlay {
    /// CPU and memory requests and limits of the container; 50m CPU and 64Mi memory requested
    /// and a 512Mi memory limit when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels a node must carry for the pods to be scheduled on it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
    /// Node affinity and pod (anti-)affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over topology domains. Replaces DreamPipe's default (receivers and
    /// projectors spread across nodes, `kubernetes.io/hostname`, `ScheduleAnyway`); an empty
    /// list asks for no spread at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// Annotations added to the pods; keys under `dreampipe.io/` are DreamPipe's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels added to the pods; the `app.kubernetes.io/` labels DreamPipe sets (name, instance,
    /// component, part-of, managed-by) select the pods and cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Secrets (same namespace) used to pull the runtime image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// ServiceAccount the pods run as (the namespace's `default` when omitted). The runtime
    /// never calls the Kubernetes API, so no token is mounted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
}

impl PodOverlay {
    /// Reports every problem of the overlay at `path` (e.g. `spec.pod`): a DreamPipe label or
    /// annotation set, a label or name Kubernetes would refuse.
    pub(crate) fn check(&self, problems: &mut Problems, path: &str) {
        for (key, value) in &self.pod_labels {
            let at = format!("{path}.podLabels[{key:?}]");
            if DREAMPIPE_LABELS.contains(&key.as_str()) {
                problems.add(
                    at,
                    "is set by DreamPipe, which selects the pods by its labels; it cannot be \
                     overridden",
                );
            } else {
                check_label(problems, &at, key, value);
            }
        }
        for key in self.pod_annotations.keys() {
            let at = format!("{path}.podAnnotations[{key:?}]");
            if key.starts_with(DREAMPIPE_ANNOTATION_PREFIX) {
                problems.add(
                    at,
                    format!("keys under {DREAMPIPE_ANNOTATION_PREFIX} are DreamPipe's own"),
                );
            } else if !is_qualified_name(key) {
                problems.add(at, QUALIFIED_NAME);
            }
        }
        for (key, value) in &self.node_selector {
            check_label(
                problems,
                &format!("{path}.nodeSelector[{key:?}]"),
                key,
                value,
            );
        }
        let names = [
            ("priorityClassName", self.priority_class_name.as_deref()),
            ("serviceAccountName", self.service_account_name.as_deref()),
        ];
        for (field, name) in names {
            if let Some(name) = name.filter(|n| !is_dns_subdomain(n)) {
                problems.add(
                    format!("{path}.{field}"),
                    format!("{name:?} {DNS_SUBDOMAIN}"),
                );
            }
        }
        for (i, secret) in self.image_pull_secrets.iter().enumerate() {
            if !is_dns_subdomain(&secret.name) {
                problems.add(
                    format!("{path}.imagePullSecrets[{i}].name"),
                    format!("{:?} {DNS_SUBDOMAIN}", secret.name),
                );
            }
        }
    }
}

const QUALIFIED_NAME: &str = "is not a label key: an optional DNS subdomain prefix and '/', then \
                              1 to 63 letters, digits, '-', '_' or '.', starting and ending \
                              with a letter or digit";
const DNS_SUBDOMAIN: &str = "is not a Kubernetes object name (a DNS subdomain: lowercase \
                             letters, digits, '-' and '.', at most 253)";

fn check_label(problems: &mut Problems, path: &str, key: &str, value: &str) {
    if !is_qualified_name(key) {
        problems.add(path, QUALIFIED_NAME);
    } else if !is_label_value(value) {
        problems.add(
            path,
            format!(
                "{value:?} is not a label value: at most 63 letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit"
            ),
        );
    }
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
