//! What the adapter has done so far: counters (also exported as Prometheus metrics), the last
//! sync time and the last error, served at `/v1/status` for the operator.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The adapter's figures, shared by the source, the submitter and the HTTP server.
#[derive(Debug, Default)]
pub struct Stats {
    records_read: Counter,
    submitted: Counter,
    created: Counter,
    updated: Counter,
    deleted: Counter,
    unchanged: Counter,
    rejected: Counter,
    last: Mutex<Last>,
}

#[derive(Debug, Default)]
struct Last {
    sync_time: Option<String>,
    error: Option<String>,
}

/// The JSON of `/v1/status`, the wire type the operator reads too.
pub use crds::report::AdapterReport;

impl Stats {
    /// Figures registered as `dreampipe_adapter_*` metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let stats = Stats::default();
        let adapter = registry.sub_registry_with_prefix("dreampipe_adapter");
        for (name, help, counter) in [
            (
                "records_read",
                "Records read from the source",
                &stats.records_read,
            ),
            (
                "submitted",
                "Items submitted to the receiver",
                &stats.submitted,
            ),
            ("created", "Submissions that created a key", &stats.created),
            ("updated", "Submissions that updated a key", &stats.updated),
            ("deleted", "Submissions that deleted a key", &stats.deleted),
            (
                "unchanged",
                "Submissions that carried no new information",
                &stats.unchanged,
            ),
            (
                "rejected",
                "Records that failed mapping or were rejected",
                &stats.rejected,
            ),
        ] {
            adapter.register(name, help, counter.clone());
        }
        stats
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
            "created" => self.created.inc(),
            "updated" => self.updated.inc(),
            "deleted" => self.deleted.inc(),
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

    /// Notes that a sync finished now.
    pub fn synced(&self) {
        self.last.lock().expect("stats lock").sync_time = Some(jiff::Timestamp::now().to_string());
    }

    pub fn status(&self) -> AdapterReport {
        let last = self.last.lock().expect("stats lock");
        let (created, updated, deleted) =
            (self.created.get(), self.updated.get(), self.deleted.get());
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_exported_as_a_dreampipe_adapter_counter() {
        let mut registry = Registry::default();
        let stats = Stats::register(&mut registry);
        stats.read(3);
        stats.result("created");
        stats.rejected(2, "bad".to_owned());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "dreampipe_adapter_records_read_total 3",
            "dreampipe_adapter_submitted_total 0",
            "dreampipe_adapter_created_total 1",
            "dreampipe_adapter_updated_total 0",
            "dreampipe_adapter_deleted_total 0",
            "dreampipe_adapter_unchanged_total 0",
            "dreampipe_adapter_rejected_total 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert_eq!(stats.status().last_error.as_deref(), Some("bad"));
    }
}
