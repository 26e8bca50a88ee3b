//! A Projection's children: one projector Deployment (all replicas share the stream's
//! partitions through leases and handle generations themselves, ADR 0020), its ConfigMap, and
//! a Service for its status and metrics.

use crds::{Entity, Projection};

use super::{
    BuildError, Children, ConfigFiles, Owner, RuntimePod, common_env, config_map,
    entity_document_for_dependants, env, env_from_field, env_from_secret, resource_document,
    runtime_deployment, service,
};
use crate::build::entity::ENTITY_FILE;
use crate::names::Role;
use crate::settings::RuntimeSettings;

/// File name of the Projection in the mounted configuration.
pub const PROJECTION_FILE: &str = "projection.yaml";

/// The projector's mounted configuration: the Projection and the Entity it reads. Only what
/// changes the projector's output is in it, so `replicas` (a Deployment field) and
/// `deletionPolicy` (the operator's business) never roll pods.
pub fn projector_config(projection: &Projection, entity: &Entity, namespace: &str) -> ConfigFiles {
    let mut spec = serde_json::to_value(&projection.spec).expect("a ProjectionSpec serialises");
    if let Some(object) = spec.as_object_mut() {
        object.remove("replicas");
        object.remove("deletionPolicy");
    }
    ConfigFiles::from([
        (
            PROJECTION_FILE.to_owned(),
            resource_document(
                "Projection",
                projection.metadata.name.as_deref().unwrap_or_default(),
                namespace,
                spec,
            ),
        ),
        (
            ENTITY_FILE.to_owned(),
            entity_document_for_dependants(entity, namespace),
        ),
    ])
}

/// The projector of `projection` over `entity`.
pub fn build(
    projection: &Projection,
    entity: &Entity,
    settings: &RuntimeSettings,
) -> Result<Children, BuildError> {
    let owner = Owner::of(projection)?;
    let files = projector_config(projection, entity, &owner.namespace);
    let mut environment = common_env();
    environment.push(env("DREAMPIPE_PROJECTION", owner.name.clone()));
    environment.push(env("NATS_URL", settings.nats_url.clone()));
    environment.push(env_from_secret(
        "DATABASE_URL",
        &settings.database_secret.name,
        &settings.database_secret.key,
    ));
    environment.push(env_from_field("POD_NAME", "metadata.name"));
    let pod = RuntimePod {
        role: Role::Projector,
        replicas: projection.spec.replicas,
        env: environment,
        secrets: Vec::new(),
        resources: None,
    };
    Ok(Children {
        config_map: config_map(&owner, Role::Projector, &files),
        deployment: runtime_deployment(&owner, settings, pod, &files),
        service: Some(service(&owner, Role::Projector)),
    })
}
