//! What fault tests hold a receiver to: every answer it gave while a server went away is
//! filed in a [`Ledger`] (a 2xx with the version it acknowledged, a 503, or something wrong),
//! and afterwards [`Ledger::holds_in`] checks the stream against it: no wrong answer, nothing
//! acknowledged lost, versions per key gap-free, no event twice.

#![allow(dead_code, reason = "each test binary uses the part it needs")]

use std::collections::{BTreeMap, HashSet};

use runtime::store::{Event, StreamNames};
use serde_json::Value;

/// What writers saw.
#[derive(Debug, Default)]
pub struct Ledger {
    pub acknowledged: Vec<(String, u64)>,
    pub unavailable: usize,
    pub wrong: Vec<String>,
}

impl Ledger {
    /// Files one answer about `key`: a 2xx must carry the version it acknowledged.
    pub fn record(&mut self, key: &str, status: u16, answer: &Value) {
        match status {
            200..=299 => match answer["version"].as_u64() {
                Some(version) => self.acknowledged.push((key.to_owned(), version)),
                None => self
                    .wrong
                    .push(format!("{status} without a version: {answer}")),
            },
            503 => self.unavailable += 1,
            _ => self.wrong.push(format!("{status}: {answer}")),
        }
    }

    /// Files a request that got no answer at all.
    pub fn no_answer(&mut self, error: impl std::fmt::Display) {
        self.wrong.push(format!("no answer: {error}"));
    }

    /// Adds another writer's ledger to this one.
    pub fn merge(&mut self, other: Ledger) {
        self.acknowledged.extend(other.acknowledged);
        self.unavailable += other.unavailable;
        self.wrong.extend(other.wrong);
    }

    /// Asserts the guarantees against `stored` (see [`events_by_key`]); `figures` go in every
    /// failure message.
    pub fn holds_in(&self, stored: &BTreeMap<String, Vec<Event>>, figures: &str) {
        assert!(
            self.wrong.is_empty(),
            "answers other than 2xx or 503 ({figures}): {:?}",
            &self.wrong[..self.wrong.len().min(5)]
        );
        let missing: Vec<String> = self
            .acknowledged
            .iter()
            .filter(|(key, version)| {
                !stored
                    .get(key)
                    .is_some_and(|events| events.iter().any(|e| e.version == *version))
            })
            .map(|(key, version)| format!("{key} v{version}"))
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged but not in the stream ({figures}): {missing:?}"
        );
        for (key, events) in stored {
            let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
            let expected: Vec<u64> = (1..=events.len() as u64).collect();
            assert_eq!(
                versions, expected,
                "versions of {key} are not gap-free and unique ({figures})"
            );
            let ids: HashSet<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            assert_eq!(
                ids.len(),
                events.len(),
                "a duplicate event of {key} ({figures})"
            );
        }
    }
}

/// Every event of the stream of `names`, by key, in stream order.
pub async fn events_by_key(
    js: &async_nats::jetstream::Context,
    names: &StreamNames,
) -> BTreeMap<String, Vec<Event>> {
    let stream = js.get_stream(names.stream()).await.unwrap();
    let mut by_key: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut sequence = 1;
    while let Ok(message) = stream.get_raw_message(sequence).await {
        let event: Event = serde_json::from_slice(&message.payload).unwrap();
        by_key.entry(event.key.clone()).or_default().push(event);
        sequence += 1;
    }
    by_key
}
