//! Pure builders: a validated resource in, the child objects out. No client, no IO; the
//! reconcilers apply what these return, and the tests feed them YAML.

pub mod adapter;
pub mod entity;
pub mod projection;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crds::PodOverlay;

use crate::names::{self, CONFIG_HASH_ANNOTATION, RUNTIME_PORT, Role};
use crate::settings::RuntimeSettings;

/// Where the ConfigMap holding the resources' YAML is mounted; `DREAMPIPE_CONFIG` points here.
pub const CONFIG_DIR: &str = "/etc/dreampipe/config";
/// Where referenced Secrets are mounted, one folder per Secret: `<dir>/<name>/<key>`.
pub const SECRETS_DIR: &str = "/var/run/secrets/dreampipe";
/// The user and group the runtime image runs as (distroless `nonroot`).
pub const RUNTIME_UID: i64 = 65532;

/// The objects one resource owns.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    /// Present for roles that serve traffic or status.
    pub service: Option<Service>,
    /// Present while the Deployment runs more than one pod; deleted when it drops to one.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// The receivers' NetworkPolicy; other roles have none.
    pub network_policy: IngressPolicy,
}

/// Whether a resource's pods are guarded by a NetworkPolicy of the operator's (ADR 64).
#[derive(Clone, Debug, PartialEq)]
pub enum IngressPolicy {
    /// This kind of resource never has one: nothing to apply or delete.
    NotApplicable,
    /// The operator's settings ask for this one.
    Applied(Box<NetworkPolicy>),
    /// The settings turned policies off: one left from before is deleted.
    Off,
}

/// Who a child belongs to: the resource's identity and its controller owner reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub reference: OwnerReference,
}

/// The mounted configuration: file name -> YAML document, as the runtime reads it.
pub type ConfigFiles = BTreeMap<String, String>;

/// A resource as a YAML document the runtime's config loader reads: apiVersion, kind,
/// name, namespace and spec (status and server-managed metadata left out, so they never
/// roll pods).
pub fn resource_document(kind: &str, name: &str, namespace: &str, spec: Value) -> String {
    let document = serde_json::json!({
        "apiVersion": format!("{}/{}", crds::GROUP, crds::VERSION),
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    serde_yaml::to_string(&document).expect("a JSON value is always representable as YAML")
}

/// The hash of the mounted files, over names and contents in name order.
pub fn config_hash(files: &ConfigFiles) -> String {
    let mut bytes = Vec::new();
    for (name, content) in files {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(content.as_bytes());
        bytes.push(0);
    }
    names::fingerprint(&bytes)
}

pub(crate) fn metadata(owner: &Owner, role: Role) -> ObjectMeta {
    ObjectMeta {
        name: Some(names::child_name(&owner.name, role)),
        namespace: Some(owner.namespace.clone()),
        labels: Some(names::labels(&owner.name, role)),
        owner_references: Some(vec![owner.reference.clone()]),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap mounted as the runtime's configuration directory.
pub fn config_map(owner: &Owner, role: Role, files: &ConfigFiles) -> ConfigMap {
    ConfigMap {
        metadata: metadata(owner, role),
        data: Some(files.clone()),
        ..ConfigMap::default()
    }
}

/// A ClusterIP Service on the runtime port, selecting the role's pods.
pub fn service(owner: &Owner, role: Role) -> Service {
    Service {
        metadata: metadata(owner, role),
        spec: Some(ServiceSpec {
            selector: Some(names::selector_labels(&owner.name, role)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(RUNTIME_PORT),
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The node label a replicated role's pods spread across by default.
pub const SPREAD_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// A PodDisruptionBudget letting a voluntary disruption (a node drain) take one of the role's
/// pods at a time, when it runs more than one; `None` for a single pod, whose budget would
/// either block every drain or protect nothing.
pub fn disruption_budget(owner: &Owner, role: Role, replicas: i32) -> Option<PodDisruptionBudget> {
    (replicas > 1).then(|| PodDisruptionBudget {
        metadata: metadata(owner, role),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(&owner.name, role)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// The spread a role's pods get unless their resource names its own: as even as the nodes
/// allow, never unschedulable for it (`ScheduleAnyway`), counted within one rollout's
/// ReplicaSet (`pod-template-hash`) so old pods leaving do not skew the new ones.
pub fn default_spread(owner: &Owner, role: Role) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: SPREAD_TOPOLOGY_KEY.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(LabelSelector {
            match_labels: Some(names::selector_labels(&owner.name, role)),
            match_expressions: None,
        }),
        match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
        ..TopologySpreadConstraint::default()
    }]
}

/// Environment variable with a literal value.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// Environment variable read from a Secret key, so credentials never appear in a pod spec.
pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Environment variable from the pod's own metadata (downward API).
pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The environment every role shares: config dir, listen address, log format, namespace.
pub fn common_env() -> Vec<EnvVar> {
    vec![
        env("DREAMPIPE_CONFIG", CONFIG_DIR),
        env("DREAMPIPE_LISTEN", format!("0.0.0.0:{RUNTIME_PORT}")),
        env("DREAMPIPE_LOG_FORMAT", "json"),
        env_from_field("DREAMPIPE_NAMESPACE", "metadata.namespace"),
    ]
}

/// `env` and, when the operator exports traces to a collector, the same collector for the
/// pod, with the resource it runs for as trace resource attributes (ADR 49).
fn with_traces(mut env: Vec<EnvVar>, owner: &Owner, settings: &RuntimeSettings) -> Vec<EnvVar> {
    if let Some(endpoint) = &settings.otlp_endpoint {
        env.push(self::env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()));
        env.push(self::env(
            "OTEL_RESOURCE_ATTRIBUTES",
            format!(
                "k8s.namespace.name={},dreampipe.resource={}",
                owner.namespace, owner.name
            ),
        ));
    }
    env
}

/// The file a Secret key is mounted at by [`secret_volumes`].
pub fn secret_file(secret: &str, key: &str) -> String {
    format!("{SECRETS_DIR}/{secret}/{key}")
}

/// One read-only volume per Secret name (deduplicated, in name order), mounted at
/// `SECRETS_DIR/<name>/`.
pub fn secret_volumes<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let names: std::collections::BTreeSet<&str> = secrets.into_iter().collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let volume = format!("secret-{i}");
            (
                Volume {
                    name: volume.clone(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.to_owned()),
                        default_mode: Some(0o440),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                VolumeMount {
                    name: volume,
                    mount_path: format!("{SECRETS_DIR}/{secret}"),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            )
        })
        .unzip()
}

/// Requests used when a resource names none: enough to schedule a small runtime pod.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("512Mi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// What differs between the roles' Deployments.
#[derive(Clone, Debug)]
pub struct RuntimePod {
    pub role: Role,
    pub replicas: i32,
    pub env: Vec<EnvVar>,
    pub secrets: Vec<String>,
    /// Volumes of the resource's own (an adapter's file source), each with its mount.
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// The resource's pod settings, laid over what every runtime pod has.
    pub overlay: PodOverlay,
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// A Deployment of the runtime image running one role, with restricted pod security, probes,
/// the config directory, referenced Secrets, the config hash on the pod template, and the
/// resource's pod settings over it all (validation keeps them off DreamPipe's own labels and
/// annotations, and DreamPipe's are written last regardless).
pub fn runtime_deployment(
    owner: &Owner,
    settings: &RuntimeSettings,
    pod: RuntimePod,
    files: &ConfigFiles,
) -> Deployment {
    let role = pod.role;
    let PodOverlay {
        resources,
        node_selector,
        tolerations,
        affinity,
        topology_spread_constraints,
        priority_class_name,
        pod_annotations,
        pod_labels,
        image_pull_secrets,
        service_account_name,
    } = pod.overlay;
    let (mut volumes, mut mounts) = secret_volumes(pod.secrets.iter().map(String::as_str));
    volumes.push(Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::child_name(&owner.name, role),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "config".to_owned(),
        mount_path: CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    // The root filesystem is read-only; a small scratch dir covers libraries that want /tmp.
    volumes.push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    });
    for (volume, mount) in pod.volumes {
        volumes.push(volume);
        mounts.push(mount);
    }

    let container = Container {
        name: role.as_str().to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(vec!["dreampipe".to_owned()]),
        args: Some(vec![role.as_str().to_owned()]),
        env: Some(with_traces(pod.env, owner, settings)),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: i32::from(RUNTIME_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: Some(resources.unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let selector = names::selector_labels(&owner.name, role);
    Deployment {
        metadata: metadata(owner, role),
        spec: DeploymentSpec {
            replicas: Some(pod.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(overlaid(pod_labels, names::labels(&owner.name, role))),
                    annotations: Some(overlaid(
                        pod_annotations,
                        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash(files))]),
                    )),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    affinity,
                    // The default applies at any replica count: scaling must not roll the pods.
                    topology_spread_constraints: match topology_spread_constraints {
                        Some(chosen) => (!chosen.is_empty()).then_some(chosen),
                        None => role.is_replicated().then(|| default_spread(owner, role)),
                    },
                    priority_class_name,
                    image_pull_secrets: (!image_pull_secrets.is_empty())
                        .then_some(image_pull_secrets),
                    service_account_name,
                    volumes: Some(volumes),
                    // The runtime never calls the Kubernetes API: no token in its pods.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUNTIME_UID),
                        run_as_group: Some(RUNTIME_UID),
                        fs_group: Some(RUNTIME_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// `extra` with `ours` written over it: DreamPipe's keys always win.
fn overlaid(
    mut extra: BTreeMap<String, String>,
    ours: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    extra.extend(ours);
    extra
}

/// Why a resource cannot be built into children.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} has no {1} yet: the API server sets it on create")]
    MissingMetadata(String, &'static str),
}

impl Owner {
    /// The owner identity of a stored resource (it needs a name, a namespace and a uid).
    pub fn of<K>(resource: &K) -> Result<Owner, BuildError>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let kind = K::kind(&()).into_owned();
        let meta = resource.meta();
        let name = meta
            .name
            .clone()
            .ok_or_else(|| BuildError::MissingMetadata(kind.clone(), "name"))?;
        let namespace = meta
            .namespace
            .clone()
            .ok_or_else(|| BuildError::MissingMetadata(format!("{kind}/{name}"), "namespace"))?;
        let reference = resource
            .controller_owner_ref(&())
            .ok_or_else(|| BuildError::MissingMetadata(format!("{kind}/{name}"), "uid"))?;
        Ok(Owner {
            name,
            namespace,
            reference,
        })
    }
}

/// An Entity as its dependants (projectors, adapters) see it: the receiver's settings, its pod
/// settings and the deletion policy are left out, so scaling or placing the receiver never
/// rolls a projector.
pub fn entity_document_for_dependants(entity: &crds::Entity, namespace: &str) -> String {
    let mut spec = serde_json::to_value(&entity.spec).expect("an EntitySpec serialises");
    if let Some(object) = spec.as_object_mut() {
        object.remove("receiver");
        object.remove("pod");
        object.remove("deletionPolicy");
    }
    resource_document(
        "Entity",
        entity.metadata.name.as_deref().unwrap_or_default(),
        namespace,
        spec,
    )
}
