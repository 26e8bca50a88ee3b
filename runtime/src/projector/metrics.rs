//! Prometheus metrics of a projector replica.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters and gauges the workers and the supervisor update.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Events consumed, by generation and outcome (`applied`, `dead_letter`, `skipped`).
    pub events: Family<Labels, Counter>,
    /// Seconds per committed batch.
    pub commit_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Events left in each partition at the last commit.
    pub lag: Family<Labels, Gauge>,
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
            commit_seconds: Family::new_with_constructor(histogram),
            lag: Family::default(),
            partitions_owned: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `dreampipe_projector_`.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("dreampipe_projector");
        registry.register("events", "Events consumed, by outcome", self.events.clone());
        registry.register(
            "commit_seconds",
            "Time to commit one batch (rows and checkpoint)",
            self.commit_seconds.clone(),
        );
        registry.register("lag", "Events left in a partition", self.lag.clone());
        registry.register(
            "partitions_owned",
            "Partitions leased by this replica",
            self.partitions_owned.clone(),
        );
    }

    pub(crate) fn count(&self, generation: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&vec![
                    ("generation", generation.to_owned()),
                    ("outcome", outcome.to_owned()),
                ])
                .inc_by(n);
        }
    }
}
