//! Where records come from. Each source reads records, maps them with the Adapter's
//! [`Mapping`] and hands the items to the [`Submitter`](super::submit::Submitter).

pub mod file;
pub mod generator;
pub mod http;
pub mod nats;
pub mod webhook;

use serde_json::Value as Json;

use super::mapping::{Item, Mapping};
use super::status::Stats;

/// Maps `records`, counting each as read. A record that fails mapping is counted as rejected,
/// logged and kept as the last error; the others go on.
pub fn map_records<'a>(
    records: impl IntoIterator<Item = &'a Json>,
    mapping: &Mapping,
    stats: &Stats,
) -> Vec<Item> {
    let mut items = Vec::new();
    for record in records {
        stats.read(1);
        match mapping.map(record) {
            Ok(item) => items.push(item),
            Err(error) => {
                let message = crate::error_chain(&error);
                tracing::warn!(error = %message, "record rejected");
                stats.rejected(1, message);
            }
        }
    }
    items
}
