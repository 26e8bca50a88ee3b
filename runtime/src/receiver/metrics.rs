//! The receiver's Prometheus metrics, named by Prometheus conventions (ADR 55):
//! - `dreampipe_receiver_results_total{outcome, type, reason, code}`: every submission's
//!   answer: `outcome="appended"` with the event `type` (`created`, `updated`, `deleted`),
//!   `outcome="unchanged"`, or `outcome="rejected"` with its `reason` and HTTP status `code`
//!   (so 5xx answers are `code=~"5.."`);
//! - `dreampipe_receiver_append_duration_seconds`: sending an append to its JetStream ack;
//! - `dreampipe_receiver_append_conflicts_total`: appends that lost a race with another
//!   writer and were decided again.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::submit::Outcome;

type Labels = Vec<(&'static str, String)>;

/// Counters and timings of one receiver.
#[derive(Debug)]
pub struct Metrics {
    /// Submissions by outcome (and event type, or reason and status code).
    pub results: Family<Labels, Counter>,
    /// Time from sending an append to its JetStream acknowledgement.
    pub append_seconds: Histogram,
    /// Appends that lost a race and were decided again.
    pub conflicts_retried: Counter,
    /// Erasures completed (tombstone stored and the key's earlier events purged).
    pub erasures: Counter,
    /// Events purged from the stream by erasures.
    pub purged_events: Counter,
}

impl Metrics {
    /// Registers the metrics in `registry` under `dreampipe_receiver_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            results: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            conflicts_retried: Counter::default(),
            erasures: Counter::default(),
            purged_events: Counter::default(),
        };
        let registry = registry.sub_registry_with_prefix("dreampipe_receiver");
        registry.register(
            "results",
            "Submissions answered, by outcome (appended with its event type, unchanged, \
             rejected with its reason and HTTP status code)",
            metrics.results.clone(),
        );
        registry.register_with_unit(
            "append_duration",
            "Time from sending an append to its JetStream acknowledgement",
            Unit::Seconds,
            metrics.append_seconds.clone(),
        );
        registry.register(
            "append_conflicts",
            "Appends that lost a race with another writer and were decided again",
            metrics.conflicts_retried.clone(),
        );
        registry.register(
            "erasures",
            "Erasures completed: a key's tombstone stored and its earlier events purged (ADR 75)",
            metrics.erasures.clone(),
        );
        registry.register(
            "purged_events",
            "Events purged from the stream by erasures",
            metrics.purged_events.clone(),
        );
        metrics
    }

    /// Counts an accepted submission: appended as an event of its type, or unchanged.
    pub fn count_accepted(&self, outcome: Outcome) {
        let labels = match outcome {
            Outcome::Unchanged => vec![("outcome", "unchanged".to_owned())],
            appended => vec![
                ("outcome", "appended".to_owned()),
                ("type", appended.as_str().to_owned()),
            ],
        };
        self.results.get_or_create(&labels).inc();
    }

    /// Counts a refused submission by reason and the HTTP status it was answered with.
    pub fn count_rejected(&self, reason: &'static str, code: u16) {
        self.results
            .get_or_create(&vec![
                ("outcome", "rejected".to_owned()),
                ("reason", reason.to_owned()),
                ("code", code.to_string()),
            ])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_carry_their_outcome_type_reason_and_code() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.count_accepted(Outcome::Updated);
        metrics.count_accepted(Outcome::Unchanged);
        metrics.count_rejected("unavailable", 503);
        metrics.conflicts_retried.inc();
        metrics.erasures.inc();
        metrics.purged_events.inc_by(3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "dreampipe_receiver_results_total{outcome=\"appended\",type=\"updated\"} 1",
            "dreampipe_receiver_results_total{outcome=\"unchanged\"} 1",
            "dreampipe_receiver_results_total{outcome=\"rejected\",reason=\"unavailable\",code=\"503\"} 1",
            "dreampipe_receiver_append_conflicts_total 1",
            "dreampipe_receiver_erasures_total 1",
            "dreampipe_receiver_purged_events_total 3",
            "dreampipe_receiver_append_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
