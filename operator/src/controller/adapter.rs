//! Adapter: its Deployment (and a Service for webhooks), status from the adapter's report.

use std::sync::Arc;

use crds::Adapter;
use crds::adapter::validate_adapter;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{now, object_key, referenced_entity};
use crate::apply::{apply_children, apply_status};
use crate::build;
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::events;
use crate::names::{self, RUNTIME_PORT, Role};
use crate::probe;
use crate::status::{self, AdapterReport, Rollout};

/// Reconciles one Adapter.
pub async fn reconcile(adapter: Arc<Adapter>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = adapter.namespace().unwrap_or_default();
    let name = adapter.name_any();
    let api: Api<Adapter> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = adapter.metadata.generation;
    let previous = adapter.status.as_ref();

    let entity = referenced_entity(
        &ctx,
        &namespace,
        validate_adapter(&adapter),
        &adapter.spec.entity,
    )
    .await?;
    let entity = match entity {
        Ok(entity) => entity,
        Err((reason, message)) => {
            let mut status = previous.cloned().unwrap_or_default();
            status.observed_generation = generation;
            status::invalid_conditions(
                &mut status.conditions,
                reason,
                &message,
                generation,
                &now(),
            );
            apply_status(&api, &name, &status).await?;
            events::warning(&ctx, &*adapter, reason, "Validate", message).await;
            return Ok(Action::await_change());
        }
    };

    let children = build::adapter::build(&adapter, &entity, &ctx.settings)?;
    let deployment = apply_children(&ctx.client, &namespace, &children).await?;
    let report = match status_url(&ctx, &adapter, &namespace).await? {
        Some(url) => probe::report::<AdapterReport>(ctx.probe.as_ref(), url).await,
        None => Err("no running adapter pod to ask for its status".to_owned()),
    };
    let status = status::adapter_status(
        previous,
        generation,
        Rollout::of(&deployment),
        report.as_ref().map_err(String::as_str),
        &now(),
    );
    apply_status(&api, &name, &status).await?;
    let observed = previous.and_then(|s| s.observed_generation);
    if observed != generation {
        let (reason, verb) = if observed.is_none() {
            ("Created", "created")
        } else {
            ("Updated", "updated")
        };
        events::normal(
            &ctx,
            &*adapter,
            reason,
            "Reconcile",
            format!(
                "{verb} ConfigMap and Deployment {}",
                names::child_name(&name, Role::Adapter)
            ),
        )
        .await;
    }
    ctx.backoff.reset(&object_key(&*adapter));
    Ok(Action::requeue(REFRESH))
}

/// Where the adapter's `/v1/status` is: its Service for webhooks, else its running pod (a
/// polling adapter serves no traffic, so it gets no Service).
async fn status_url(
    ctx: &Context,
    adapter: &Adapter,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let name = adapter.name_any();
    if build::adapter::serves_traffic(adapter) {
        return Ok(Some(format!(
            "{}/v1/status",
            names::service_url(&name, Role::Adapter, namespace)
        )));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = names::selector_string(&name, Role::Adapter);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list pods of Adapter {name}")))?;
    Ok(list
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
        .next()
        .map(|ip| format!("http://{ip}:{RUNTIME_PORT}/v1/status")))
}
