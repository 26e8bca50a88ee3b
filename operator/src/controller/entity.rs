//! Entity: the Event Receiver's children, status from the receiver, and the stream's fate on
//! deletion (a finalizer while `deletionPolicy: Delete`).

use std::sync::Arc;

use crds::Entity;
use crds::entity::{DeletionPolicy, EntityStatus};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::driver::{self, Reconciled};
use super::now;
use crate::apply::{apply_children, apply_status};
use crate::build::{self, Owner};
use crate::conditions::{actions, reasons};
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::events;
use crate::names::{self, Role};
use crate::probe;
use crate::status::{self, ReceiverReport};
use crate::validate;

/// Finalizer that deletes the Entity's stream before the Entity goes.
pub const STREAM_FINALIZER: &str = "dreampipe.io/delete-stream";

impl Reconciled for Entity {
    type Status = EntityStatus;
    const ROLE: Role = Role::Receiver;

    fn status(&self) -> Option<&EntityStatus> {
        self.status.as_ref()
    }

    /// Only an Entity whose stream must go carries the finalizer, so a Retain Entity can be
    /// deleted even when the operator is not running. One that has it keeps it until deletion.
    fn finalizer(&self) -> Option<&'static str> {
        let guarded = self.spec.deletion_policy == DeletionPolicy::Delete
            || self.finalizers().iter().any(|f| f == STREAM_FINALIZER);
        guarded.then_some(STREAM_FINALIZER)
    }

    async fn apply(self: Arc<Self>, owner: Owner, ctx: Arc<Context>) -> Result<Action, Error> {
        let valid = validate::entity(&self, &owner)?;
        let owner = &valid.owner;
        let children = build::entity::build(&valid, &ctx.settings);
        let deployment = apply_children(&ctx.client, &owner.namespace, &children).await?;
        let pods = driver::role_pods::<Entity>(&ctx, owner, &deployment).await?;
        let endpoint = names::service_url(&owner.name, Role::Receiver, &owner.namespace);
        let report =
            probe::report::<ReceiverReport>(ctx.probe.as_ref(), format!("{endpoint}/v1/status"))
                .await;
        let status = status::entity_status(
            self.status.as_ref(),
            self.metadata.generation,
            &pods,
            report.as_ref().map_err(String::as_str),
            endpoint,
            crds::stream_name(&owner.namespace, &owner.name),
            &now(),
        );
        apply_status(&driver::api::<Entity>(&ctx, owner), &owner.name, &status).await?;
        driver::announce(&ctx, &*self, owner, &children, &pods).await;
        Ok(Action::requeue(REFRESH))
    }

    async fn cleanup(self: Arc<Self>, owner: Owner, ctx: Arc<Context>) -> Result<Action, Error> {
        // A Retain Entity that still carries the finalizer (its policy changed) keeps its stream.
        if self.spec.deletion_policy == DeletionPolicy::Delete {
            let stream = crds::stream_name(&owner.namespace, &owner.name);
            let existed = ctx.streams.delete_stream(stream.clone()).await?;
            let note = if existed {
                format!("deleted JetStream stream {stream} (deletionPolicy: Delete)")
            } else {
                format!("JetStream stream {stream} was already gone")
            };
            events::normal(&ctx, &*self, reasons::STREAM_DELETED, actions::DELETE, note).await;
        }
        Ok(Action::await_change())
    }
}
