//! An Entity's children: the Event Receiver's ConfigMap, Deployment and Service.

use crds::Entity;

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    Children, ConfigFiles, IngressPolicy, Owner, RuntimePod, common_env, config_map,
    disruption_budget, env, metadata, resource_document, runtime_deployment, secret_file, service,
};
use crate::names::{self, Role};
use crate::settings::{ReceiverIngress, RuntimeSettings};

/// The label every namespace carries with its own name (Kubernetes sets it).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
use crate::validate::ValidEntity;

/// File name of the Entity in the mounted configuration.
pub const ENTITY_FILE: &str = "entity.yaml";

/// The receiver's mounted configuration: the Entity's own YAML, less its pod settings (they
/// are the Deployment's business, not the receiver's), with the operator's default stream
/// replicas where the Entity names none.
pub fn receiver_config(
    entity: &Entity,
    name: &str,
    namespace: &str,
    settings: &RuntimeSettings,
) -> ConfigFiles {
    let mut entity_spec = entity.spec.clone();
    entity_spec
        .stream
        .replicas
        .get_or_insert(settings.default_stream_replicas);
    let mut spec = serde_json::to_value(&entity_spec).expect("an EntitySpec serialises");
    if let Some(object) = spec.as_object_mut() {
        object.remove("pod");
    }
    ConfigFiles::from([(
        ENTITY_FILE.to_owned(),
        resource_document("Entity", name, namespace, spec),
    )])
}

/// The Event Receiver of a valid Entity.
pub fn build(valid: &ValidEntity<'_>, settings: &RuntimeSettings) -> Children {
    let (entity, owner) = (valid.object, &valid.owner);
    let files = receiver_config(entity, &owner.name, &owner.namespace, settings);
    let receiver = &entity.spec.receiver;
    let mut environment = common_env();
    environment.push(env("DREAMPIPE_ENTITY", owner.name.clone()));
    environment.push(env("NATS_URL", settings.nats_url.clone()));
    let mut secrets = Vec::new();
    if let Some(auth) = &receiver.auth {
        environment.push(env(
            "DREAMPIPE_TOKENS_FILE",
            secret_file(&auth.secret_ref.name, &auth.secret_ref.key),
        ));
        secrets.push(auth.secret_ref.name.clone());
    }
    let pod = RuntimePod {
        role: Role::Receiver,
        replicas: receiver.replicas,
        env: environment,
        secrets,
        volumes: Vec::new(),
        overlay: entity.spec.receiver_pod(),
    };
    Children {
        config_map: config_map(owner, Role::Receiver, &files),
        deployment: runtime_deployment(owner, settings, pod, &files),
        service: Some(service(owner, Role::Receiver)),
        disruption_budget: disruption_budget(owner, Role::Receiver, receiver.replicas),
        network_policy: match &settings.receiver_ingress {
            Some(ingress) => {
                IngressPolicy::Applied(Box::new(receiver_network_policy(owner, ingress)))
            }
            None => IngressPolicy::Off,
        },
    }
}

fn match_labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        match_expressions: None,
    })
}

/// The receivers' NetworkPolicy: their port is open to the Entity's adapters, the operator and
/// the namespaces `ingress` lists, and to nothing else (kubelet probes are not subject to it).
pub fn receiver_network_policy(owner: &Owner, ingress: &ReceiverIngress) -> NetworkPolicy {
    let mut from = vec![
        NetworkPolicyPeer {
            pod_selector: match_labels(&[
                (names::COMPONENT_LABEL, Role::Adapter.as_str()),
                ("app.kubernetes.io/managed-by", names::MANAGER),
                (names::ENTITY_LABEL, &owner.name),
            ]),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            namespace_selector: match_labels(&[(
                NAMESPACE_NAME_LABEL,
                &ingress.operator_namespace,
            )]),
            pod_selector: match_labels(&[
                ("app.kubernetes.io/name", "dreampipe"),
                (names::COMPONENT_LABEL, "operator"),
            ]),
            ..NetworkPolicyPeer::default()
        },
    ];
    if !ingress.from_namespaces.is_empty() {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: NAMESPACE_NAME_LABEL.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(ingress.from_namespaces.clone()),
                }]),
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    NetworkPolicy {
        metadata: metadata(owner, Role::Receiver),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(&owner.name, Role::Receiver)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String("http".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    }
}
