//! Lag in time: the age of a partition's oldest event not yet applied, read from the stream
//! (its timestamp there) by a direct get, so any replica can tell it for any partition.

use std::time::SystemTime;

use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind, Stream};

use super::metrics::age_seconds;
use crate::store::StreamNames;

/// Seconds since the stream stored the first event of `partition` after sequence `after`;
/// 0 when there is none (the partition has caught up).
pub async fn oldest_pending_age(
    stream: &Stream,
    names: &StreamNames,
    partition: u32,
    after: u64,
    now: SystemTime,
) -> Result<f64, DirectGetError> {
    match stream
        .direct_get_next_for_subject(names.partition_subjects(partition), Some(after + 1))
        .await
    {
        Ok(message) => Ok(age_seconds(message.time.unix_timestamp_nanos(), now)),
        Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(0.0),
        Err(error) => Err(error),
    }
}
