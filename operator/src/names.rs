//! Deterministic names, labels and addresses of the children the operator makes. Everything
//! here is a pure function of a resource's name and namespace, so a reconcile can be repeated
//! any number of times and always points at the same objects.

use std::collections::BTreeMap;

/// The port every runtime role serves on: its API (if any), probes, metrics and `/v1/status`.
pub const RUNTIME_PORT: u16 = 8080;
/// Annotation on the pod template carrying the hash of the mounted configuration.
pub const CONFIG_HASH_ANNOTATION: &str = "dreampipe.io/config-hash";
/// Label of an adapter's pods naming the Entity they submit to: the receivers' NetworkPolicy
/// lets those pods in (ADR 64).
pub const ENTITY_LABEL: &str = "dreampipe.io/entity";
/// Label value of `app.kubernetes.io/managed-by` on every child.
pub const MANAGER: &str = "dreampipe-operator";
/// The server-side apply field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "dreampipe-operator";

/// The runtime role a child Deployment runs (the `dreampipe` subcommand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Receiver,
    Projector,
    Adapter,
}

impl Role {
    /// Whether the role may run more than one pod (so gets a spread and a disruption budget):
    /// an adapter keeps one cursor, so it never does.
    pub fn is_replicated(self) -> bool {
        matches!(self, Role::Receiver | Role::Projector)
    }

    /// The subcommand, and the `app.kubernetes.io/component` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Receiver => "receiver",
            Role::Projector => "projector",
            Role::Adapter => "adapter",
        }
    }
}

/// Name of every child (ConfigMap, Deployment, Service) of a resource: `<resource>-<role>`.
pub fn child_name(resource: &str, role: Role) -> String {
    format!("{resource}-{}", role.as_str())
}

/// The label naming a pod's role.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Labels that select a resource's pods; a subset of [`labels`].
pub fn selector_labels(resource: &str, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "dreampipe".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), resource.to_owned()),
        (COMPONENT_LABEL.to_owned(), role.as_str().to_owned()),
    ])
}

/// The `app.kubernetes.io` labels of every child and its pods.
pub fn labels(resource: &str, role: Role) -> BTreeMap<String, String> {
    let mut labels = selector_labels(resource, role);
    labels.insert(
        "app.kubernetes.io/part-of".to_owned(),
        "dreampipe".to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    labels
}

/// The selector in the string form the scale subresource reports (`status.selector`).
pub fn selector_string(resource: &str, role: Role) -> String {
    selector_labels(resource, role)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Label selector of every child the operator manages, for its watches.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGER}")
}

/// In-cluster base URL of a resource's Service.
pub fn service_url(resource: &str, role: Role, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{RUNTIME_PORT}",
        child_name(resource, role)
    )
}

/// FNV-1a (64 bit, [`crds::hash::fnv1a64`]) of `bytes` as 16 hex digits: a stable fingerprint of a configuration, so
/// the pod template changes exactly when the mounted files do.
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("{:016x}", crds::hash::fnv1a64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_named_after_the_resource_and_role() {
        assert_eq!(child_name("customer", Role::Receiver), "customer-receiver");
        assert_eq!(
            child_name("customers", Role::Projector),
            "customers-projector"
        );
        assert_eq!(child_name("crm", Role::Adapter), "crm-adapter");
    }

    #[test]
    fn selector_string_is_sorted_and_matches_the_selector_labels() {
        assert_eq!(
            selector_string("customers", Role::Projector),
            "app.kubernetes.io/component=projector,app.kubernetes.io/instance=customers,\
             app.kubernetes.io/name=dreampipe"
        );
    }

    #[test]
    fn every_label_dreampipe_sets_is_one_a_resource_may_not_override() {
        for key in labels("customers", Role::Projector).keys() {
            assert!(
                crds::common::DREAMPIPE_LABELS.contains(&key.as_str()),
                "{key} is missing from crds::common::DREAMPIPE_LABELS"
            );
        }
        assert!(CONFIG_HASH_ANNOTATION.starts_with(crds::common::DREAMPIPE_ANNOTATION_PREFIX));
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive_to_every_byte() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_ne!(fingerprint(b"a: 1"), fingerprint(b"a: 2"));
        assert_eq!(fingerprint(b"a: 1"), fingerprint(b"a: 1"));
    }
}
