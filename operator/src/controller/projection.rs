//! Projection: one projector Deployment whose replicas share the stream's partitions and swap
//! generations themselves (ADR 0020); status from the projector's report.

use std::sync::Arc;

use crds::Projection;
use crds::projection::{ProjectionDeletionPolicy, validate_projection};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};

use super::{now, object_key, referenced_entity};
use crate::apply::{apply, apply_children, apply_status};
use crate::build;
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::events;
use crate::names::{self, Role};
use crate::probe;
use crate::status::{self, ProjectorReport, Rollout};

/// Finalizer that drops the Projection's view and tables before the Projection goes.
pub const VIEWS_FINALIZER: &str = "dreampipe.io/drop-views";

/// Reconciles one Projection. Deleting it removes its children through their owner
/// references; with `deletionPolicy: Delete` its view and tables are dropped first (ADR 0021).
pub async fn reconcile(projection: Arc<Projection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = projection.namespace().unwrap_or_default();
    let api: Api<Projection> = Api::namespaced(ctx.client.clone(), &namespace);
    // As on Entities: only a Projection whose views must go carries the finalizer.
    let guarded = projection.spec.deletion_policy == ProjectionDeletionPolicy::Delete
        || projection.finalizers().iter().any(|f| f == VIEWS_FINALIZER);
    if !guarded {
        return apply_projection(projection, ctx).await;
    }
    finalizer(&api, VIEWS_FINALIZER, projection, |event| async {
        match event {
            Event::Apply(projection) => apply_projection(projection, ctx.clone()).await,
            Event::Cleanup(projection) => drop_views(projection, &ctx).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        finalizer: VIEWS_FINALIZER,
        source: Box::new(source),
    })
}

/// Drops a deleted Projection's view and tables, one step per reconcile: the projector
/// Deployment goes first (a running replica would build its generation again), then, once no
/// projector pod is left, the drop Job runs; the finalizer is released when it succeeded.
async fn drop_views(projection: Arc<Projection>, ctx: &Context) -> Result<Action, Error> {
    if projection.spec.deletion_policy != ProjectionDeletionPolicy::Delete {
        return Ok(Action::await_change()); // the policy changed to Retain: keep the views
    }
    let namespace = projection.namespace().unwrap_or_default();
    let name = projection.name_any();
    let projector = names::child_name(&name, Role::Projector);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    match deployments
        .delete(&projector, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => {
            return Err(Error::Kube {
                action: format!("delete Deployment {projector}"),
                source,
            });
        }
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = names::selector_string(&name, Role::Projector);
    let running = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list the pods of {projector}")))?
        .items
        .len();
    if running > 0 {
        return Err(Error::Waiting(format!(
            "{running} projector pod(s) of {name} still running; the views are dropped after they stop"
        )));
    }
    let job = build::projection::drop_job(&projection, &ctx.settings)?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let stored = apply(&jobs, &job).await?;
    let status = stored.status.unwrap_or_default();
    if status.succeeded.unwrap_or(0) > 0 {
        let view = projection
            .spec
            .sink
            .postgres
            .as_ref()
            .map_or_else(|| "no view".to_owned(), |p| format!("view {}", p.view));
        events::normal(
            ctx,
            &*projection,
            "ViewsDropped",
            "Delete",
            format!("dropped {view} and its tables (deletionPolicy: Delete)"),
        )
        .await;
        return Ok(Action::await_change());
    }
    if status.failed.unwrap_or(0) >= build::projection::DROP_ATTEMPTS {
        let message = format!(
            "Job {} failed {} times; its pods' logs say why. Fix the cause and delete the Job to \
             try again, or set deletionPolicy: Retain to keep the views",
            build::projection::drop_job_name(&name),
            build::projection::DROP_ATTEMPTS
        );
        events::warning(ctx, &*projection, "DropFailed", "Delete", message.clone()).await;
        return Err(Error::Waiting(message));
    }
    Err(Error::Waiting(format!(
        "Job {} is dropping the views of {name}",
        build::projection::drop_job_name(&name)
    )))
}

async fn apply_projection(projection: Arc<Projection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = projection.namespace().unwrap_or_default();
    let name = projection.name_any();
    let api: Api<Projection> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = projection.metadata.generation;
    let previous = projection.status.as_ref();

    let entity = referenced_entity(
        &ctx,
        &namespace,
        validate_projection(&projection),
        &projection.spec.entity,
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
            events::warning(&ctx, &*projection, reason, "Validate", message).await;
            // Fixed by editing this Projection or by the Entity appearing or changing; both
            // trigger a reconcile (the controller watches Entities).
            return Ok(Action::await_change());
        }
    };

    let children = build::projection::build(&projection, &entity, &ctx.settings)?;
    let deployment = apply_children(&ctx.client, &namespace, &children).await?;
    let url = format!(
        "{}/v1/status",
        names::service_url(&name, Role::Projector, &namespace)
    );
    let report = probe::report::<ProjectorReport>(ctx.probe.as_ref(), url).await;
    let status = status::projection_status(
        previous,
        generation,
        Rollout::of(&deployment),
        report.as_ref().map_err(String::as_str),
        names::selector_string(&name, Role::Projector),
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
            &*projection,
            reason,
            "Reconcile",
            format!(
                "{verb} ConfigMap, Deployment and Service {}",
                names::child_name(&name, Role::Projector)
            ),
        )
        .await;
    }
    let before = previous.and_then(|s| s.active_generation.as_deref());
    if let (Some(before), Some(after)) = (before, status.active_generation.as_deref())
        && before != after
    {
        events::normal(
            &ctx,
            &*projection,
            "GenerationSwapped",
            "Swap",
            format!(
                "view {} now served by generation {after} (was {before})",
                status.view.as_deref().unwrap_or_default()
            ),
        )
        .await;
    }
    ctx.backoff.reset(&object_key(&*projection));
    Ok(Action::requeue(REFRESH))
}
