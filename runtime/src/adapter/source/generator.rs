//! The `generator` source: synthetic customer records `{id, name, email, city, amount,
//! updatedAt}` over `keys` distinct ids, `rate` a second, the same ones for the same seed.

use std::time::Duration;
use tracing::Instrument as _;

use crds::adapter::GeneratorSource;
use process::Health;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::super::submit::SubmitError;
use super::{Feed, Setup, Source};
use crate::simulator::crm::{SplitMix64, stamp};

const CITIES: &[&str] = &[
    "Lyon", "Oslo", "Porto", "Turku", "Gent", "Graz", "Cork", "Brno",
];
/// `updatedAt` of the first record (2026-01-01T00:00:00Z); each next one is a millisecond later,
/// so the records do not depend on the clock.
const FIRST_UPDATE_SECOND: i64 = 1_767_225_600;

/// The deterministic sequence of records.
#[derive(Debug, Clone)]
pub struct Records {
    random: SplitMix64,
    keys: u64,
    produced: u64,
}

impl Records {
    pub fn new(seed: u64, keys: u64) -> Self {
        Records {
            random: SplitMix64::new(seed),
            keys: keys.max(1),
            produced: 0,
        }
    }
}

impl Iterator for Records {
    type Item = Json;

    fn next(&mut self) -> Option<Json> {
        let n = self.random.below(self.keys);
        let city = CITIES[self.random.below(CITIES.len() as u64) as usize];
        let amount = self.random.below(100_000) as i64;
        let updated_at = jiff::Timestamp::from_second(FIRST_UPDATE_SECOND)
            .expect("a valid time")
            .checked_add(jiff::SignedDuration::from_millis(self.produced as i64))
            .expect("within jiff's range");
        self.produced += 1;
        Some(json!({
            "id": format!("c{n:08}"),
            "name": format!("Customer {n}"),
            "email": format!("customer{n}@example.com"),
            "city": city,
            "amount": amount,
            "updatedAt": stamp(updated_at),
        }))
    }
}

/// The generator source.
#[derive(Debug)]
pub struct Generator {
    spec: GeneratorSource,
    batch_size: u32,
}

impl Generator {
    pub fn new(spec: &GeneratorSource, setup: &Setup<'_>) -> Self {
        Generator {
            spec: spec.clone(),
            batch_size: setup.spec.batch_size,
        }
    }
}

impl Source for Generator {
    const KIND: &'static str = "generator";
    type Error = SubmitError;

    async fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        health.set_ready(true);
        generate(&self.spec, self.batch_size, feed, shutdown)
            .await
            .or_else(super::ignore_shutdown)
    }
}

/// Generates `count` records (forever when omitted) at `rate` a second, then idles.
async fn generate(
    source: &GeneratorSource,
    batch_size: u32,
    feed: &Feed,
    shutdown: &CancellationToken,
) -> Result<(), SubmitError> {
    let mut records = Records::new(source.seed, source.keys);
    let rate = u64::from(source.rate.max(1));
    let chunk = u64::from(batch_size.max(1)).min(rate);
    let start = tokio::time::Instant::now();
    let mut produced = 0u64;
    tracing::info!(rate, count = ?source.count, keys = source.keys, seed = source.seed, "generating");
    while source.count.is_none_or(|count| produced < count) {
        let take = source
            .count
            .map_or(chunk, |count| chunk.min(count - produced));
        let batch: Vec<Json> = records.by_ref().take(take as usize).collect();
        feed.deliver(&batch, shutdown)
            .instrument(crate::span!("adapter.poll", source = "generator"))
            .await?;
        produced += take;
        let due = start + Duration::from_secs_f64(produced as f64 / rate as f64);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(due) => {}
        }
    }
    tracing::info!(produced, "generator finished; idle until shut down");
    shutdown.cancelled().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_generates_the_same_records() {
        let first: Vec<Json> = Records::new(7, 50).take(100).collect();
        assert_eq!(first, Records::new(7, 50).take(100).collect::<Vec<_>>());
        assert_ne!(first, Records::new(8, 50).take(100).collect::<Vec<_>>());
    }

    #[test]
    fn records_cycle_through_the_configured_number_of_keys() {
        let ids: std::collections::BTreeSet<String> = Records::new(1, 5)
            .take(500)
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 5);
    }
}
