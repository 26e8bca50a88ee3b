//! Server-side apply of children and status, always with the one field manager and `force`,
//! so the operator owns exactly the fields it sets and nothing else.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::Children;
use crate::error::Error;
use crate::names::FIELD_MANAGER;

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies one object; returns what the API server stored.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &params(), &Patch::Apply(object))
        .await
        .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))
}

/// Applies a resource's children in dependency order (config before the pods that mount it);
/// returns the stored Deployment, whose status the reconcile reports.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<Deployment, Error> {
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &children.config_map,
    )
    .await?;
    if let Some(service) = &children.service {
        apply(
            &Api::<Service>::namespaced(client.clone(), namespace),
            service,
        )
        .await?;
    }
    apply(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        &children.deployment,
    )
    .await
}

/// Applies `status` to the status subresource of `name`.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &params(), &Patch::Apply(&patch))
        .await
        .map_err(Error::kube(format!(
            "apply status of {} {name}",
            K::kind(&())
        )))?;
    Ok(())
}
