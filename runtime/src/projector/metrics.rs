//! Prometheus metrics of a projector replica, named by Prometheus conventions (ADR 55):
//! - `dreampipe_projector_events_total{generation, outcome}`: `applied`, `dead_letter`, `skipped`;
//! - `dreampipe_projector_dead_letters_total{generation, reason}`: poison events dead-lettered,
//!   by [`Poison::cause`](super::rows::Poison::cause);
//! - `dreampipe_projector_commit_duration_seconds{generation}`: one batch's transaction;
//! - `dreampipe_projector_lag_events{generation, partition}`: events not yet applied;
//! - `dreampipe_projector_lag_seconds{generation, partition}`: the age of the oldest event not
//!   yet applied, 0 when caught up;
//! - `dreampipe_projector_build_progress_ratio{generation}`: 0..1 of a building generation
//!   (over every replica's partitions, read from Postgres); the series goes when it stops
//!   building;
//! - `dreampipe_projector_owned_partitions`: partitions this replica holds the lease of.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;
type Ratio = Gauge<f64, AtomicU64>;

/// Counters and gauges the workers and the supervisor update.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Events consumed, by generation and outcome (`applied`, `dead_letter`, `skipped`).
    pub events: Family<Labels, Counter>,
    /// Poison events dead-lettered, by generation and reason.
    pub dead_letters: Family<Labels, Counter>,
    /// Seconds per committed batch.
    pub commit_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Events left in each partition at the last commit.
    pub lag: Family<Labels, Gauge>,
    /// Age of each partition's oldest event not yet applied.
    pub lag_seconds: Family<Labels, Ratio>,
    /// Share of the stream a building generation has replayed.
    pub build_progress: Family<Labels, Ratio>,
    /// Partitions this replica holds the lease of.
    pub partitions_owned: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        }
        Metrics {
            events: Family::default(),
            dead_letters: Family::default(),
            commit_seconds: Family::new_with_constructor(histogram),
            lag: Family::default(),
            lag_seconds: Family::default(),
            build_progress: Family::default(),
            partitions_owned: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `dreampipe_projector_`.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("dreampipe_projector");
        registry.register(
            "events",
            "Events consumed, by generation and outcome",
            self.events.clone(),
        );
        registry.register(
            "dead_letters",
            "Poison events written to the dead-letter table, by generation and reason",
            self.dead_letters.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time to commit one batch (rows, dead letters and checkpoint)",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register(
            "lag_events",
            "Events of a partition not yet applied",
            self.lag.clone(),
        );
        registry.register_with_unit(
            "lag",
            "Age of a partition's oldest event not yet applied (0 when caught up)",
            Unit::Seconds,
            self.lag_seconds.clone(),
        );
        registry.register_with_unit(
            "build_progress",
            "Share of the stream a building generation has replayed (0..1)",
            Unit::Other("ratio".to_owned()),
            self.build_progress.clone(),
        );
        registry.register(
            "owned_partitions",
            "Partitions leased by this replica",
            self.partitions_owned.clone(),
        );
    }

    pub fn count(&self, generation: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&vec![
                    ("generation", generation.to_owned()),
                    ("outcome", outcome.to_owned()),
                ])
                .inc_by(n);
        }
    }

    pub fn count_dead_letter(&self, generation: &str, reason: &'static str) {
        self.dead_letters
            .get_or_create(&vec![
                ("generation", generation.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// Sets the building generations' progress and removes the series of the others.
    pub fn set_build_progress(&self, building: &[(String, f64)], stopped: &[String]) {
        for generation in stopped {
            self.build_progress
                .remove(&vec![("generation", generation.clone())]);
        }
        for (generation, ratio) in building {
            self.build_progress
                .get_or_create(&vec![("generation", generation.clone())])
                .set(*ratio);
        }
    }
}

/// Seconds from `published` (Unix nanoseconds, the stream's timestamp of an event) to `now`;
/// 0 for a timestamp ahead of this clock.
pub fn age_seconds(published_unix_nanos: i128, now: SystemTime) -> f64 {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    (now.saturating_sub(published_unix_nanos).max(0) as f64) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn an_age_is_counted_from_the_stream_timestamp_and_never_negative() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(age_seconds(97_500_000_000, now), 2.5);
        assert_eq!(age_seconds(101_000_000_000, now), 0.0);
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.count("g1", "applied", 3);
        metrics.count_dead_letter("g1", "filter");
        let partition = vec![("generation", "g1".to_owned()), ("partition", "0".into())];
        metrics.lag.get_or_create(&partition).set(4);
        metrics.lag_seconds.get_or_create(&partition).set(1.5);
        metrics.set_build_progress(&[("g2".into(), 0.25)], &[]);
        let text = scrape(&registry);
        for line in [
            "dreampipe_projector_events_total{generation=\"g1\",outcome=\"applied\"} 3",
            "dreampipe_projector_dead_letters_total{generation=\"g1\",reason=\"filter\"} 1",
            "dreampipe_projector_lag_events{generation=\"g1\",partition=\"0\"} 4",
            "dreampipe_projector_lag_seconds{generation=\"g1\",partition=\"0\"} 1.5",
            "dreampipe_projector_build_progress_ratio{generation=\"g2\"} 0.25",
            "dreampipe_projector_owned_partitions 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        metrics.set_build_progress(&[], &["g2".into()]);
        assert!(!scrape(&registry).contains("build_progress_ratio{"));
    }
}
