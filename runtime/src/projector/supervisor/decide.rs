//! The supervisor's pure decisions: which partitions this replica holds, what happens to its
//! leases after a renewal, which generations run here, which workers start and stop, and
//! which retired generations are dropped. No database, no NATS: the tick reads, calls these,
//! and writes.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use super::super::database::{GenerationRow, GenerationState};

/// A worker's identity: (generation, partition).
pub type WorkerKey = (String, u32);

/// The partitions `replica` should hold among the live `replicas` (sorted, as the heartbeat
/// returns them): every `replicas.len()`-th partition from its place in the list. None while
/// its own heartbeat is not among them.
pub fn assigned_partitions(replicas: &[String], replica: &str, partitions: u32) -> BTreeSet<u32> {
    match replicas.iter().position(|r| r == replica) {
        Some(me) => (0..partitions)
            .filter(|p| *p as usize % replicas.len() == me)
            .collect(),
        None => BTreeSet::new(),
    }
}

/// What becomes of the leases after a renewal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseChanges {
    /// Held before but not renewed (expired, or taken by another replica): its workers stop.
    pub lost: Vec<u32>,
    /// Renewed but assigned to another replica now: its workers stop, then it is released.
    pub hand_over: Vec<u32>,
    /// Assigned here and not held: try to acquire it (the database refuses while another
    /// replica holds an unexpired lease; the next tick tries again).
    pub acquire: Vec<u32>,
}

/// Compares the leases `owned` before the renewal, those `renewed`, and the partitions
/// `assigned` to this replica.
pub fn lease_changes(
    owned: &BTreeSet<u32>,
    renewed: &HashSet<u32>,
    assigned: &BTreeSet<u32>,
) -> LeaseChanges {
    let lost: Vec<u32> = owned
        .iter()
        .copied()
        .filter(|p| !renewed.contains(p))
        .collect();
    let hand_over = owned
        .iter()
        .copied()
        .filter(|p| renewed.contains(p) && !assigned.contains(p))
        .collect();
    let acquire = assigned
        .iter()
        .copied()
        .filter(|p| !owned.contains(p) || lost.contains(p))
        .collect();
    LeaseChanges {
        lost,
        hand_over,
        acquire,
    }
}

/// The generations that run here: the live one, and ours (`configured`) while it builds. A
/// NATS sink only ever runs ours: republishing the old mapping beside the new would send both.
pub fn running_generations<'a>(
    rows: &'a [GenerationRow],
    configured: &str,
    nats: bool,
) -> Vec<&'a GenerationRow> {
    rows.iter()
        .filter(|row| {
            let ours = row.generation == configured;
            match row.state {
                GenerationState::Building => ours,
                GenerationState::Live => ours || !nats,
                GenerationState::Retired | GenerationState::Dropped => false,
            }
        })
        .collect()
}

/// Which workers start and which stop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerChanges {
    /// Workers of generations that no longer run.
    pub stop: Vec<WorkerKey>,
    /// A worker per held partition and running generation that has none. A worker stopped
    /// at a poison event stays among the existing ones, so it is not started again.
    pub start: Vec<WorkerKey>,
}

/// Compares the `existing` workers with the `held` partitions and the `running` generations.
pub fn worker_changes<'a>(
    existing: impl IntoIterator<Item = &'a WorkerKey>,
    held: &BTreeSet<u32>,
    running: &BTreeSet<&str>,
) -> WorkerChanges {
    let existing: BTreeSet<&WorkerKey> = existing.into_iter().collect();
    let stop = existing
        .iter()
        .filter(|(generation, _)| !running.contains(generation.as_str()))
        .map(|key| (*key).clone())
        .collect();
    let mut start = Vec::new();
    for partition in held {
        for generation in running {
            let key = ((*generation).to_owned(), *partition);
            if !existing.contains(&key) {
                start.push(key);
            }
        }
    }
    WorkerChanges { stop, start }
}

/// Whether our generation (`configured`) is building, so a swap may be due.
pub fn is_building(rows: &[GenerationRow], configured: &str) -> bool {
    rows.iter()
        .any(|row| row.generation == configured && row.state == GenerationState::Building)
}

/// Retired generations whose grace period `retire_after` is over: their tables are dropped.
pub fn due_for_drop(rows: &[GenerationRow], retire_after: Duration) -> Vec<&GenerationRow> {
    rows.iter()
        .filter(|row| {
            row.state == GenerationState::Retired
                && row
                    .retired_for
                    .is_some_and(|seconds| seconds >= retire_after.as_secs_f64())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::plan::Definition;
    use crds::projection::Sink;

    fn replicas(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn set(partitions: &[u32]) -> BTreeSet<u32> {
        partitions.iter().copied().collect()
    }

    fn row(generation: &str, state: GenerationState, retired_for: Option<f64>) -> GenerationRow {
        GenerationRow {
            generation: generation.into(),
            state,
            definition: Definition {
                namespace: "default".into(),
                entity: "customer".into(),
                partitions: 2,
                filters: vec![],
                sink: Sink::default(),
                rebuild: None,
            },
            retired_for,
        }
    }

    fn names<'a>(rows: &[&'a GenerationRow]) -> Vec<&'a str> {
        rows.iter().map(|r| r.generation.as_str()).collect()
    }

    #[test]
    fn more_partitions_than_replicas_are_dealt_round_robin_in_replica_order() {
        let live = replicas(&["a", "b", "c"]);
        assert_eq!(assigned_partitions(&live, "a", 8), set(&[0, 3, 6]));
        assert_eq!(assigned_partitions(&live, "b", 8), set(&[1, 4, 7]));
        assert_eq!(assigned_partitions(&live, "c", 8), set(&[2, 5]));
        assert_eq!(
            assigned_partitions(&replicas(&["a"]), "a", 3),
            set(&[0, 1, 2])
        );
    }

    #[test]
    fn more_replicas_than_partitions_leave_some_idle_and_an_unseen_replica_holds_nothing() {
        let live = replicas(&["a", "b", "c"]);
        assert_eq!(assigned_partitions(&live, "c", 2), set(&[]));
        assert_eq!(assigned_partitions(&live, "z", 2), set(&[]));
        assert_eq!(assigned_partitions(&[], "a", 2), set(&[]));
    }

    #[test]
    fn a_replica_holding_no_leases_acquires_everything_assigned_to_it() {
        let changes = lease_changes(&set(&[]), &HashSet::new(), &set(&[0, 2]));
        assert_eq!(
            changes,
            LeaseChanges {
                lost: vec![],
                hand_over: vec![],
                acquire: vec![0, 2],
            }
        );
    }

    #[test]
    fn leases_kept_and_assigned_change_nothing() {
        let renewed = HashSet::from([0, 2]);
        assert_eq!(
            lease_changes(&set(&[0, 2]), &renewed, &set(&[0, 2])),
            LeaseChanges::default()
        );
    }

    #[test]
    fn a_lease_taken_by_another_replica_is_lost_and_not_fought_over_when_assigned_elsewhere() {
        // Replica b joined and took partition 1 while our renewal was late.
        let changes = lease_changes(&set(&[0, 1]), &HashSet::from([0]), &set(&[0]));
        assert_eq!(
            changes,
            LeaseChanges {
                lost: vec![1],
                hand_over: vec![],
                acquire: vec![],
            }
        );
    }

    #[test]
    fn an_expired_lease_still_assigned_here_is_lost_and_acquired_again() {
        let changes = lease_changes(&set(&[0, 1]), &HashSet::from([0]), &set(&[0, 1]));
        assert_eq!(
            changes,
            LeaseChanges {
                lost: vec![1],
                hand_over: vec![],
                acquire: vec![1],
            }
        );
    }

    #[test]
    fn a_partition_held_by_another_replica_is_tried_again_every_tick_until_it_is_free() {
        // Assigned here but never acquired: another replica's lease has not expired yet.
        let changes = lease_changes(&set(&[0]), &HashSet::from([0]), &set(&[0, 1]));
        assert_eq!(changes.acquire, vec![1]);
        assert!(changes.lost.is_empty() && changes.hand_over.is_empty());
    }

    #[test]
    fn a_partition_assigned_elsewhere_after_a_replica_joins_is_handed_over() {
        let changes = lease_changes(&set(&[0, 1, 2]), &HashSet::from([0, 1, 2]), &set(&[0, 2]));
        assert_eq!(
            changes,
            LeaseChanges {
                lost: vec![],
                hand_over: vec![1],
                acquire: vec![],
            }
        );
    }

    #[test]
    fn a_building_generation_runs_beside_the_live_one_for_postgres_but_alone_for_nats() {
        let rows = [
            row("old", GenerationState::Live, None),
            row("new", GenerationState::Building, None),
        ];
        assert_eq!(
            names(&running_generations(&rows, "new", false)),
            ["old", "new"]
        );
        assert_eq!(names(&running_generations(&rows, "new", true)), ["new"]);
    }

    #[test]
    fn a_replica_still_configured_for_the_live_generation_does_not_build_the_new_one() {
        let rows = [
            row("old", GenerationState::Live, None),
            row("new", GenerationState::Building, None),
        ];
        assert_eq!(names(&running_generations(&rows, "old", false)), ["old"]);
        assert_eq!(names(&running_generations(&rows, "old", true)), ["old"]);
    }

    #[test]
    fn a_retired_generation_does_not_run_and_is_dropped_after_its_grace_period() {
        let rows = [
            row("older", GenerationState::Retired, Some(301.0)),
            row("old", GenerationState::Retired, Some(12.0)),
            row("new", GenerationState::Live, None),
        ];
        assert_eq!(names(&running_generations(&rows, "new", false)), ["new"]);
        let grace = Duration::from_secs(300);
        assert_eq!(names(&due_for_drop(&rows, grace)), ["older"]);
        assert!(due_for_drop(&rows[2..], Duration::ZERO).is_empty());
    }

    #[test]
    fn only_our_building_generation_asks_for_a_swap() {
        let rows = [
            row("old", GenerationState::Live, None),
            row("new", GenerationState::Building, None),
        ];
        assert!(is_building(&rows, "new"));
        assert!(!is_building(&rows, "old"));
        assert!(!is_building(&rows, "unregistered"));
    }

    #[test]
    fn workers_start_per_held_partition_and_running_generation_and_stop_with_their_generation() {
        let existing: Vec<WorkerKey> = vec![("old".into(), 0), ("gone".into(), 0)];
        let running = BTreeSet::from(["old", "new"]);
        let changes = worker_changes(&existing, &set(&[0, 1]), &running);
        assert_eq!(changes.stop, vec![("gone".to_owned(), 0)]);
        assert_eq!(
            changes.start,
            vec![
                ("new".to_owned(), 0),
                ("new".to_owned(), 1),
                ("old".to_owned(), 1),
            ]
        );
        let none_held = worker_changes(&existing, &set(&[]), &running);
        assert!(none_held.start.is_empty());
    }
}
