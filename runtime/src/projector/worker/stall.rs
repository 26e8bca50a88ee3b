//! A partition that cannot move (stopped at a poison event, or failing again and again) keeps
//! its checkpoint row up to date: its growing lag, and the error it keeps failing with.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull;

use super::super::database;
use super::super::lag::oldest_pending_age;
use super::{Exit, Worker, WorkerError};

/// How often a partition that cannot move counts its lag again.
const STALL_REFRESH: Duration = Duration::from_secs(1);

impl Worker {
    /// A stopped partition is not restarted before its process is; until the worker is
    /// cancelled or fenced it counts its lag again, so the status shows it growing.
    pub(super) async fn stay_stopped(&self, at: u64) -> Exit {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Exit::Cancelled,
                _ = tokio::time::sleep(STALL_REFRESH) => {}
            }
            if !self.report_stall(Some(at), None).await {
                return Exit::Fenced;
            }
        }
    }

    /// Records the lag of a partition that cannot move from `at` (None: its checkpoint as
    /// stored) and the error it keeps failing with. Returns false when the lease (or the
    /// checkpoint) moved; a failure to record is only logged, the next attempt tries again.
    pub(super) async fn report_stall(&self, at: Option<u64>, failing: Option<&str>) -> bool {
        let plan = &self.running.plan;
        let at = match at {
            Some(sequence) => sequence,
            None => match database::checkpoint(&self.pool, plan, self.partition).await {
                Ok(checkpoint) => checkpoint.sequence,
                Err(error) => {
                    tracing::warn!(partition = self.partition, error = %crate::error_chain(&error), "cannot read the checkpoint of a partition that cannot move");
                    return true;
                }
            },
        };
        let lag = match self.pending_after(at).await {
            Ok(lag) => Some(lag),
            Err(error) => {
                tracing::warn!(partition = self.partition, error = %crate::error_chain(&error), "cannot count the lag of a partition that cannot move");
                None
            }
        };
        match self.pending_age(at).await {
            Ok(age) => self.set_lag_seconds(age),
            Err(error) => {
                tracing::warn!(partition = self.partition, error = %crate::error_chain(&error), "cannot tell the age of the oldest event a partition that cannot move has not applied");
            }
        }
        let recorded = database::record_stall(
            &self.pool,
            plan,
            self.partition,
            &self.fence,
            at,
            lag,
            failing,
        )
        .await;
        match recorded {
            Ok(recorded) => {
                if let (true, Some(lag)) = (recorded, lag) {
                    self.metrics
                        .lag
                        .get_or_create(&self.partition_labels())
                        .set(lag as i64);
                }
                recorded
            }
            Err(error) => {
                tracing::warn!(partition = self.partition, error = %crate::error_chain(&error), "cannot record a partition that cannot move");
                true
            }
        }
    }

    /// Seconds since the stream stored the partition's first event after `sequence`.
    async fn pending_age(&self, sequence: u64) -> Result<f64, WorkerError> {
        let names = self.running.plan.stream_names();
        let stream = self.stream().await?;
        oldest_pending_age(&stream, &names, self.partition, sequence, SystemTime::now())
            .await
            .map_err(|source| WorkerError::Read {
                partition: self.partition,
                source: Box::new(source),
            })
    }

    /// Events of the partition after stream sequence `sequence`: the pending count of a
    /// consumer that starts there and is deleted unread.
    async fn pending_after(&self, sequence: u64) -> Result<u64, WorkerError> {
        let names = self.running.plan.stream_names();
        let stream = self.stream().await?;
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: names.partition_subjects(self.partition),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: sequence + 1,
                },
                // Removed by the server should the delete below not arrive.
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|source| WorkerError::Consumer {
                partition: self.partition,
                source,
            })?;
        let info = consumer.cached_info();
        if let Err(error) = stream.delete_consumer(&info.name).await {
            tracing::debug!(consumer = %info.name, %error, "could not delete a counting consumer; it expires");
        }
        Ok(info.num_pending)
    }
}
