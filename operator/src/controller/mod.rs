//! The four controllers and how they run: each reconcile is `validate -> build -> apply ->
//! status`, driven by [`driver`] with each kind's own steps in its module; errors back off per
//! object; invalid specs wait for a change.

pub mod adapter;
pub mod driver;
pub mod entity;
pub mod erasure;
pub mod projection;

use std::sync::Arc;

use crds::{Adapter, ConditionStatus, Entity, Erasure, Projection};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::conditions::types;
use crate::context::Context;
use crate::error::Error;
use crate::names;

/// Now, RFC 3339 to the second, as Kubernetes writes its own timestamps (`metav1.Time`).
pub fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// `Kind/namespace/name`, the key of an object's backoff.
pub fn object_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// How soon a reconcile that waits for a step (see [`Error::Waiting`]) looks again.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Backs off a failed object, doubling per consecutive failure up to the cap; a reconcile that
/// only waits for a step looks again after [`WAIT`].
pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    if error.is_waiting() {
        tracing::info!(object = object_key(&*object), %error, "reconcile waits");
        return Action::requeue(WAIT);
    }
    let delay = ctx.backoff.fail(&object_key(&*object));
    tracing::warn!(
        object = object_key(&*object),
        error = process::error_chain(error),
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The dependants (Projections or Adapters) of an Entity, from a controller's cache.
fn dependants<K>(
    store: &kube::runtime::reflector::Store<K>,
    entity: &Entity,
    entity_of: fn(&K) -> &str,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = entity.namespace();
    let name = entity.name_any();
    store
        .state()
        .into_iter()
        .filter(|d| d.namespace() == namespace && entity_of(d) == name)
        .map(|d| ObjectRef::from_obj(&*d))
        .collect()
}

async fn log_result<T: std::fmt::Debug, E: std::error::Error>(
    kind: &'static str,
    result: Result<T, E>,
) {
    match result {
        Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
        Err(error) => tracing::debug!(
            kind,
            error = process::error_chain(&error),
            "reconcile error"
        ),
    }
}

/// Exports the Ready states of the objects in `store` (a controller's cache) as metrics.
fn count_objects<K: driver::Reconciled>(ctx: &Context, store: Store<K>) {
    let states = move || {
        store
            .state()
            .iter()
            .map(|object| {
                let ready = object.status().and_then(|status| {
                    let conditions = driver::ResourceStatus::conditions(status);
                    conditions.iter().find(|c| c.type_ == types::READY)
                });
                match ready.map(|c| c.status) {
                    Some(ConditionStatus::True) => "True",
                    Some(ConditionStatus::False) => "False",
                    _ => "Unknown",
                }
            })
            .collect()
    };
    let kind: &'static str = match K::kind(&()).as_ref() {
        "Entity" => "Entity",
        "Projection" => "Projection",
        _ => "Adapter",
    };
    ctx.metrics.count_objects(kind, Box::new(states));
}

/// Runs the four controllers over `namespace` (every namespace when `None`) until `shutdown`.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = || watcher::Config::default().labels(&names::managed_selector());

    let entities = Controller::new(
        api::<Entity>(&client, ns),
        watcher::Config::default().any_semantic(),
    );
    count_objects(&ctx, entities.store());
    let entities = entities
        .owns(api::<Deployment>(&client, ns), owned())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(driver::reconcile::<Entity>, error_policy, ctx.clone())
        .for_each(|result| log_result("Entity", result));

    let projections = Controller::new(
        api::<Projection>(&client, ns),
        watcher::Config::default().any_semantic(),
    );
    let store = projections.store();
    count_objects(&ctx, store.clone());
    let projections = projections
        .owns(api::<Deployment>(&client, ns), owned())
        .watches(
            api::<Entity>(&client, ns),
            watcher::Config::default().any_semantic(),
            move |entity| dependants(&store, &entity, |p: &Projection| p.spec.entity.as_str()),
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(driver::reconcile::<Projection>, error_policy, ctx.clone())
        .for_each(|result| log_result("Projection", result));

    let adapters = Controller::new(
        api::<Adapter>(&client, ns),
        watcher::Config::default().any_semantic(),
    );
    let store = adapters.store();
    count_objects(&ctx, store.clone());
    let adapters = adapters
        .owns(api::<Deployment>(&client, ns), owned())
        .watches(
            api::<Entity>(&client, ns),
            watcher::Config::default().any_semantic(),
            move |entity| dependants(&store, &entity, |a: &Adapter| a.spec.entity.as_str()),
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(driver::reconcile::<Adapter>, error_policy, ctx.clone())
        .for_each(|result| log_result("Adapter", result));

    // An Erasure follows its Projections by requeueing until Complete: no watch of them.
    let erasures = Controller::new(
        api::<Erasure>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(driver::reconcile::<Erasure>, error_policy, ctx)
    .for_each(|result| log_result("Erasure", result));

    futures::join!(entities, projections, adapters, erasures);
}
