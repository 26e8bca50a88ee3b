//! Server-side apply of children and status, always with the one field manager and `force`,
//! so the operator owns exactly the fields it sets and nothing else.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{Children, IngressPolicy};
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

/// Applies a resource's children in dependency order (config before the pods that mount it,
/// the pods before the budget and the NetworkPolicy that guard them), and deletes the optional children a spec no
/// longer needs (the Service of an Adapter that stopped being a webhook, the budget of a
/// Deployment scaled down to one pod); returns the stored Deployment, whose status the
/// reconcile reports.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<Deployment, Error> {
    // Every child of a resource has the same name.
    let name = children
        .config_map
        .metadata
        .name
        .as_deref()
        .unwrap_or_default();
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &children.config_map,
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    apply_or_delete(&services, name, children.service.as_ref()).await?;
    let deployment = apply(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        &children.deployment,
    )
    .await?;
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    apply_or_delete(&budgets, name, children.disruption_budget.as_ref()).await?;
    let policies = || Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
    match &children.network_policy {
        IngressPolicy::NotApplicable => {}
        IngressPolicy::Applied(policy) => apply(&policies(), policy.as_ref()).await.map(drop)?,
        IngressPolicy::Off => delete(&policies(), name).await.map(drop)?,
    }
    Ok(deployment)
}

/// Applies `wanted`, or deletes `name` when the spec no longer asks for it.
async fn apply_or_delete<K>(api: &Api<K>, name: &str, wanted: Option<&K>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    match wanted {
        Some(object) => apply(api, object).await.map(drop),
        None => delete(api, name).await.map(drop),
    }
}

/// Deletes `name` if it exists; returns whether it did.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("delete {} {name}", K::kind(&())),
            source,
        }),
    }
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
