//! A Projection's children: one projector Deployment (all replicas share the stream's
//! partitions through leases and handle generations themselves, ADR 0020), its ConfigMap, and
//! a Service for its status and metrics.

use crds::{Entity, Projection, SecretKeyRef};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    Children, ConfigFiles, Owner, RuntimePod, common_env, config_map, disruption_budget,
    entity_document_for_dependants, env, env_from_field, env_from_secret, resource_document,
    runtime_deployment, service,
};
use crate::build::entity::ENTITY_FILE;
use crate::names::{self, Role};
use crate::settings::RuntimeSettings;
use crate::validate::ValidProjection;

/// File name of the Projection in the mounted configuration.
pub const PROJECTION_FILE: &str = "projection.yaml";

/// The projector's mounted configuration: the Projection and the Entity it reads. Only what
/// changes the projector's output is in it, so `replicas` and `pod` (Deployment fields) and
/// `deletionPolicy` (the operator's business) never roll pods through the config hash.
pub fn projector_config(projection: &Projection, entity: &Entity, owner: &Owner) -> ConfigFiles {
    let mut spec = serde_json::to_value(&projection.spec).expect("a ProjectionSpec serialises");
    if let Some(object) = spec.as_object_mut() {
        object.remove("replicas");
        object.remove("deletionPolicy");
        object.remove("pod");
    }
    ConfigFiles::from([
        (
            PROJECTION_FILE.to_owned(),
            resource_document("Projection", &owner.name, &owner.namespace, spec),
        ),
        (
            ENTITY_FILE.to_owned(),
            entity_document_for_dependants(entity, &owner.namespace),
        ),
    ])
}

/// The projector of a valid Projection over its Entity.
pub fn build(valid: &ValidProjection<'_>, settings: &RuntimeSettings) -> Children {
    let owner = &valid.owner;
    let files = projector_config(valid.object, &valid.entity, owner);
    let pod = projector_pod(valid.object, owner, settings);
    Children {
        config_map: config_map(owner, Role::Projector, &files),
        deployment: runtime_deployment(owner, settings, pod, &files),
        service: Some(service(owner, Role::Projector)),
        disruption_budget: disruption_budget(owner, Role::Projector, valid.object.spec.replicas),
        network_policy: super::IngressPolicy::NotApplicable,
    }
}

/// The name of the Job that drops a deleted Projection's view and tables.
pub fn drop_job_name(projection: &str) -> String {
    format!("{projection}-drop")
}

/// The Job that runs `dreampipe projector --drop` for a deleted Projection with
/// `deletionPolicy: Delete`: the projector's own pod (image, env, Secrets, the mounted
/// ConfigMap, security) without probes or ports, labelled so that neither the projector's
/// Service nor its selector counts it. It needs no Entity: the ConfigMap is mounted as the
/// last reconcile wrote it, and any spec (valid or not) can be deleted.
pub fn drop_job(projection: &Projection, owner: &Owner, settings: &RuntimeSettings) -> Job {
    let pod = projector_pod(projection, owner, settings);
    let deployment = runtime_deployment(owner, settings, pod, &ConfigFiles::new());
    let mut template = deployment.spec.template;
    let mut labels = names::labels(&owner.name, Role::Projector);
    labels.insert(names::COMPONENT_LABEL.to_owned(), DROP_COMPONENT.to_owned());
    // The pod keeps the resource's own pod labels and annotations (spec.pod), not the
    // projector's component or its config hash.
    let mut pod_metadata = template.metadata.take().unwrap_or_default();
    let mut pod_labels = pod_metadata.labels.take().unwrap_or_default();
    pod_labels.extend(labels.clone());
    if let Some(annotations) = pod_metadata.annotations.as_mut() {
        annotations.remove(names::CONFIG_HASH_ANNOTATION);
    }
    template.metadata = Some(ObjectMeta {
        labels: Some(pod_labels),
        annotations: pod_metadata.annotations.filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    });
    if let Some(spec) = template.spec.as_mut() {
        spec.restart_policy = Some("Never".to_owned());
        for container in &mut spec.containers {
            container.args = Some(vec![
                Role::Projector.as_str().to_owned(),
                "--drop".to_owned(),
            ]);
            container.readiness_probe = None;
            container.liveness_probe = None;
            container.ports = None;
        }
    }
    Job {
        metadata: ObjectMeta {
            name: Some(drop_job_name(&owner.name)),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner.reference.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(DROP_ATTEMPTS - 1),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Pods the drop Job may start before it counts as failed.
pub const DROP_ATTEMPTS: i32 = 4;
/// The `app.kubernetes.io/component` of the drop Job and its pod.
pub const DROP_COMPONENT: &str = "projector-drop";

/// The Secret key holding the projector's `DATABASE_URL`: the Projection's
/// `spec.database.secretRef`, else the operator's default. Only referenced, never read.
pub fn database_secret(projection: &Projection, settings: &RuntimeSettings) -> SecretKeyRef {
    match &projection.spec.database {
        Some(database) => SecretKeyRef {
            name: database.secret_ref.name.clone(),
            key: database.secret_ref.key.clone(),
        },
        None => settings.database_secret.clone(),
    }
}

/// What the projector's pods (the Deployment's and the drop Job's) run with.
fn projector_pod(projection: &Projection, owner: &Owner, settings: &RuntimeSettings) -> RuntimePod {
    let mut environment = common_env();
    environment.push(env("DREAMPIPE_PROJECTION", owner.name.clone()));
    environment.push(env("NATS_URL", settings.nats_url.clone()));
    let database = database_secret(projection, settings);
    environment.push(env_from_secret(
        "DATABASE_URL",
        &database.name,
        &database.key,
    ));
    environment.push(env_from_field("POD_NAME", "metadata.name"));
    // The namespace's analysts' role: granted its stable views, and nothing else (ADR 61).
    environment.push(env(
        "DREAMPIPE_READER_ROLE",
        crds::projection::reader_role(&owner.namespace),
    ));
    if !settings.reader_members.is_empty() {
        environment.push(env(
            "DREAMPIPE_READER_MEMBERS",
            settings.reader_members.join(","),
        ));
    }
    RuntimePod {
        role: Role::Projector,
        replicas: projection.spec.replicas,
        env: environment,
        secrets: Vec::new(),
        volumes: Vec::new(),
        overlay: projection.spec.pod.clone().unwrap_or_default(),
    }
}
