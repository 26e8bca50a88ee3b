//! The operator's Prometheus metrics (as controller-rs counts and times every reconcile), under
//! `dreampipe_operator_`:
//! - `reconciles_total{kind, result}`: result `success`, `waiting` or `error`;
//! - `reconcile_duration_seconds{kind}`: a histogram of whole reconciles;
//! - `reconcile_errors_total{kind, category}`: failed reconciles by what failed;
//! - `rejected_specs_total{kind, reason}`: specs reported invalid (the reconcile succeeded);
//! - `objects{kind, ready}`: objects in the controllers' caches by their Ready condition,
//!   counted at scrape time, so deleted objects leave the count with the cache;
//! - `last_successful_reconcile_timestamp_seconds{kind}`;
//! - `leader`: 1 while this replica holds the leader Lease and reconciles, 0 on standby.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub kind: String,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub kind: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub kind: &'static str,
    pub ready: &'static str,
}

type DurationHistograms = Family<KindLabel, Histogram, fn() -> Histogram>;

/// The Ready states (`True`, `False`, `Unknown`) of one kind's cached objects.
pub type ReadyStates = Box<dyn Fn() -> Vec<&'static str> + Send + Sync>;

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<ResultLabels, Counter>,
    durations: DurationHistograms,
    errors: Family<CategoryLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    last_success: Family<KindLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    objects: Arc<ObjectCounts>,
    leader: Gauge,
}

impl Metrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Metrics> {
        fn histogram() -> Histogram {
            // 5 ms .. ~20 s: a reconcile is a few API calls and one status read.
            Histogram::new(exponential_buckets(0.005, 2.0, 13))
        }
        let metrics = Metrics {
            reconciles: Family::default(),
            durations: Family::new_with_constructor(histogram),
            errors: Family::default(),
            rejected: Family::default(),
            last_success: Family::default(),
            objects: Arc::new(ObjectCounts::default()),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("dreampipe_operator");
        r.register(
            "reconciles",
            "Reconciles, by kind and result (success, waiting, error)",
            metrics.reconciles.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "How long a reconcile took, by kind",
            Unit::Seconds,
            metrics.durations.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles, by kind and what failed",
            metrics.errors.clone(),
        );
        r.register(
            "rejected_specs",
            "Specs reported invalid in status, by kind and reason",
            metrics.rejected.clone(),
        );
        r.register_with_unit(
            "last_successful_reconcile_timestamp",
            "When a reconcile of the kind last succeeded (Unix time)",
            Unit::Seconds,
            metrics.last_success.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles, 0 while it stands by",
            metrics.leader.clone(),
        );
        r.register_collector(Box::new(metrics.objects.clone()));
        Arc::new(metrics)
    }

    /// Records one finished reconcile: its result, duration and, if it failed, why.
    pub fn reconciled(&self, kind: &str, outcome: Outcome, took: Duration) {
        let result = match outcome {
            Outcome::Success => "success",
            Outcome::Waiting => "waiting",
            Outcome::Failed(_) => "error",
        };
        let kind_label = KindLabel {
            kind: kind.to_owned(),
        };
        self.reconciles
            .get_or_create(&ResultLabels {
                kind: kind.to_owned(),
                result,
            })
            .inc();
        self.durations
            .get_or_create(&kind_label)
            .observe(took.as_secs_f64());
        match outcome {
            Outcome::Failed(category) => {
                self.errors
                    .get_or_create(&CategoryLabels {
                        kind: kind.to_owned(),
                        category,
                    })
                    .inc();
            }
            Outcome::Success => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_success
                    .get_or_create(&kind_label)
                    .set(now.as_secs_f64());
            }
            Outcome::Waiting => {}
        }
    }

    /// Whether this replica leads (reconciles) or stands by.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether this replica leads, as exported.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// Records a spec reported invalid.
    pub fn rejected(&self, kind: &str, reason: &'static str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                kind: kind.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts `kind`'s objects by Ready state at each scrape, from `states` (a controller's
    /// cache).
    pub fn count_objects(&self, kind: &'static str, states: ReadyStates) {
        self.objects
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((kind, states));
    }
}

/// How a reconcile ended, for [`Metrics::reconciled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A step must finish first (a deletion, a Job); not a failure.
    Waiting,
    /// Failed, with the category of what failed.
    Failed(&'static str),
}

/// The `objects{kind, ready}` gauge, computed from the controllers' caches when scraped.
#[derive(Default)]
struct ObjectCounts {
    kinds: Mutex<Vec<(&'static str, ReadyStates)>>,
}

impl std::fmt::Debug for ObjectCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCounts").finish_non_exhaustive()
    }
}

impl Collector for ObjectCounts {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let family = Family::<ReadyLabels, Gauge>::default();
        for (kind, states) in self.kinds.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            // Every state is present, at 0 when no object is in it, so alerts see a series.
            for ready in ["True", "False", "Unknown"] {
                drop(family.get_or_create(&ReadyLabels { kind, ready }));
            }
            for ready in states() {
                family.get_or_create(&ReadyLabels { kind, ready }).inc();
            }
        }
        // Named without the prefix: the sub-registry it is registered in adds `dreampipe_operator_`.
        let metric = encoder.encode_descriptor(
            "objects",
            "Objects in the operator's caches, by kind and Ready condition",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn reconciles_are_counted_timed_and_failures_categorised() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.reconciled("Entity", Outcome::Success, Duration::from_millis(20));
        metrics.reconciled(
            "Entity",
            Outcome::Failed("kube_api"),
            Duration::from_millis(5),
        );
        let text = scrape(&registry);
        for line in [
            "dreampipe_operator_reconciles_total{kind=\"Entity\",result=\"success\"} 1",
            "dreampipe_operator_reconciles_total{kind=\"Entity\",result=\"error\"} 1",
            "dreampipe_operator_reconcile_errors_total{kind=\"Entity\",category=\"kube_api\"} 1",
            "dreampipe_operator_reconcile_duration_seconds_count{kind=\"Entity\"} 2",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("dreampipe_operator_last_successful_reconcile_timestamp_seconds{"));
    }

    #[test]
    fn objects_are_counted_by_ready_state_when_scraped() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let states = Arc::new(Mutex::new(vec!["True", "False", "True"]));
        let cache = states.clone();
        metrics.count_objects(
            "Projection",
            Box::new(move || cache.lock().unwrap().clone()),
        );
        let has = |text: &str, line: &str| text.lines().any(|l| l == line);
        let text = scrape(&registry);
        assert!(
            has(
                &text,
                "dreampipe_operator_objects{kind=\"Projection\",ready=\"True\"} 2"
            ),
            "{text}"
        );
        assert!(has(
            &text,
            "dreampipe_operator_objects{kind=\"Projection\",ready=\"Unknown\"} 0"
        ));
        states.lock().unwrap().clear();
        assert!(
            has(
                &scrape(&registry),
                "dreampipe_operator_objects{kind=\"Projection\",ready=\"True\"} 0"
            ),
            "a deleted object leaves the count"
        );
    }
}
