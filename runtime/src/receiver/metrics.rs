//! The receiver's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Counters and timings of one receiver.
#[derive(Debug)]
pub struct Metrics {
    /// Accepted submissions by result: created, updated, deleted, unchanged.
    pub accepted: Family<ResultLabel, Counter>,
    /// Rejected submissions by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Time from sending an append to its JetStream acknowledgement.
    pub append_seconds: Histogram,
    /// Appends that lost a race and were decided again.
    pub conflicts_retried: Counter,
}

impl Metrics {
    /// Registers the metrics in `registry` under `dreampipe_receiver_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            accepted: Family::default(),
            rejected: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            conflicts_retried: Counter::default(),
        };
        let registry = registry.sub_registry_with_prefix("dreampipe_receiver");
        registry.register(
            "accepted",
            "Submissions accepted, by result",
            metrics.accepted.clone(),
        );
        registry.register(
            "rejected",
            "Submissions rejected, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "append_seconds",
            "Time from sending an append to its JetStream acknowledgement",
            metrics.append_seconds.clone(),
        );
        registry.register(
            "conflicts_retried",
            "Appends that lost a race with another writer and were decided again",
            metrics.conflicts_retried.clone(),
        );
        metrics
    }

    pub fn count_accepted(&self, result: &'static str) {
        self.accepted.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn count_rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }
}
