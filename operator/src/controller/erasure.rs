//! Erasure: one key of an Entity forgotten (ADR 75, 76). The operator asks a receiver of the
//! Entity over NATS to write the key's tombstone and purge its events, then follows every
//! Projection of the Entity until each generation has applied the tombstone. Complete only
//! when nothing readable holds the key's data; a request that cannot be carried out fails
//! without appending anything.

use std::sync::Arc;
use std::time::Duration;

use crds::common::set_condition;
use crds::erasure::{
    ErasureCommand, ErasurePhase, ErasureReply, ErasureStatus, Tombstone, validate_erasure,
};
use crds::{ConditionStatus, Entity, Erasure, Projection};
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::driver::{self, Reconciled};
use super::now;
use crate::apply::apply_status;
use crate::build::Owner;
use crate::conditions::{actions, reasons, types};
use crate::context::Context;
use crate::error::Error;
use crate::events;
use crate::names::{self, Role};
use crate::probe;
use crate::status::ProjectorReport;
use crate::status::erasure::projection_erasure;
use crate::validate;

/// How soon an Erasure under way looks at its Projections (or its receiver) again.
pub const PROGRESS: Duration = Duration::from_secs(5);

impl Reconciled for Erasure {
    type Status = ErasureStatus;
    /// The role that carries an erasure out.
    const ROLE: Role = Role::Receiver;

    fn status(&self) -> Option<&ErasureStatus> {
        self.status.as_ref()
    }

    async fn apply(self: Arc<Self>, owner: Owner, ctx: Arc<Context>) -> Result<Action, Error> {
        let previous = self.status.clone().unwrap_or_default();
        // Spec is immutable (CEL), so a finished Erasure has nothing left to do.
        if matches!(
            previous.phase,
            ErasurePhase::Complete | ErasurePhase::Failed
        ) {
            return Ok(Action::await_change());
        }
        let now = now();
        let api = driver::api::<Erasure>(&ctx, &owner);
        let mut status = previous.clone();
        status.observed_generation = self.metadata.generation;
        let spec = &self.spec;

        if let Err(invalid) = validate_erasure(&self) {
            let message = validate::problems(&invalid);
            fail(&mut status, reasons::INVALID_SPEC, &message, &now);
            apply_status(&api, &owner.name, &status).await?;
            events::warning(
                &ctx,
                &*self,
                reasons::INVALID_SPEC,
                actions::VALIDATE,
                message,
            )
            .await;
            return Ok(Action::await_change());
        }

        let tombstone = match previous.tombstone.clone() {
            Some(tombstone) => tombstone,
            None => match erase(&self, &owner, &ctx, &mut status, &now).await? {
                Ok(tombstone) => tombstone,
                Err(action) => {
                    apply_status(&api, &owner.name, &status).await?;
                    return Ok(action);
                }
            },
        };

        let projections = Api::<Projection>::namespaced(ctx.client.clone(), &owner.namespace)
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list Projections"))?;
        let mut progress = Vec::new();
        for projection in projections
            .items
            .iter()
            .filter(|p| p.spec.entity == spec.entity)
        {
            let name = projection.name_any();
            let url = format!(
                "{}/v1/status",
                names::service_url(&name, Role::Projector, &owner.namespace)
            );
            let report = probe::report::<ProjectorReport>(ctx.probe.as_ref(), url).await;
            progress.push(projection_erasure(
                &name,
                &tombstone,
                report.as_ref().map_err(String::as_str),
            ));
        }
        progress.sort_by(|a, b| a.name.cmp(&b.name));
        let total = progress.len();
        let waiting: Vec<String> = progress
            .iter()
            .filter(|p| !p.scrubbed)
            .map(|p| format!("{}: {}", p.name, p.message))
            .collect();
        status.scrubbed = Some(format!("{}/{total}", total - waiting.len()));
        status.projections = progress;

        if waiting.is_empty() {
            let message = format!(
                "nothing readable holds key {:?}: its events left stream {} and all {total} \
                 Projections of Entity {} applied its tombstone",
                spec.key,
                crds::stream_name(&owner.namespace, &spec.entity),
                spec.entity
            );
            status.phase = ErasurePhase::Complete;
            status.completion_time = Some(now.clone());
            conclude(&mut status, Outcome::Done, reasons::ERASED, &message, &now);
            apply_status(&api, &owner.name, &status).await?;
            events::normal(&ctx, &*self, reasons::ERASED, actions::ERASE, message).await;
            return Ok(Action::await_change());
        }
        status.phase = ErasurePhase::Erasing;
        let message = format!("waiting for {}", waiting.join("; "));
        conclude(
            &mut status,
            Outcome::UnderWay,
            reasons::SCRUBBING,
            &message,
            &now,
        );
        apply_status(&api, &owner.name, &status).await?;
        Ok(Action::requeue(PROGRESS))
    }
}

/// Asks a receiver for the tombstone. `Ok(Err(action))`: not carried out, `status` says why
/// and the reconcile ends with `action`.
async fn erase(
    erasure: &Erasure,
    owner: &Owner,
    ctx: &Context,
    status: &mut ErasureStatus,
    now: &str,
) -> Result<Result<Tombstone, Action>, Error> {
    let spec = &erasure.spec;
    let entity = Api::<Entity>::namespaced(ctx.client.clone(), &owner.namespace)
        .get_opt(&spec.entity)
        .await
        .map_err(Error::kube(format!("get Entity {}", spec.entity)))?;
    if entity.is_none() {
        let message = format!(
            "spec.entity: Entity {} does not exist in namespace {}",
            spec.entity, owner.namespace
        );
        pending(status, reasons::UNKNOWN_ENTITY, &message, now);
        return Ok(Err(Action::requeue(PROGRESS)));
    }
    let command = ErasureCommand {
        key: spec.key.clone(),
        requested_by: spec.requested_by.clone(),
        reason: spec.reason.clone(),
    };
    let reply = ctx
        .eraser
        .erase(owner.namespace.clone(), spec.entity.clone(), command)
        .await;
    let refusal = match reply {
        Ok(ErasureReply::Erased {
            version,
            sequence,
            partition,
            purged,
        }) => {
            let tombstone = Tombstone {
                version,
                sequence,
                partition,
            };
            status.tombstone = Some(tombstone.clone());
            status.purged_events = purged;
            status.erased_time = Some(now.to_owned());
            let note = format!(
                "key {:?} of Entity {}: tombstone at version {version} (stream sequence \
                 {sequence}), {purged} events purged from stream {}",
                spec.key,
                spec.entity,
                crds::stream_name(&owner.namespace, &spec.entity)
            );
            events::normal(ctx, erasure, reasons::KEY_ERASED, actions::ERASE, note).await;
            return Ok(Ok(tombstone));
        }
        Ok(ErasureReply::Problem {
            status: 503,
            detail,
            ..
        }) => {
            pending(status, reasons::RECEIVER_UNAVAILABLE, &detail, now);
            return Ok(Err(Action::requeue(PROGRESS)));
        }
        Err(error) => {
            let message = process::error_chain(&error);
            pending(status, reasons::RECEIVER_UNAVAILABLE, &message, now);
            return Ok(Err(Action::requeue(PROGRESS)));
        }
        Ok(ErasureReply::Problem {
            status: 404,
            detail,
            ..
        }) => (reasons::KEY_NOT_FOUND, detail),
        Ok(ErasureReply::Problem {
            status: 409,
            detail,
            ..
        }) => (reasons::PURGE_DENIED, detail),
        Ok(ErasureReply::Problem {
            status: code,
            type_,
            detail,
        }) => (
            reasons::ERASURE_REFUSED,
            format!("the receiver answered {code} ({type_}): {detail}"),
        ),
    };
    let (reason, message) = refusal;
    fail(status, reason, &message, now);
    events::warning(ctx, erasure, reason, actions::ERASE, message).await;
    Ok(Err(Action::await_change()))
}

/// Where an erasure stands, for its conditions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    UnderWay,
    Done,
    Failed,
}

/// `Complete` says it; `Ready` says the same (so `kubectl wait --for=condition=Ready` works as
/// for every other kind), `Progressing` while under way, `Degraded` once it failed.
fn conclude(status: &mut ErasureStatus, outcome: Outcome, reason: &str, message: &str, now: &str) {
    let of = |holds: bool| {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    };
    let done = of(outcome == Outcome::Done);
    for (type_, holds, message) in [
        (types::COMPLETE, done, message),
        (types::READY, done, message),
        (types::PROGRESSING, of(outcome == Outcome::UnderWay), ""),
        (types::DEGRADED, of(outcome == Outcome::Failed), ""),
    ] {
        set_condition(
            &mut status.conditions,
            crds::Condition::new(type_, holds, reason, message, now),
        );
    }
}

/// Not carried out yet; tried again.
fn pending(status: &mut ErasureStatus, reason: &str, message: &str, now: &str) {
    status.phase = ErasurePhase::Pending;
    conclude(status, Outcome::UnderWay, reason, message, now);
}

/// Cannot be carried out; nothing was appended. Waits for the user (a new Erasure).
fn fail(status: &mut ErasureStatus, reason: &str, message: &str, now: &str) {
    status.phase = ErasurePhase::Failed;
    conclude(status, Outcome::Failed, reason, message, now);
}
