//! Committing what a worker read: publishing first (NATS sink), then rows, dead letters and
//! the checkpoint in one transaction; a batch Postgres refuses is committed one event at a
//! time to find the poison; `onError: Stop` records the stop and ends the pass.

use std::future::IntoFuture;
use std::time::Instant;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use crds::projection::OnError;

use super::super::database::{self, Batch, Checkpoint, CommitError, Progress};
use super::super::plan::Output;
use super::outcome::{self, Item, Outbound, Outcome};
use super::{Exit, Worker, WorkerError};

impl Worker {
    /// Commits `items` (one chunk, in order), honouring `onError`. Returns an exit when the
    /// worker must end.
    pub(super) async fn apply(
        &self,
        checkpoint: &mut Checkpoint,
        items: Vec<Item>,
    ) -> Result<Option<Exit>, WorkerError> {
        if items.is_empty() {
            return Ok(None);
        }
        let (items, stop) = outcome::split_at_stop(items, self.on_error);
        if !items.is_empty() {
            let progress = outcome::progress_of(&items, checkpoint.sequence);
            match self.commit(checkpoint, &items, progress, None).await {
                Ok(Some(exit)) => return Ok(Some(exit)),
                Ok(None) => {}
                Err(WorkerError::Commit(CommitError::Rejected(_))) => {
                    // Some row of the batch is poison: find it by committing one event at a time.
                    for item in items {
                        if let Some(exit) = self.apply_alone(checkpoint, item).await? {
                            return Ok(Some(exit));
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(poison) = stop {
            return self.stop(checkpoint, poison).await;
        }
        Ok(None)
    }

    async fn apply_alone(
        &self,
        checkpoint: &mut Checkpoint,
        item: Item,
    ) -> Result<Option<Exit>, WorkerError> {
        let progress = outcome::progress_of(std::slice::from_ref(&item), checkpoint.sequence);
        let items = [item];
        match self.commit(checkpoint, &items, progress, None).await {
            Err(WorkerError::Commit(CommitError::Rejected(error))) => {
                let [item] = items;
                let poison = outcome::rejected(item, error)
                    .map_err(|error| WorkerError::Commit(CommitError::Rejected(error)))?;
                match self.on_error {
                    OnError::Stop => self.stop(checkpoint, poison).await,
                    _ => self.commit(checkpoint, &[poison], progress, None).await,
                }
            }
            other => other,
        }
    }

    /// Records the stop at `poison` (the checkpoint stays before it) and ends the pass.
    async fn stop(
        &self,
        checkpoint: &mut Checkpoint,
        poison: Item,
    ) -> Result<Option<Exit>, WorkerError> {
        let Outcome::Poison(dead) = &poison.outcome else {
            return Ok(None);
        };
        tracing::error!(
            generation = %self.running.plan.generation,
            partition = self.partition,
            sequence = poison.sequence,
            reason = %dead.reason,
            "poison event: partition stopped (onError: Stop)"
        );
        let progress = outcome::stopped_at(checkpoint, &poison);
        let reason = outcome::stop_reason(poison.sequence, dead);
        if let Some(exit) = self
            .commit(checkpoint, &[], progress, Some(&reason))
            .await?
        {
            return Ok(Some(exit));
        }
        Ok(Some(Exit::Stopped {
            at: checkpoint.sequence,
        }))
    }

    /// Publishes (NATS sink), then commits rows, dead letters and checkpoint in one transaction.
    pub(super) async fn commit(
        &self,
        checkpoint: &mut Checkpoint,
        items: &[Item],
        progress: Progress,
        stopped: Option<&str>,
    ) -> Result<Option<Exit>, WorkerError> {
        let plan = &self.running.plan;
        let started = Instant::now();
        let sorted = outcome::sort(items, self.on_error);
        for letter in &sorted.skipped {
            tracing::warn!(generation = %plan.generation, partition = self.partition, sequence = letter.sequence, reason = %letter.reason, "poison event skipped");
        }
        for letter in &sorted.dead_letters {
            tracing::warn!(generation = %plan.generation, partition = self.partition, sequence = letter.sequence, reason = %letter.reason, "poison event dead-lettered");
        }
        if let Output::Nats { subject } = &plan.output {
            self.publish(subject, &sorted.outbound).await?;
        }
        let batch = Batch {
            partition: self.partition,
            fence: &self.fence,
            from: checkpoint.sequence,
            rows: &sorted.rows,
            dead_letters: &sorted.dead_letters,
            erased: &sorted.erased,
            progress,
            stopped,
        };
        let spans = self.commit_spans(items);
        let result = database::commit(&self.pool, plan, self.running.write.as_ref(), &batch).await;
        if result.is_err() {
            for span in &spans {
                span.record("otel.status_code", "ERROR");
            }
        }
        drop(spans);
        match result {
            Ok(()) => {
                *checkpoint = Checkpoint {
                    sequence: progress.sequence,
                    lag: Some(progress.lag),
                    failing: false,
                };
                let generation = plan.generation.as_str();
                let dead = sorted.dead_letters.len() as u64;
                let skipped = sorted.skipped.len() as u64;
                self.metrics.count(generation, "dead_letter", dead);
                for letter in &sorted.dead_letters {
                    self.metrics.count_dead_letter(generation, letter.cause);
                }
                self.metrics.count(generation, "skipped", skipped);
                self.metrics
                    .count(generation, "applied", progress.events - dead - skipped);
                self.metrics
                    .lag
                    .get_or_create(&self.partition_labels())
                    .set(progress.lag as i64);
                if progress.lag == 0 {
                    self.set_lag_seconds(0.0);
                }
                if !items.is_empty() {
                    self.metrics
                        .commit_seconds
                        .get_or_create(&vec![("generation", generation.to_owned())])
                        .observe(started.elapsed().as_secs_f64());
                }
                Ok(None)
            }
            Err(CommitError::Fenced) => {
                tracing::info!(generation = %plan.generation, partition = self.partition, "partition lease lost; stopping its worker");
                Ok(Some(Exit::Fenced))
            }
            Err(error) => Err(WorkerError::Commit(error)),
        }
    }

    /// A `projector.commit` span for each traced item, continuing the trace stored with its
    /// event; they end when the commit does. None while traces are not exported.
    fn commit_spans(&self, items: &[Item]) -> Vec<tracing::Span> {
        if !crate::trace::enabled() {
            return Vec::new();
        }
        let plan = &self.running.plan;
        items
            .iter()
            .filter_map(|item| {
                let traceparent = item.trace.as_deref()?;
                let span = tracing::info_span!(
                    "projector.commit",
                    otel.kind = "consumer",
                    otel.status_code = tracing::field::Empty,
                    projection = %plan.projection,
                    generation = %plan.generation,
                    partition = self.partition,
                    sequence = item.sequence,
                );
                crate::trace::continue_from(&span, traceparent);
                Some(span)
            })
            .collect()
    }

    /// Publishes and waits for every acknowledgement; the `Nats-Msg-Id` makes a redelivery
    /// (after a crash between publishing and committing) a duplicate the stream drops.
    async fn publish(&self, subject: &str, outbound: &[&Outbound]) -> Result<(), WorkerError> {
        let publish_error = |source| WorkerError::Publish {
            subject: subject.to_owned(),
            source,
        };
        let mut acks = Vec::with_capacity(outbound.len());
        for message in outbound {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, message.message_id.as_str());
            let ack = self
                .jetstream
                .publish_with_headers(subject.to_owned(), headers, message.payload.clone())
                .await
                .map_err(publish_error)?;
            acks.push(ack.into_future());
        }
        futures::future::try_join_all(acks)
            .await
            .map_err(publish_error)?;
        Ok(())
    }
}
