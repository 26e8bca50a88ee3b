//! What the adapter has done so far: counters (also exported as Prometheus metrics), the last
//! sync time and the last error, served at `/v1/status` for the operator.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The adapter's figures, shared by the source, the submitter and the HTTP server.
#[derive(Debug)]
pub struct Stats {
    records_read: Counter,
    submitted: Counter,
    /// By event `type`: created, updated, deleted.
    changed: Family<Labels, Counter>,
    unchanged: Counter,
    rejected: Counter,
    polls: Family<Labels, Histogram, fn() -> Histogram>,
    backlog: Gauge,
    source_lag_bytes: Gauge,
    last: Mutex<Last>,
}

type Labels = Vec<(&'static str, &'static str)>;

impl Default for Stats {
    fn default() -> Self {
        fn histogram() -> Histogram {
            // 10 ms .. ~80 s: a poll is one or more pages of an HTTP API and their submission.
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        }
        Stats {
            records_read: Counter::default(),
            submitted: Counter::default(),
            changed: Family::default(),
            unchanged: Counter::default(),
            rejected: Counter::default(),
            polls: Family::new_with_constructor(histogram),
            backlog: Gauge::default(),
            source_lag_bytes: Gauge::default(),
            last: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Last {
    sync_time: Option<String>,
    error: Option<String>,
    backlog: Option<u64>,
    source_lag_bytes: Option<u64>,
}

/// The JSON of `/v1/status`, the wire type the operator reads too.
pub use crds::report::AdapterReport;

impl Stats {
    /// Figures registered in `registry` under `dreampipe_adapter_` (ADR 55):
    /// `records_{read,submitted,changed,unchanged,rejected}_total` (changed by event `type`)
    /// and `poll_duration_seconds{result}` (`ok`, `error`) of the http source's polls.
    pub fn register(registry: &mut Registry) -> Self {
        let stats = Stats::default();
        let adapter = registry.sub_registry_with_prefix("dreampipe_adapter_records");
        for (name, help, counter) in [
            ("read", "Records read from the source", &stats.records_read),
            (
                "submitted",
                "Records submitted to the receiver",
                &stats.submitted,
            ),
            (
                "unchanged",
                "Submitted records that carried no new information",
                &stats.unchanged,
            ),
            (
                "rejected",
                "Records that failed mapping or were rejected by the receiver",
                &stats.rejected,
            ),
        ] {
            adapter.register(name, help, counter.clone());
        }
        adapter.register(
            "changed",
            "Submitted records that appended an event, by event type",
            stats.changed.clone(),
        );
        for type_ in ["created", "updated", "deleted"] {
            drop(stats.changed.get_or_create(&vec![("type", type_)]));
        }
        registry
            .sub_registry_with_prefix("dreampipe_adapter")
            .register_with_unit(
                "poll_duration",
                "Time one poll of the source took, with the submission of what it read",
                Unit::Seconds,
                stats.polls.clone(),
            );
        registry.sub_registry_with_prefix("dreampipe_adapter").register(
            "source_backlog",
            "Records the source holds that the adapter has not read yet, where the source can tell",
            stats.backlog.clone(),
        );
        registry
            .sub_registry_with_prefix("dreampipe_adapter")
            .register_with_unit(
                "source_lag",
                "WAL a postgres source's replication slot holds that the adapter has not confirmed",
                Unit::Bytes,
                stats.source_lag_bytes.clone(),
            );
        stats
    }

    /// Times one poll of the source.
    pub fn polled(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.polls
            .get_or_create(&vec![("result", result)])
            .observe(took.as_secs_f64());
    }

    fn changed(&self, type_: &'static str) -> u64 {
        self.changed.get_or_create(&vec![("type", type_)]).get()
    }

    pub fn read(&self, records: u64) {
        self.records_read.inc_by(records);
    }

    pub fn submitted(&self, items: u64) {
        self.submitted.inc_by(items);
    }

    /// Counts one item's result as the receiver named it.
    pub fn result(&self, result: &str) {
        match result {
            "created" | "updated" | "deleted" => {
                let type_ = match result {
                    "created" => "created",
                    "updated" => "updated",
                    _ => "deleted",
                };
                self.changed.get_or_create(&vec![("type", type_)]).inc()
            }
            "unchanged" => self.unchanged.inc(),
            _ => self.rejected.inc(),
        };
    }

    /// Counts `count` rejected records and keeps `error` as the last error.
    pub fn rejected(&self, count: u64, error: String) {
        self.rejected.inc_by(count);
        self.error(error);
    }

    /// Keeps `error` as the last error.
    pub fn error(&self, error: String) {
        self.last.lock().expect("stats lock").error = Some(error);
    }

    /// Records the source holds that the adapter has not read yet.
    pub fn backlog(&self, records: u64) {
        self.backlog.set(i64::try_from(records).unwrap_or(i64::MAX));
        self.last.lock().expect("stats lock").backlog = Some(records);
    }

    /// WAL bytes the source's replication slot holds unconfirmed.
    pub fn source_lag_bytes(&self, bytes: u64) {
        self.source_lag_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.last.lock().expect("stats lock").source_lag_bytes = Some(bytes);
    }

    /// Notes that a sync finished now.
    pub fn synced(&self) {
        self.last.lock().expect("stats lock").sync_time = Some(jiff::Timestamp::now().to_string());
    }

    pub fn status(&self) -> AdapterReport {
        let last = self.last.lock().expect("stats lock");
        let (created, updated, deleted) = (
            self.changed("created"),
            self.changed("updated"),
            self.changed("deleted"),
        );
        AdapterReport {
            last_sync_time: last.sync_time.clone(),
            records_read: self.records_read.get(),
            submitted: self.submitted.get(),
            created,
            updated,
            deleted,
            changed: created + updated + deleted,
            unchanged: self.unchanged.get(),
            rejected: self.rejected.get(),
            last_error: last.error.clone(),
            backlog: last.backlog,
            source_lag_bytes: last.source_lag_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_exported_by_prometheus_conventions() {
        let mut registry = Registry::default();
        let stats = Stats::register(&mut registry);
        stats.read(3);
        stats.result("created");
        stats.rejected(2, "bad".to_owned());
        stats.polled(Duration::from_millis(30), true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "dreampipe_adapter_records_read_total 3",
            "dreampipe_adapter_records_submitted_total 0",
            "dreampipe_adapter_records_changed_total{type=\"created\"} 1",
            "dreampipe_adapter_records_changed_total{type=\"updated\"} 0",
            "dreampipe_adapter_records_changed_total{type=\"deleted\"} 0",
            "dreampipe_adapter_records_unchanged_total 0",
            "dreampipe_adapter_records_rejected_total 2",
            "dreampipe_adapter_poll_duration_seconds_count{result=\"ok\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert_eq!(stats.status().changed, 1);
        assert_eq!(stats.status().last_error.as_deref(), Some("bad"));
    }
}
