//! Pure erasure progress: a Projection's report and the key's tombstone in, whether the
//! Projection still holds anything of the key out (ADR 76).
//!
//! A generation scrubs a key when it applies the key's tombstone (ADR 75), so it holds nothing
//! of the key once its checkpoint in the key's partition has reached the tombstone's sequence,
//! or when it never applied an event of that partition at all (the purged stream no longer
//! offers the key's old events to anyone who starts now). Every generation counts, retired
//! ones too, until the projector drops their tables.

use crds::erasure::{ProjectionErasure, Tombstone};

use super::ProjectorReport;

/// Whether the Projection `name`, as its projector reports it (or why the report could not be
/// read), still holds data of the key `tombstone` replaced.
pub fn projection_erasure(
    name: &str,
    tombstone: &Tombstone,
    report: Result<&ProjectorReport, &str>,
) -> ProjectionErasure {
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            return ProjectionErasure {
                name: name.to_owned(),
                scrubbed: false,
                message: format!("its projector's status cannot be read: {error}"),
            };
        }
    };
    let behind: Vec<String> = report
        .generations
        .iter()
        .filter(|generation| generation.state != "dropped")
        .filter_map(|generation| {
            let applied = generation
                .partitions
                .iter()
                .find(|p| p.partition == tombstone.partition)
                .map_or(0, |p| p.sequence);
            (applied > 0 && applied < tombstone.sequence).then(|| {
                format!(
                    "generation {} ({}) is at sequence {applied} of partition {}",
                    generation.generation, generation.state, tombstone.partition
                )
            })
        })
        .collect();
    ProjectionErasure {
        name: name.to_owned(),
        scrubbed: behind.is_empty(),
        message: if behind.is_empty() {
            String::new()
        } else {
            format!(
                "{}, before the tombstone at sequence {}",
                behind.join("; "),
                tombstone.sequence
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::projection::Phase;
    use crds::report::{GenerationReport, PartitionReport};

    fn generation(name: &str, state: &str, partitions: &[(u32, u64)]) -> GenerationReport {
        GenerationReport {
            generation: name.into(),
            state: state.into(),
            phase: Phase::Live,
            lag: 0,
            last_applied_sequence: partitions.iter().map(|p| p.1).max().unwrap_or(0),
            events: 10,
            progress: 100,
            dead_letters: 0,
            unhandled_dead_letters: 0,
            partitions: partitions
                .iter()
                .map(|&(partition, sequence)| PartitionReport {
                    partition,
                    sequence,
                    lag: Some(0),
                    owner: None,
                    stopped: None,
                    failing: None,
                })
                .collect(),
        }
    }

    fn report(generations: Vec<GenerationReport>) -> ProjectorReport {
        ProjectorReport {
            projection: "customers".into(),
            generations,
            ..ProjectorReport::default()
        }
    }

    const TOMBSTONE: Tombstone = Tombstone {
        version: 4,
        sequence: 100,
        partition: 1,
    };

    #[test]
    fn a_projection_is_scrubbed_once_every_generation_applied_the_tombstone() {
        let caught_up = report(vec![
            generation("g1", "live", &[(0, 40), (1, 100)]),
            generation("g2", "building", &[(0, 12), (1, 130)]),
        ]);
        let scrubbed = projection_erasure("customers", &TOMBSTONE, Ok(&caught_up));
        assert!(scrubbed.scrubbed, "{scrubbed:?}");
        assert!(scrubbed.message.is_empty());
    }

    #[test]
    fn a_generation_before_the_tombstone_in_the_keys_partition_still_holds_it() {
        // Partition 0 lags far behind, but the key is in partition 1: only g2 holds the key.
        let building = report(vec![
            generation("g1", "live", &[(0, 3), (1, 101)]),
            generation("g2", "retired", &[(0, 200), (1, 99)]),
        ]);
        let holding = projection_erasure("customers", &TOMBSTONE, Ok(&building));
        assert!(!holding.scrubbed);
        assert_eq!(
            holding.message,
            "generation g2 (retired) is at sequence 99 of partition 1, before the tombstone at \
             sequence 100"
        );
    }

    #[test]
    fn a_generation_that_never_applied_the_keys_partition_holds_nothing() {
        let fresh = report(vec![generation("g3", "building", &[(0, 50)])]);
        assert!(projection_erasure("customers", &TOMBSTONE, Ok(&fresh)).scrubbed);
        let empty = report(vec![generation("g3", "building", &[(1, 0)])]);
        assert!(projection_erasure("customers", &TOMBSTONE, Ok(&empty)).scrubbed);
        let dropped = report(vec![generation("g0", "dropped", &[(1, 20)])]);
        assert!(projection_erasure("customers", &TOMBSTONE, Ok(&dropped)).scrubbed);
    }

    #[test]
    fn an_unreadable_projector_is_never_taken_for_scrubbed() {
        let unknown = projection_erasure("customers", &TOMBSTONE, Err("connection refused"));
        assert!(!unknown.scrubbed);
        assert!(unknown.message.contains("connection refused"));
    }
}
