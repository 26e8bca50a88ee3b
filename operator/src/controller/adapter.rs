//! Adapter: its Deployment (and a Service for webhooks), status from the adapter's report.

use std::sync::Arc;

use crds::Adapter;
use crds::adapter::AdapterStatus;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;

use super::driver::{self, Reconciled};
use super::now;
use crate::apply::{apply_children, apply_status};
use crate::build::{self, Owner};
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::names::{self, RUNTIME_PORT, Role};
use crate::probe;
use crate::status::{self, AdapterReport, Rollout};
use crate::validate;

impl Reconciled for Adapter {
    type Status = AdapterStatus;
    const ROLE: Role = Role::Adapter;

    fn status(&self) -> Option<&AdapterStatus> {
        self.status.as_ref()
    }

    async fn apply(self: Arc<Self>, owner: Owner, ctx: Arc<Context>) -> Result<Action, Error> {
        let unresolved = validate::adapter(&self, &owner)?;
        let entity = driver::referenced_entity(&ctx, &owner, &unresolved).await?;
        let valid = unresolved.resolve(entity)?;

        let children = build::adapter::build(&valid, &ctx.settings);
        let deployment = apply_children(&ctx.client, &owner.namespace, &children).await?;
        let rollout = Rollout::of(&deployment);
        // A polling adapter serves no traffic, so it has no Service: its status is read from
        // its running pod, and the pods are listed anyway.
        let (pods, url) = if build::adapter::serves_traffic(&self) {
            let pods = driver::role_pods::<Adapter>(&ctx, &owner, &deployment).await?;
            let service = names::service_url(&owner.name, Role::Adapter, &owner.namespace);
            (pods, Some(format!("{service}/v1/status")))
        } else {
            let listed = driver::list_pods(&ctx, &owner, Role::Adapter).await?;
            (driver::pods_of(rollout, &listed), pod_status_url(&listed))
        };
        let report = match url {
            Some(url) => probe::report::<AdapterReport>(ctx.probe.as_ref(), url).await,
            None => Err("no running adapter pod to ask for its status".to_owned()),
        };
        let status = status::adapter_status(
            self.status.as_ref(),
            self.metadata.generation,
            &pods,
            report.as_ref().map_err(String::as_str),
            self.spec.suspend,
            &now(),
        );
        apply_status(&driver::api::<Adapter>(&ctx, &owner), &owner.name, &status).await?;
        driver::announce(&ctx, &*self, &owner, &children, &pods).await;
        Ok(Action::requeue(REFRESH))
    }
}

/// The `/v1/status` of the first running pod that has an address.
fn pod_status_url(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
        .next()
        .map(|ip| format!("http://{ip}:{RUNTIME_PORT}/v1/status"))
}
