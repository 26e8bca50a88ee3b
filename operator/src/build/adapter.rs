//! An Adapter's children: its ConfigMap, Deployment, and a Service for webhook sources.

use crds::adapter::{FILE_VOLUME_DIR, SourceKind, VolumeKind};
use crds::{Adapter, Entity};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, PersistentVolumeClaimVolumeSource, SecretVolumeSource, Volume,
    VolumeMount,
};

use super::{
    Children, ConfigFiles, IngressPolicy, Owner, RuntimePod, SECRETS_DIR, common_env, config_map,
    entity_document_for_dependants, env, resource_document, runtime_deployment, secret_file,
    service,
};
use crate::build::entity::ENTITY_FILE;
use crate::names::{self, Role};
use crate::settings::RuntimeSettings;
use crate::validate::ValidAdapter;

/// File name of the Adapter in the mounted configuration.
pub const ADAPTER_FILE: &str = "adapter.yaml";

/// The adapter's mounted configuration: the Adapter (less its pod settings and `suspend`,
/// the Deployment's business) and the Entity it feeds.
pub fn adapter_config(adapter: &Adapter, entity: &Entity, owner: &Owner) -> ConfigFiles {
    let mut spec = serde_json::to_value(&adapter.spec).expect("an AdapterSpec serialises");
    if let Some(object) = spec.as_object_mut() {
        object.remove("pod");
        object.remove("suspend");
    }
    ConfigFiles::from([
        (
            ADAPTER_FILE.to_owned(),
            resource_document("Adapter", &owner.name, &owner.namespace, spec),
        ),
        (
            ENTITY_FILE.to_owned(),
            entity_document_for_dependants(entity, &owner.namespace),
        ),
    ])
}

/// Every Secret the Adapter itself references, in the order they appear in its spec.
pub fn referenced_secrets(adapter: &Adapter) -> Vec<String> {
    adapter
        .spec
        .source
        .kinds()
        .into_iter()
        .filter_map(|kind| match kind {
            SourceKind::Http(http) => Some(
                http.token_secret_ref
                    .iter()
                    .chain(http.oauth2.iter().flat_map(|o| {
                        [&o.client_id_ref, &o.client_secret_ref]
                            .into_iter()
                            .chain(o.refresh_token_ref.as_ref())
                    }))
                    .map(|r| r.name.clone())
                    .collect::<Vec<_>>(),
            ),
            SourceKind::Webhook(hook) => Some(
                hook.auth
                    .iter()
                    .map(|a| a.secret_ref.name.clone())
                    .chain(hook.signature.iter().map(|s| s.secret_ref.name.clone()))
                    .collect::<Vec<_>>(),
            ),
            SourceKind::Postgres(postgres) => Some(vec![postgres.url_secret_ref.name.clone()]),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The volume a file source names, mounted read-only at [`FILE_VOLUME_DIR`].
pub fn source_volume(adapter: &Adapter) -> Option<(Volume, VolumeMount)> {
    let volume = adapter.spec.source.file.as_ref()?.volume.as_ref()?;
    let name = "source".to_owned();
    let mut built = Volume {
        name: name.clone(),
        ..Volume::default()
    };
    match volume.kinds().first()? {
        VolumeKind::ConfigMap(config_map) => {
            built.config_map = Some(ConfigMapVolumeSource {
                name: (*config_map).to_owned(),
                ..ConfigMapVolumeSource::default()
            });
        }
        VolumeKind::Secret(secret) => {
            built.secret = Some(SecretVolumeSource {
                secret_name: Some((*secret).to_owned()),
                ..SecretVolumeSource::default()
            });
        }
        VolumeKind::PersistentVolumeClaim(claim) => {
            built.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: (*claim).to_owned(),
                read_only: Some(true),
            });
        }
    }
    let mount = VolumeMount {
        name,
        mount_path: FILE_VOLUME_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    Some((built, mount))
}

/// Whether the adapter receives records over HTTP and so needs a Service.
pub fn serves_traffic(adapter: &Adapter) -> bool {
    adapter.spec.source.webhook.is_some()
}

/// The adapter of a valid Adapter, feeding its Entity's receiver.
pub fn build(valid: &ValidAdapter<'_>, settings: &RuntimeSettings) -> Children {
    let (adapter, entity, owner) = (valid.object, &valid.entity, &valid.owner);
    let files = adapter_config(adapter, entity, owner);
    let mut environment = common_env();
    environment.push(env("DREAMPIPE_ADAPTER", owner.name.clone()));
    environment.push(env(
        "DREAMPIPE_RECEIVER_URL",
        names::service_url(&adapter.spec.entity, Role::Receiver, &owner.namespace),
    ));
    environment.push(env("NATS_URL", settings.nats_url.clone()));
    environment.push(env("DREAMPIPE_SECRETS_DIR", SECRETS_DIR));
    let mut secrets = referenced_secrets(adapter);
    if let Some(auth) = &entity.spec.receiver.auth {
        environment.push(env(
            "DREAMPIPE_RECEIVER_TOKEN_FILE",
            secret_file(&auth.secret_ref.name, &auth.secret_ref.key),
        ));
        secrets.push(auth.secret_ref.name.clone());
    }
    let pod = RuntimePod {
        role: Role::Adapter,
        // An adapter keeps one cursor; two replicas would read every page twice. Suspended,
        // it runs none and keeps everything else (ADR 0053).
        replicas: if adapter.spec.suspend { 0 } else { 1 },
        env: environment,
        secrets,
        volumes: source_volume(adapter).into_iter().collect(),
        overlay: adapter.spec.pod.clone().unwrap_or_default(),
    };
    let mut deployment = runtime_deployment(owner, settings, pod, &files);
    // The receivers' NetworkPolicy lets in the pods of their Entity's adapters (ADR 64).
    if let Some(labels) = deployment
        .spec
        .template
        .metadata
        .as_mut()
        .and_then(|metadata| metadata.labels.as_mut())
    {
        labels.insert(names::ENTITY_LABEL.to_owned(), adapter.spec.entity.clone());
    }
    Children {
        config_map: config_map(owner, Role::Adapter, &files),
        deployment,
        service: serves_traffic(adapter).then(|| service(owner, Role::Adapter)),
        disruption_budget: None,
        network_policy: IngressPolicy::NotApplicable,
    }
}
