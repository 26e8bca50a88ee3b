//! An Entity's children: the Event Receiver's ConfigMap, Deployment and Service.

use crds::Entity;

use super::{
    Children, ConfigFiles, RuntimePod, common_env, config_map, disruption_budget, env,
    resource_document, runtime_deployment, secret_file, service,
};
use crate::names::Role;
use crate::settings::RuntimeSettings;
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
    }
}
