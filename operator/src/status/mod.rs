//! Pure status computation: the children's state and the runtime's `/v1/status` report in,
//! the resource's status out. Conditions go through `crds::common::set_condition`, so
//! `lastTransitionTime` moves only when a condition's status flips.

pub mod erasure;
pub mod pods;

use crds::adapter::AdapterStatus;
use crds::common::set_condition;
use crds::entity::EntityStatus;
use crds::projection::{Phase, ProjectionStatus};
use crds::{Condition, ConditionStatus};
use k8s_openapi::api::apps::v1::Deployment;

use crate::conditions::{reasons, types};
pub use pods::PodProblem;

/// What a reconcile saw of a role's pods: the Deployment's rollout and, while pods are not
/// ready, the first problem one of them reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pods {
    pub rollout: Rollout,
    pub problem: Option<PodProblem>,
}

/// The roles' `GET /v1/status` reports, defined once in `crds` for the runtime and the operator.
pub use crds::report::{
    AdapterReport, GenerationReport, ProjectorReport, ReceiverReport, ViewConflict,
};

/// What a Deployment says about its rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the newest spec.
    pub observed: bool,
}

impl Rollout {
    pub fn of(deployment: &Deployment) -> Rollout {
        let desired = deployment.spec.replicas.unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        Rollout {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation.is_some()
                && status.observed_generation >= deployment.metadata.generation,
        }
    }

    /// Every desired pod is ready (some may still run an older template).
    pub fn all_ready(&self) -> bool {
        self.ready >= self.desired
    }

    /// Every desired pod runs the newest template and is ready, and no old pod is left.
    pub fn complete(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.replicas <= self.desired
    }
}

fn condition(type_: &str, holds: bool, reason: &str, message: String, now: &str) -> Condition {
    let status = if holds {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    Condition::new(type_, status, reason, message, now)
}

/// The conditions of a resource whose spec is invalid: not ready, degraded, not progressing.
/// The message names every field at fault.
pub fn invalid_conditions(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) {
    for (type_, holds) in [
        (types::READY, false),
        (types::PROGRESSING, false),
        (types::DEGRADED, true),
    ] {
        let mut c = condition(type_, holds, reason, message.to_owned(), now);
        c.observed_generation = generation;
        set_condition(conditions, c);
    }
}

/// Ready / Progressing / Degraded of a role's rollout plus what its status report said. Pods
/// that are not ready and report a problem of their own make that problem the Ready reason.
fn rollout_conditions(
    conditions: &mut Vec<Condition>,
    what: &str,
    pods: &Pods,
    report_error: Option<&str>,
    generation: Option<i64>,
    now: &str,
) {
    let rollout = pods.rollout;
    let ready = rollout.desired > 0 && rollout.ready >= rollout.desired;
    let counted = format!("{}/{} {what} pods ready", rollout.ready, rollout.desired);
    let (ready_reason, ready_message) = if rollout.desired == 0 {
        (
            reasons::SCALED_TO_ZERO,
            format!("no {what} pods are asked for"),
        )
    } else if ready {
        (reasons::ALL_READY, counted)
    } else if let Some(problem) = &pods.problem {
        (problem.reason.as_str(), format!("{counted}; {problem}"))
    } else {
        (reasons::PODS_NOT_READY, counted)
    };
    let progressing = !rollout.complete();
    let (progress_reason, progress_message) = if progressing {
        (
            reasons::ROLLING_OUT,
            format!(
                "{}/{} {what} pods updated, {} ready",
                rollout.updated, rollout.desired, rollout.ready
            ),
        )
    } else {
        (reasons::ROLLOUT_COMPLETE, String::new())
    };
    let (degraded, degraded_reason, degraded_message) = match report_error {
        Some(error) if rollout.ready > 0 => (true, reasons::STATUS_UNAVAILABLE, error.to_owned()),
        _ => (false, reasons::HEALTHY, String::new()),
    };
    for mut c in [
        condition(types::READY, ready, ready_reason, ready_message, now),
        condition(
            types::PROGRESSING,
            progressing,
            progress_reason,
            progress_message,
            now,
        ),
        condition(
            types::DEGRADED,
            degraded,
            degraded_reason,
            degraded_message,
            now,
        ),
    ] {
        c.observed_generation = generation;
        set_condition(conditions, c);
    }
}

/// The Entity's status from its receiver Deployment and the receiver's report.
pub fn entity_status(
    previous: Option<&EntityStatus>,
    generation: Option<i64>,
    pods: &Pods,
    report: Result<&ReceiverReport, &str>,
    endpoint: String,
    stream: String,
    now: &str,
) -> EntityStatus {
    let rollout = pods.rollout;
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.ready_receivers = rollout.ready;
    status.desired_receivers = rollout.desired;
    status.receivers = Some(format!("{}/{}", rollout.ready, rollout.desired));
    status.endpoint = Some(endpoint);
    status.stream = Some(stream);
    if let Ok(report) = report {
        status.events = report.stats.events;
        status.keys = report.stats.keys;
        status.last_event_time = report.stats.last_event_time.clone();
    }
    rollout_conditions(
        &mut status.conditions,
        "receiver",
        pods,
        report.err(),
        generation,
        now,
    );
    status
}

/// The Projection's status from its projector Deployment and the projector's report.
pub fn projection_status(
    previous: Option<&ProjectionStatus>,
    generation: Option<i64>,
    pods: &Pods,
    report: Result<&ProjectorReport, &str>,
    selector: String,
    now: &str,
) -> ProjectionStatus {
    let rollout = pods.rollout;
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.replicas = rollout.replicas;
    status.ready_replicas = rollout.ready;
    status.selector = Some(selector);
    let mut building = None;
    if let Ok(report) = report {
        let find = |wanted: &Option<String>| {
            wanted
                .as_ref()
                .and_then(|g| report.generations.iter().find(|r| &r.generation == g))
        };
        let active = find(&report.active_generation);
        building = find(&report.building_generation);
        status.view = Some(report.view.clone());
        status.active_generation = report.active_generation.clone();
        status.building_generation = report.building_generation.clone();
        status.build_progress = building.map(|b| b.progress);
        status.phase = Some(match (active, building) {
            (Some(a), _) => a.phase,
            (None, Some(b)) => b.phase,
            (None, None) => Phase::Building,
        });
        status.lag = active.or(building).map(|g| g.lag);
        status.lag_seconds = report.lag_seconds;
        status.dead_letters = report.generations.iter().map(|g| g.dead_letters).sum();
        status.unhandled_dead_letters = report
            .generations
            .iter()
            .map(|g| g.unhandled_dead_letters)
            .sum();
    }
    rollout_conditions(
        &mut status.conditions,
        "projector",
        pods,
        report.err(),
        generation,
        now,
    );
    // A generation being built is progress too, and nothing serves until one is live.
    if let Some(b) = building {
        let mut c = condition(
            types::PROGRESSING,
            true,
            reasons::BUILDING_GENERATION,
            format!("generation {} replayed {}%", b.generation, b.progress),
            now,
        );
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c);
    }
    if report.is_ok() && status.active_generation.is_none() && rollout.ready > 0 {
        let mut c = condition(
            types::READY,
            false,
            reasons::NO_LIVE_GENERATION,
            "the first generation is still being built".to_owned(),
            now,
        );
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c);
    }
    if let Some(conflict) = report.ok().and_then(|r| r.view_conflict.as_ref()) {
        status.phase = Some(Phase::Degraded);
        let message = view_conflict_message(conflict);
        for (type_, holds) in [(types::READY, false), (types::DEGRADED, true)] {
            let mut c = condition(type_, holds, reasons::VIEW_CONFLICT, message.clone(), now);
            c.observed_generation = generation;
            set_condition(&mut status.conditions, c);
        }
        return status;
    }
    if status.phase == Some(Phase::Degraded) {
        let mut c = condition(
            types::DEGRADED,
            true,
            reasons::PARTITIONS_FAILING,
            "some partitions of the serving generation are stopped or failing".to_owned(),
            now,
        );
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c);
    }
    status
}

/// What a refused Projection's Ready condition says: the view, its owner and the way out.
pub fn view_conflict_message(conflict: &ViewConflict) -> String {
    format!(
        "view {} is owned by Projection {}; this Projection projects nothing until the view is \
         free: rename spec.sink.postgres.view, or delete the owner",
        conflict.view, conflict.owner
    )
}

/// The note of a Warning Event when more dead letters wait to be handled than the previous
/// status said; `None` when there are no new ones (or some were marked handled).
pub fn new_dead_letters(
    previous: Option<&ProjectionStatus>,
    status: &ProjectionStatus,
    projection: &str,
    namespace: &str,
) -> Option<String> {
    let before = previous.map_or(0, |p| p.unhandled_dead_letters);
    let now = status.unhandled_dead_letters;
    (now > before).then(|| {
        format!(
            "{} new dead letter(s), {now} unhandled: `dreampipe deadletters list {projection} \
             --namespace {namespace} --unhandled` lists them",
            now - before
        )
    })
}

/// The Adapter's status from its Deployment and the adapter's report; a `suspended` one is
/// not ready, for that reason, and not degraded by a report it cannot give.
pub fn adapter_status(
    previous: Option<&AdapterStatus>,
    generation: Option<i64>,
    pods: &Pods,
    report: Result<&AdapterReport, &str>,
    suspended: bool,
    now: &str,
) -> AdapterStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    if let Ok(report) = report {
        status.last_sync_time = report.last_sync_time.clone();
        status.records_read = report.records_read;
        status.submitted = report.submitted;
        status.changed = report.changed;
        status.unchanged = report.unchanged;
        status.rejected = report.rejected;
        status.last_error = report.last_error.clone();
        status.backlog = report.backlog;
        status.source_lag_bytes = report.source_lag_bytes;
    }
    rollout_conditions(
        &mut status.conditions,
        "adapter",
        pods,
        report.err(),
        generation,
        now,
    );
    if let Ok(AdapterReport {
        last_error: Some(error),
        ..
    }) = report
    {
        let mut c = condition(
            types::DEGRADED,
            true,
            reasons::SOURCE_FAILING,
            error.clone(),
            now,
        );
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c);
    }
    if suspended {
        let message = "spec.suspend is true: the adapter Deployment is scaled to 0 and reads \
                       nothing; its configuration and cursor are kept"
            .to_owned();
        for mut c in [
            condition(types::READY, false, reasons::SUSPENDED, message, now),
            condition(
                types::DEGRADED,
                false,
                reasons::SUSPENDED,
                String::new(),
                now,
            ),
        ] {
            c.observed_generation = generation;
            set_condition(&mut status.conditions, c);
        }
    }
    status
}

/// The condition of `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(desired: i32, ready: i32) -> Pods {
        Pods {
            rollout: Rollout {
                desired,
                replicas: desired,
                ready,
                updated: desired,
                observed: true,
            },
            problem: None,
        }
    }

    fn generation(name: &str, phase: Phase, lag: u64, progress: u8, dead: u64) -> GenerationReport {
        GenerationReport {
            generation: name.into(),
            state: if phase == Phase::Building {
                "building"
            } else {
                "live"
            }
            .into(),
            phase,
            lag,
            last_applied_sequence: 0,
            events: 0,
            progress,
            dead_letters: dead,
            unhandled_dead_letters: dead,
            partitions: Vec::new(),
        }
    }

    fn projector_report(phase: Phase, building: bool) -> ProjectorReport {
        let mut report = ProjectorReport {
            view: "customers".into(),
            active_generation: Some("g1".into()),
            building_generation: None,
            generations: vec![generation("g1", phase, 3, 100, 2)],
            lag_seconds: Some(2.5),
            ..ProjectorReport::default()
        };
        if building {
            report.building_generation = Some("g2".into());
            report
                .generations
                .push(generation("g2", Phase::Building, 500, 40, 1));
        }
        report
    }

    #[test]
    fn a_fully_ready_receiver_makes_the_entity_ready_with_its_figures() {
        let report = ReceiverReport {
            entity: "customer".into(),
            stream: "dp_shop_customer".into(),
            stats: crds::report::StreamStats {
                events: 10,
                keys: 4,
                last_sequence: 10,
                last_event_time: Some("2026-01-01T00:00:00Z".into()),
            },
        };
        let status = entity_status(
            None,
            Some(3),
            &rollout(2, 2),
            Ok(&report),
            "http://x".into(),
            "dp_shop_customer".into(),
            "t1",
        );
        assert_eq!(status.receivers.as_deref(), Some("2/2"));
        assert_eq!((status.events, status.keys), (10, 4));
        assert_eq!(status.observed_generation, Some(3));
        let ready = find(&status.conditions, "Ready").unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.observed_generation, Some(3));
    }

    #[test]
    fn an_unreachable_status_endpoint_keeps_the_last_figures_and_degrades_ready_pods() {
        let previous = EntityStatus {
            events: 7,
            ..EntityStatus::default()
        };
        let status = entity_status(
            Some(&previous),
            Some(1),
            &rollout(1, 1),
            Err("connection refused"),
            "u".into(),
            "s".into(),
            "t",
        );
        assert_eq!(status.events, 7);
        let degraded = find(&status.conditions, "Degraded").unwrap();
        assert_eq!(
            (degraded.status, degraded.reason.as_str()),
            (ConditionStatus::True, "StatusUnavailable")
        );
    }

    #[test]
    fn a_building_generation_is_progress_with_its_percentage() {
        let status = projection_status(
            None,
            Some(2),
            &rollout(2, 2),
            Ok(&projector_report(Phase::Live, true)),
            "sel".into(),
            "t",
        );
        assert_eq!(status.phase, Some(Phase::Live));
        assert_eq!(status.lag, Some(3));
        assert_eq!(status.lag_seconds, Some(2.5), "copied from the report");
        assert_eq!(status.build_progress, Some(40));
        assert_eq!(status.dead_letters, 3);
        assert_eq!(status.unhandled_dead_letters, 3);
        assert_eq!(status.building_generation.as_deref(), Some("g2"));
        let progressing = find(&status.conditions, "Progressing").unwrap();
        assert_eq!(progressing.reason, "BuildingGeneration");
        assert!(progressing.message.contains("40%"));
        assert_eq!(
            find(&status.conditions, "Ready").unwrap().status,
            ConditionStatus::True
        );
    }

    #[test]
    fn only_a_growing_count_of_unhandled_dead_letters_is_news() {
        let with = |unhandled| ProjectionStatus {
            unhandled_dead_letters: unhandled,
            ..ProjectionStatus::default()
        };
        let note = new_dead_letters(Some(&with(2)), &with(5), "customers", "shop").unwrap();
        assert!(
            note.starts_with("3 new dead letter(s), 5 unhandled"),
            "{note}"
        );
        assert!(
            note.contains("deadletters list customers --namespace shop"),
            "{note}"
        );
        assert!(new_dead_letters(None, &with(1), "c", "n").is_some());
        assert_eq!(new_dead_letters(None, &with(0), "c", "n"), None);
        assert_eq!(new_dead_letters(Some(&with(5)), &with(5), "c", "n"), None);
        assert_eq!(
            new_dead_letters(Some(&with(5)), &with(1), "c", "n"),
            None,
            "marking some handled is no news"
        );
    }

    #[test]
    fn a_degraded_generation_degrades_the_projection() {
        let status = projection_status(
            None,
            Some(1),
            &rollout(1, 1),
            Ok(&projector_report(Phase::Degraded, false)),
            "sel".into(),
            "t",
        );
        let degraded = find(&status.conditions, "Degraded").unwrap();
        assert_eq!(degraded.status, ConditionStatus::True);
        assert_eq!(degraded.reason, "PartitionsFailing");
    }

    #[test]
    fn ready_transition_time_stays_while_the_projection_stays_ready() {
        let report = projector_report(Phase::Live, false);
        let first = projection_status(None, Some(1), &rollout(1, 1), Ok(&report), "s".into(), "t1");
        let second = projection_status(
            Some(&first),
            Some(1),
            &rollout(1, 1),
            Ok(&report),
            "s".into(),
            "t2",
        );
        assert_eq!(
            find(&second.conditions, "Ready")
                .unwrap()
                .last_transition_time,
            "t1"
        );
        let third = projection_status(
            Some(&second),
            Some(1),
            &rollout(1, 0),
            Ok(&report),
            "s".into(),
            "t3",
        );
        assert_eq!(
            find(&third.conditions, "Ready")
                .unwrap()
                .last_transition_time,
            "t3"
        );
    }

    #[test]
    fn an_invalid_spec_is_not_ready_and_degraded_with_the_fields_named() {
        let mut conditions = Vec::new();
        invalid_conditions(
            &mut conditions,
            reasons::INVALID_SPEC,
            "spec.filters[0].where: CEL does not compile",
            Some(4),
            "t",
        );
        let ready = find(&conditions, "Ready").unwrap();
        assert_eq!(ready.status, ConditionStatus::False);
        assert!(ready.message.contains("spec.filters[0].where"));
        assert_eq!(
            find(&conditions, "Degraded").unwrap().status,
            ConditionStatus::True
        );
    }

    #[test]
    fn an_adapter_error_is_shown_and_degrades_it() {
        let report = AdapterReport {
            records_read: 5,
            last_error: Some("HTTP 503 from source".into()),
            ..AdapterReport::default()
        };
        let status = adapter_status(None, Some(1), &rollout(1, 1), Ok(&report), false, "t");
        assert_eq!(status.records_read, 5);
        assert_eq!(status.last_error.as_deref(), Some("HTTP 503 from source"));
        assert_eq!(
            find(&status.conditions, "Degraded").unwrap().reason,
            "SourceFailing"
        );
    }

    #[test]
    fn a_suspended_adapter_is_not_ready_because_suspended_and_keeps_its_figures() {
        let previous = AdapterStatus {
            records_read: 40,
            ..AdapterStatus::default()
        };
        let status = adapter_status(
            Some(&previous),
            Some(2),
            &rollout(0, 0),
            Err("no running adapter pod to ask for its status"),
            true,
            "t",
        );
        assert_eq!(status.records_read, 40);
        let ready = find(&status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "Suspended")
        );
        assert!(ready.message.contains("scaled to 0"), "{}", ready.message);
        assert_eq!(
            find(&status.conditions, types::DEGRADED).unwrap().status,
            ConditionStatus::False
        );
    }

    #[test]
    fn pods_that_cannot_start_give_the_ready_condition_their_reason() {
        let mut pods = rollout(2, 0);
        pods.problem = Some(PodProblem {
            pod: "customers-projector-7d9f".into(),
            reason: "CreateContainerConfigError".into(),
            message: "secret \"dreampipe-database\" not found".into(),
        });
        let status = projection_status(None, Some(1), &pods, Err("no pod"), "s".into(), "t");
        let ready = find(&status.conditions, types::READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(ready.reason, "CreateContainerConfigError");
        assert_eq!(
            ready.message,
            "0/2 projector pods ready; pod customers-projector-7d9f: CreateContainerConfigError: \
             secret \"dreampipe-database\" not found"
        );
    }
}
