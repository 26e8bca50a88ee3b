//! The reconcile every kind shares: the owner identity first, the finalizer when the kind
//! needs one, then the kind's own `apply` or `cleanup`, and the backoff reset on success. The
//! steps kinds share inside `apply` are here too, so each is written once: reporting a
//! rejected spec, reading the role's pods, announcing a rollout.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crds::{AdapterStatus, Condition, Entity, EntityStatus, ErasureStatus, ProjectionStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{now, object_key};
use crate::apply::apply_status;
use crate::build::{Children, Owner};
use crate::conditions::{actions, reasons, types};
use crate::context::Context;
use crate::error::Error;
use crate::events;
use crate::metrics::Outcome;
use crate::names::{self, Role};
use crate::status::{self, Pods, Rollout, pods::problem};
use crate::validate::{Rejection, Unresolved};

/// What the driver needs of a kind's status: its conditions and observed generation.
pub trait ResourceStatus: Clone + Default + Serialize + Send + Sync {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation(&self) -> Option<i64>;
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

macro_rules! resource_status {
    ($($status:ty),*) => {$(
        impl ResourceStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    )*};
}

resource_status!(EntityStatus, ProjectionStatus, AdapterStatus, ErasureStatus);

/// A kind the driver reconciles.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Status: ResourceStatus;

    /// The runtime role its children run.
    const ROLE: Role;

    fn status(&self) -> Option<&Self::Status>;

    /// The finalizer the object carries, or must carry while its policy asks for a cleanup.
    fn finalizer(&self) -> Option<&'static str> {
        None
    }

    /// Validates, builds, applies and reports the object's status. A rejected spec is returned
    /// as [`Error::Rejected`] (with `?`), and the driver reports it.
    fn apply(
        self: Arc<Self>,
        owner: Owner,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send;

    /// Cleans up after a deleted object before its finalizer is released.
    fn cleanup(
        self: Arc<Self>,
        _owner: Owner,
        _ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send {
        async { Ok(Action::await_change()) }
    }
}

/// Reconciles one object of kind `K`, in a span naming it, counted and timed.
pub async fn reconcile<K: Reconciled>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let kind = K::kind(&());
    let span = tracing::info_span!(
        "reconcile",
        kind = kind.as_ref(),
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
    );
    let started = Instant::now();
    let result = run_steps(object, ctx.clone()).instrument(span).await;
    let outcome = match &result {
        Ok(_) => Outcome::Success,
        Err(error) if error.is_waiting() => Outcome::Waiting,
        Err(error) => Outcome::Failed(error.category()),
    };
    ctx.metrics.reconciled(&kind, outcome, started.elapsed());
    result
}

async fn run_steps<K: Reconciled>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::of(&*object)?;
    let key = object_key(&*object);
    let action = match object.finalizer() {
        None => apply_or_report(object, owner, ctx.clone()).await?,
        Some(name) => {
            let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            finalizer(&api, name, object, |event| async {
                match event {
                    Event::Apply(object) => apply_or_report(object, owner, ctx.clone()).await,
                    Event::Cleanup(object) => object.cleanup(owner, ctx.clone()).await,
                }
            })
            .await
            .map_err(|source| Error::Finalizer {
                finalizer: name,
                source: Box::new(source),
            })?
        }
    };
    ctx.backoff.reset(&key);
    Ok(action)
}

/// The kind's `apply`, with a rejected spec reported instead of failed.
async fn apply_or_report<K: Reconciled>(
    object: Arc<K>,
    owner: Owner,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match object.clone().apply(owner.clone(), ctx.clone()).await {
        Err(Error::Rejected(rejection)) => report_invalid(&ctx, &*object, &owner, rejection).await,
        done => done,
    }
}

/// Reports a rejected spec: Ready=False and Degraded with the reason and the fields at
/// fault, a Warning Event; nothing is applied, and the object waits for a change (an edit of
/// it, or of the Entity it reads: the controllers watch Entities).
async fn report_invalid<K: Reconciled>(
    ctx: &Context,
    object: &K,
    owner: &Owner,
    rejection: Rejection,
) -> Result<Action, Error> {
    ctx.metrics.rejected(&K::kind(&()), rejection.reason);
    let generation = object.meta().generation;
    let mut status = object.status().cloned().unwrap_or_default();
    status.set_observed_generation(generation);
    status::invalid_conditions(
        status.conditions_mut(),
        rejection.reason,
        &rejection.message,
        generation,
        &now(),
    );
    apply_status(&api::<K>(ctx, owner), &owner.name, &status).await?;
    events::warning(
        ctx,
        object,
        rejection.reason,
        actions::VALIDATE,
        rejection.message,
    )
    .await;
    Ok(Action::await_change())
}

/// The Entity a resource with a valid spec refers to, if it exists in the owner's namespace.
pub async fn referenced_entity<K>(
    ctx: &Context,
    owner: &Owner,
    unresolved: &Unresolved<'_, K>,
) -> Result<Option<Entity>, Error> {
    let name = unresolved.entity_name();
    Api::<Entity>::namespaced(ctx.client.clone(), &owner.namespace)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get Entity {name}")))
}

/// The pods of the owner's role.
pub async fn list_pods(ctx: &Context, owner: &Owner, role: Role) -> Result<Vec<Pod>, Error> {
    let selector = names::selector_string(&owner.name, role);
    let list = Api::<Pod>::namespaced(ctx.client.clone(), &owner.namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "list the pods of {}",
            names::child_name(&owner.name, role)
        )))?;
    Ok(list.items)
}

/// The rollout of the role's Deployment and, while pods are not all ready, the first problem
/// one of them reports (read only then: a healthy reconcile lists no pods).
pub async fn role_pods<K: Reconciled>(
    ctx: &Context,
    owner: &Owner,
    deployment: &Deployment,
) -> Result<Pods, Error> {
    let rollout = Rollout::of(deployment);
    if rollout.all_ready() {
        return Ok(Pods {
            rollout,
            problem: None,
        });
    }
    let pods = list_pods(ctx, owner, K::ROLE).await?;
    Ok(pods_of(rollout, &pods))
}

/// [`Pods`] from a rollout and the pods already listed.
pub fn pods_of(rollout: Rollout, pods: &[Pod]) -> Pods {
    Pods {
        rollout,
        problem: (!rollout.all_ready()).then(|| problem(pods)).flatten(),
    }
}

/// The Events of a reconcile that applied children: Created or Updated when the spec's
/// generation is new to the status, and a Warning when pods start failing for a new reason.
pub async fn announce<K: Reconciled>(
    ctx: &Context,
    object: &K,
    owner: &Owner,
    children: &Children,
    pods: &Pods,
) {
    let previous = object.status();
    let observed = previous.and_then(ResourceStatus::observed_generation);
    if observed != object.meta().generation {
        let (reason, verb) = match observed {
            None => (reasons::CREATED, "created"),
            Some(_) => (reasons::UPDATED, "updated"),
        };
        let kinds = if children.service.is_some() {
            "ConfigMap, Deployment and Service"
        } else {
            "ConfigMap and Deployment"
        };
        let note = format!("{verb} {kinds} {}", names::child_name(&owner.name, K::ROLE));
        events::normal(ctx, object, reason, actions::RECONCILE, note).await;
    }
    if let Some(problem) = &pods.problem {
        let was = previous
            .and_then(|s| s.conditions().iter().find(|c| c.type_ == types::READY))
            .map(|c| c.reason.as_str());
        if was != Some(problem.reason.as_str()) {
            let note = format!("{problem}");
            events::warning(ctx, object, &problem.reason, actions::RECONCILE, note).await;
        }
    }
}

/// The namespaced API of `K` in the owner's namespace.
pub fn api<K: Reconciled>(ctx: &Context, owner: &Owner) -> Api<K> {
    Api::namespaced(ctx.client.clone(), &owner.namespace)
}
