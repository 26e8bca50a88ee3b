//! Entity: the Event Receiver's children, status from the receiver, and the stream's fate on
//! deletion (a finalizer while `deletionPolicy: Delete`).

use std::sync::Arc;

use crds::Entity;
use crds::entity::{DeletionPolicy, validate_entity};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};

use super::{now, object_key};
use crate::apply::{apply_children, apply_status};
use crate::build;
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::events;
use crate::names::{self, Role};
use crate::probe;
use crate::status::{self, INVALID_SPEC, ReceiverReport, Rollout};

/// Finalizer that deletes the Entity's stream before the Entity goes.
pub const STREAM_FINALIZER: &str = "dreampipe.io/delete-stream";

/// Reconciles one Entity.
pub async fn reconcile(entity: Arc<Entity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = entity.namespace().unwrap_or_default();
    let api: Api<Entity> = Api::namespaced(ctx.client.clone(), &namespace);
    // Only an Entity whose stream must go carries the finalizer, so a Retain Entity can be
    // deleted even when the operator is not running. One that has it keeps it until deletion.
    let guarded = entity.spec.deletion_policy == DeletionPolicy::Delete
        || entity.finalizers().iter().any(|f| f == STREAM_FINALIZER);
    let key = object_key(&*entity);
    let action = if guarded {
        finalizer(&api, STREAM_FINALIZER, entity, |event| async {
            match event {
                Event::Apply(entity) => apply(entity, &ctx).await,
                Event::Cleanup(entity) => cleanup(entity, &ctx).await,
            }
        })
        .await
        .map_err(|source| Error::Finalizer {
            finalizer: STREAM_FINALIZER,
            source: Box::new(source),
        })?
    } else {
        apply(entity, &ctx).await?
    };
    ctx.backoff.reset(&key);
    Ok(action)
}

async fn apply(entity: Arc<Entity>, ctx: &Context) -> Result<Action, Error> {
    let namespace = entity.namespace().unwrap_or_default();
    let name = entity.name_any();
    let api: Api<Entity> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = entity.metadata.generation;
    let previous = entity.status.as_ref();

    if let Err(invalid) = validate_entity(&entity) {
        let message = status::invalid_message(&invalid);
        let mut status = previous.cloned().unwrap_or_default();
        status.observed_generation = generation;
        status::invalid_conditions(
            &mut status.conditions,
            INVALID_SPEC,
            &message,
            generation,
            &now(),
        );
        apply_status(&api, &name, &status).await?;
        events::warning(ctx, &*entity, INVALID_SPEC, "Validate", message).await;
        return Ok(Action::await_change());
    }

    let children = build::entity::build(&entity, &ctx.settings)?;
    let deployment = apply_children(&ctx.client, &namespace, &children).await?;
    let endpoint = names::service_url(&name, Role::Receiver, &namespace);
    let report =
        probe::report::<ReceiverReport>(ctx.probe.as_ref(), format!("{endpoint}/v1/status")).await;
    let status = status::entity_status(
        previous,
        generation,
        Rollout::of(&deployment),
        report.as_ref().map_err(String::as_str),
        endpoint,
        crds::stream_name(&namespace, &name),
        &now(),
    );
    apply_status(&api, &name, &status).await?;
    if previous.and_then(|s| s.observed_generation) != generation {
        let (reason, verb) = match previous.and_then(|s| s.observed_generation) {
            None => ("Created", "created"),
            Some(_) => ("Updated", "updated"),
        };
        events::normal(
            ctx,
            &*entity,
            reason,
            "Reconcile",
            format!(
                "{verb} ConfigMap, Deployment and Service {}",
                names::child_name(&name, Role::Receiver)
            ),
        )
        .await;
    }
    Ok(Action::requeue(REFRESH))
}

async fn cleanup(entity: Arc<Entity>, ctx: &Context) -> Result<Action, Error> {
    let namespace = entity.namespace().unwrap_or_default();
    let stream = crds::stream_name(&namespace, &entity.name_any());
    // A Retain Entity that still carries the finalizer (its policy changed) keeps its stream.
    if entity.spec.deletion_policy == DeletionPolicy::Delete {
        let existed = ctx.streams.delete_stream(stream.clone()).await?;
        let note = if existed {
            format!("deleted JetStream stream {stream} (deletionPolicy: Delete)")
        } else {
            format!("JetStream stream {stream} was already gone")
        };
        events::normal(ctx, &*entity, "StreamDeleted", "Delete", note).await;
    }
    Ok(Action::await_change())
}
