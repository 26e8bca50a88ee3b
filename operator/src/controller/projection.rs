//! Projection: one projector Deployment whose replicas share the stream's partitions and swap
//! generations themselves (ADR 0020); status from the projector's report.

use std::sync::Arc;

use crds::Projection;
use crds::projection::{AutoscaleStatus, ProjectionDeletionPolicy, ProjectionStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::driver::{self, Reconciled};
use super::now;
use crate::apply::{self, apply_children, apply_status};
use crate::autoscale;
use crate::build::{self, Owner};
use crate::conditions::{actions, reasons};
use crate::context::{Context, REFRESH};
use crate::error::Error;
use crate::events;
use crate::names::{self, Role};
use crate::probe;
use crate::status::{self, ProjectorReport};
use crate::validate;

/// Finalizer that drops the Projection's view and tables before the Projection goes.
pub const VIEWS_FINALIZER: &str = "dreampipe.io/drop-views";

/// Deleting a Projection removes its children through their owner references; with
/// `deletionPolicy: Delete` its view and tables are dropped first (ADR 0021).
impl Reconciled for Projection {
    type Status = ProjectionStatus;
    const ROLE: Role = Role::Projector;

    fn status(&self) -> Option<&ProjectionStatus> {
        self.status.as_ref()
    }

    /// As on Entities: only a Projection whose views must go carries the finalizer.
    fn finalizer(&self) -> Option<&'static str> {
        let guarded = self.spec.deletion_policy == ProjectionDeletionPolicy::Delete
            || self.finalizers().iter().any(|f| f == VIEWS_FINALIZER);
        guarded.then_some(VIEWS_FINALIZER)
    }

    async fn apply(self: Arc<Self>, owner: Owner, ctx: Arc<Context>) -> Result<Action, Error> {
        let unresolved = validate::projection(&self, &owner)?;
        let entity = driver::referenced_entity(&ctx, &owner, &unresolved).await?;
        let partitions = entity.as_ref().map(|e| e.spec.partitions);
        // The report first: with spec.autoscale it decides the replicas the Deployment gets.
        let url = format!(
            "{}/v1/status",
            names::service_url(&owner.name, Role::Projector, &owner.namespace)
        );
        let report = probe::report::<ProjectorReport>(ctx.probe.as_ref(), url).await;
        let previous = self.status.as_ref();
        let now = now();
        let scaled = autoscaled(&self, report.as_ref().ok(), partitions, &now);
        let projection = match &scaled {
            Some(decision) => {
                let mut scaled = (*self).clone();
                scaled.spec.replicas = decision.replicas;
                scaled
            }
            None => (*self).clone(),
        };
        let valid = validate::projection(&projection, &owner)?.resolve(entity)?;

        let children = build::projection::build(&valid, &ctx.settings);
        let deployment = apply_children(&ctx.client, &owner.namespace, &children).await?;
        let mut pods = driver::role_pods::<Projection>(&ctx, &owner, &deployment).await?;
        if let Some(problem) = &mut pods.problem {
            let database = build::projection::database_secret(&self, &ctx.settings);
            problem.explain_missing_secret(
                &owner.namespace,
                &database.name,
                &database.key,
                "postgres://USER:PASSWORD@HOST:5432/DATABASE",
            );
        }
        let was_conflict = previous
            .and_then(|s| status::find(&s.conditions, crate::conditions::types::READY))
            .is_some_and(|c| c.reason == reasons::VIEW_CONFLICT);
        let mut status = status::projection_status(
            previous,
            self.metadata.generation,
            &pods,
            report.as_ref().map_err(String::as_str),
            names::selector_string(&owner.name, Role::Projector),
            &now,
        );
        let before = previous.and_then(|s| s.autoscale.as_ref());
        status.autoscale = scaled.as_ref().map(|decision| {
            let changed = before.is_none_or(|b| b.replicas != decision.replicas);
            AutoscaleStatus {
                replicas: decision.replicas,
                last_scale_time: if changed {
                    Some(now.clone())
                } else {
                    before.and_then(|b| b.last_scale_time.clone())
                },
                reason: Some(decision.reason.clone()),
            }
        });
        apply_status(
            &driver::api::<Projection>(&ctx, &owner),
            &owner.name,
            &status,
        )
        .await?;
        driver::announce(&ctx, &*self, &owner, &children, &pods).await;
        if let Ok(Some(conflict)) = report.as_ref().map(|r| r.view_conflict.as_ref())
            && !was_conflict
        {
            let note = status::view_conflict_message(conflict);
            events::warning(
                &ctx,
                &*self,
                reasons::VIEW_CONFLICT,
                actions::RECONCILE,
                note,
            )
            .await;
        }

        if let Some(note) =
            status::new_dead_letters(previous, &status, &owner.name, &owner.namespace)
        {
            events::warning(
                &ctx,
                &*self,
                reasons::NEW_DEAD_LETTERS,
                actions::RECONCILE,
                note,
            )
            .await;
        }

        if let (Some(decision), Some(before)) = (&scaled, before)
            && before.replicas != decision.replicas
        {
            let note = format!(
                "projector scaled from {} to {} replicas: {}",
                before.replicas, decision.replicas, decision.reason
            );
            events::normal(&ctx, &*self, reasons::AUTOSCALED, actions::SCALE, note).await;
        }

        let before = previous.and_then(|s| s.active_generation.as_deref());
        if let (Some(before), Some(after)) = (before, status.active_generation.as_deref())
            && before != after
        {
            let note = format!(
                "view {} now served by generation {after} (was {before})",
                status.view.as_deref().unwrap_or_default()
            );
            events::normal(
                &ctx,
                &*self,
                reasons::GENERATION_SWAPPED,
                actions::SWAP,
                note,
            )
            .await;
        }
        Ok(Action::requeue(REFRESH))
    }

    /// Drops a deleted Projection's view and tables, one step per reconcile: the projector
    /// Deployment goes first (a running replica would build its generation again), then, once
    /// no projector pod is left, the drop Job runs; the finalizer is released when it
    /// succeeded.
    async fn cleanup(self: Arc<Self>, owner: Owner, ctx: Arc<Context>) -> Result<Action, Error> {
        if self.spec.deletion_policy != ProjectionDeletionPolicy::Delete {
            return Ok(Action::await_change()); // the policy changed to Retain: keep the views
        }
        let projector = names::child_name(&owner.name, Role::Projector);
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        apply::delete(&deployments, &projector).await?;
        let running = driver::list_pods(&ctx, &owner, Role::Projector)
            .await?
            .len();
        if running > 0 {
            return Err(Error::Waiting(format!(
                "{running} projector pod(s) of {} still running; the views are dropped after they stop",
                owner.name
            )));
        }
        let job_name = build::projection::drop_job_name(&owner.name);
        let status = drop_job(&self, &owner, &ctx)
            .await?
            .status
            .unwrap_or_default();
        if status.succeeded.unwrap_or(0) > 0 {
            let view = self
                .spec
                .sink
                .postgres
                .as_ref()
                .map_or_else(|| "no view".to_owned(), |p| format!("view {}", p.view));
            let note = format!("dropped {view} and its tables (deletionPolicy: Delete)");
            events::normal(&ctx, &*self, reasons::VIEWS_DROPPED, actions::DELETE, note).await;
            return Ok(Action::await_change());
        }
        if status.failed.unwrap_or(0) >= build::projection::DROP_ATTEMPTS {
            let message = format!(
                "Job {job_name} failed {} times; its pods' logs say why. Fix the cause and delete \
                 the Job to try again, or set deletionPolicy: Retain to keep the views",
                build::projection::DROP_ATTEMPTS
            );
            events::warning(
                &ctx,
                &*self,
                reasons::DROP_FAILED,
                actions::DELETE,
                message.clone(),
            )
            .await;
            return Err(Error::Waiting(message));
        }
        Err(Error::Waiting(format!(
            "Job {job_name} is dropping the views of {}",
            owner.name
        )))
    }
}

/// With `spec.autoscale`, the replicas the projector should run now (ADR 0054): from the
/// reported lag, the replicas last chosen (or `spec.replicas` at first) and the time since
/// they changed, never above the Entity's partitions.
fn autoscaled(
    projection: &Projection,
    report: Option<&ProjectorReport>,
    partitions: Option<u32>,
    now: &str,
) -> Option<autoscale::Decision> {
    let spec = projection.spec.autoscale.as_ref()?;
    let previous = projection
        .status
        .as_ref()
        .and_then(|s| s.autoscale.as_ref());
    let seen = autoscale::Observation {
        lag_seconds: report.and_then(|r| r.lag_seconds),
        current: previous.map_or(projection.spec.replicas, |p| p.replicas),
        since_last_change: previous
            .and_then(|p| p.last_scale_time.as_deref())
            .and_then(|then| autoscale::elapsed(then, now)),
        partitions,
    };
    Some(autoscale::decide(spec, seen))
}

/// The drop Job as it is: read first, and created only when there is none. A Job's template
/// is immutable, so applying it again after the projector's pod spec changed (another image,
/// another NATS URL) would be refused and keep the finalizer forever.
async fn drop_job(projection: &Projection, owner: &Owner, ctx: &Context) -> Result<Job, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = build::projection::drop_job_name(&owner.name);
    let existing = jobs
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get Job {name}")))?;
    match existing {
        Some(job) => Ok(job),
        None => {
            let job = build::projection::drop_job(projection, owner, &ctx.settings);
            apply::apply(&jobs, &job).await
        }
    }
}
