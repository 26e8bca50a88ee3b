//! Projection: one projector Deployment whose replicas share the stream's partitions and swap
//! generations themselves (ADR 0020); status from the projector's report.

use std::sync::Arc;

use crds::Projection;
use crds::projection::validate_projection;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{now, object_key, referenced_entity};
use crate::apply::{apply_children, apply_status};
use crate::build;
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::events;
use crate::names::{self, Role};
use crate::probe;
use crate::status::{self, ProjectorReport, Rollout};

/// Reconciles one Projection. Deleting it removes its children through their owner
/// references; its views stay in Postgres (there is no policy field for them yet, ADR 0021).
pub async fn reconcile(projection: Arc<Projection>, ctx: Arc<Context>) -> Result<Action, Error> {
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
