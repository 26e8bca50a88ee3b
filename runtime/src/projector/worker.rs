//! One partition of one generation: read the partition's events from the checkpoint on, in
//! order, project them in batches, and commit each batch with its checkpoint. The stream
//! position lives in Postgres, so the consumer is an ordered (ephemeral, ack-less) one that
//! starts after the checkpoint; a crash loses only uncommitted work, which is read again.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{self, OrderedConfig};
use async_nats::jetstream::{self, Context};
use crds::projection::OnError;
use futures::StreamExt;
use serde_json::Value as Json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::database::{self, Batch, Checkpoint, CommitError, DeadLetter, Fence, Progress};
use super::metrics::Metrics;
use super::plan::{Output, Plan};
use super::rows::{Poison, Projected, effect};
use super::schema::Write;
use crate::expr::Evaluator;
use crate::store::Event;

/// A generation a replica runs: its plan and the statements that write its tables.
#[derive(Debug)]
pub struct Running {
    pub plan: Plan,
    pub write: Option<Write>,
}

impl Running {
    pub fn new(plan: Plan) -> Self {
        let write = database::write_statements(&plan).map(|s| s.write);
        Running { plan, write }
    }
}

/// How a worker ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (shutdown, rebalance, retired generation).
    Cancelled,
    /// Its lease is gone: another replica owns the partition.
    Fenced,
    /// A pass stopped at a poison event (`onError: Stop`), its checkpoint at `at`. `run` then
    /// keeps the partition's lag up to date and never returns this.
    Stopped { at: u64 },
}

/// Consecutive failed passes after which a partition reports that it cannot move.
const FAILING_AFTER: u32 = 3;

/// How often a partition that cannot move counts its lag again.
const STALL_REFRESH: Duration = Duration::from_secs(1);

/// Why a worker pass failed; it backs off and starts again from the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    #[error("committing a batch failed")]
    Commit(#[source] CommitError),
    #[error("stream {stream} is not available")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("could not create a consumer of partition {partition}")]
    Consumer {
        partition: u32,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    #[error("could not read partition {partition}")]
    Read {
        partition: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the consumer of partition {partition} ended")]
    Ended { partition: u32 },
    #[error("could not publish to {subject}")]
    Publish {
        subject: String,
        #[source]
        source: jetstream::context::PublishError,
    },
}

/// Batch size, idle time and the like.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Most events committed in one transaction.
    pub batch_size: usize,
    /// After this long without events the partition counts as caught up.
    pub idle: Duration,
    /// How long a batch waits for more events before it commits what it has.
    pub linger: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            batch_size: 1000,
            idle: Duration::from_millis(500),
            linger: Duration::from_millis(10),
        }
    }
}

/// A message to republish (NATS sink).
#[derive(Debug)]
struct Outbound {
    message_id: String,
    payload: bytes::Bytes,
}

/// One event's outcome in a batch.
#[derive(Debug)]
enum Outcome {
    Row(Projected),
    Publish(Option<Outbound>),
    Poison(DeadLetter),
}

#[derive(Debug)]
struct Item {
    sequence: u64,
    pending: u64,
    /// Kept (cheaply: `Bytes` shares the buffer) for the dead letter of a row Postgres refuses.
    payload: bytes::Bytes,
    outcome: Outcome,
}

/// A partition worker.
#[derive(Debug)]
pub struct Worker {
    pub running: Arc<Running>,
    pub partition: u32,
    pub fence: Fence,
    pub pool: PgPool,
    pub jetstream: Context,
    pub evaluator: Evaluator,
    pub options: WorkerOptions,
    pub metrics: Metrics,
    pub on_error: OnError,
    pub cancel: CancellationToken,
}

impl Worker {
    /// Runs until cancelled or fenced; transient failures restart from the checkpoint. A
    /// partition that keeps failing says so, with its growing lag, in its checkpoint row.
    pub async fn run(self) -> Exit {
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0;
        loop {
            let mut committed = false;
            match self.pass(&mut committed).await {
                Ok(Exit::Stopped { at }) => return self.stay_stopped(at).await,
                Ok(exit) => return exit,
                Err(error) => {
                    if committed {
                        failures = 0;
                        backoff = Duration::from_millis(100);
                    }
                    failures += 1;
                    let reason = crate::error_chain(&error);
                    tracing::warn!(
                        generation = %self.running.plan.generation,
                        partition = self.partition,
                        failures,
                        error = %reason,
                        "partition worker failed; retrying from the checkpoint"
                    );
                    if failures >= FAILING_AFTER {
                        self.report_stall(None, Some(&reason)).await;
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Exit::Cancelled,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads and commits until an exit or an error; `committed` says whether any commit landed.
    async fn pass(&self, committed: &mut bool) -> Result<Exit, WorkerError> {
        let plan = &self.running.plan;
        let names = plan.stream_names();
        let mut checkpoint = database::checkpoint(&self.pool, plan, self.partition).await?;
        let stream = self
            .jetstream
            .get_stream(names.stream())
            .await
            .map_err(|source| WorkerError::Stream {
                stream: names.stream(),
                source,
            })?;
        let deliver_policy = match checkpoint.sequence {
            0 => DeliverPolicy::All,
            sequence => DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: names.partition_subjects(self.partition),
                deliver_policy,
                max_batch: self.options.batch_size as i64,
                ..Default::default()
            })
            .await
            .map_err(|source| WorkerError::Consumer {
                partition: self.partition,
                source,
            })?;
        let read_error = |source: Box<dyn std::error::Error + Send + Sync>| WorkerError::Read {
            partition: self.partition,
            source,
        };
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(Exit::Cancelled),
                next = tokio::time::timeout(self.options.idle, messages.next()) => next,
            };
            match next {
                Err(_idle) => {
                    if checkpoint.lag != Some(0) || checkpoint.failing {
                        // Nothing more to read: record that this partition has caught up.
                        let progress = Progress {
                            sequence: checkpoint.sequence,
                            events: 0,
                            lag: 0,
                        };
                        if let Some(exit) =
                            self.commit(&mut checkpoint, &[], &progress, None).await?
                        {
                            return Ok(exit);
                        }
                        *committed = true;
                    }
                }
                Ok(None) => {
                    return Err(WorkerError::Ended {
                        partition: self.partition,
                    });
                }
                Ok(Some(first)) => {
                    // Linger briefly so a backlog commits in full batches, not per network read.
                    let mut chunk = vec![first];
                    let deadline = tokio::time::Instant::now() + self.options.linger;
                    while chunk.len() < self.options.batch_size {
                        match tokio::time::timeout_at(deadline, messages.next()).await {
                            Ok(Some(message)) => chunk.push(message),
                            Ok(None) | Err(_) => break,
                        }
                    }
                    let mut items = Vec::with_capacity(chunk.len());
                    for message in chunk {
                        let message = message.map_err(|e| read_error(Box::new(e)))?;
                        let info = message.info().map_err(read_error)?;
                        let (sequence, pending) = (info.stream_sequence, info.pending);
                        if sequence <= checkpoint.sequence {
                            continue;
                        }
                        items.push(Item {
                            sequence,
                            pending,
                            outcome: self.project(sequence, &message.payload),
                            payload: message.payload.clone(),
                        });
                    }
                    if let Some(exit) = self.apply(&mut checkpoint, items).await? {
                        return Ok(exit);
                    }
                    *committed = true;
                }
            }
        }
    }

    /// The outcome of one message.
    fn project(&self, sequence: u64, payload: &bytes::Bytes) -> Outcome {
        let plan = &self.running.plan;
        let event = match decode(plan, payload) {
            Ok(event) => event,
            Err(error) => {
                let poison = Poison::NotAnEvent(error);
                return Outcome::Poison(DeadLetter::new(
                    sequence,
                    None,
                    None,
                    payload.clone(),
                    poison.reason(),
                ));
            }
        };
        let result = match &plan.output {
            Output::Postgres(view) => effect(plan, view, &self.evaluator, &event).map(|effect| {
                Outcome::Row(Projected {
                    sequence,
                    key: event.key.clone(),
                    version: event.version,
                    type_: event.type_,
                    effect,
                })
            }),
            Output::Nats { .. } => super::evaluate::run_filters(plan, &self.evaluator, &event)
                .map_err(Poison::Filter)
                .map(|passed| {
                    Outcome::Publish(passed.map(|assigned| republished(plan, &event, assigned)))
                }),
        };
        result.unwrap_or_else(|poison| {
            Outcome::Poison(DeadLetter::new(
                sequence,
                Some(event.key.clone()),
                Some(event.version),
                payload.clone(),
                poison.reason(),
            ))
        })
    }

    /// Commits `items` (one chunk, in order), honouring `onError`. Returns an exit when the
    /// worker must end.
    async fn apply(
        &self,
        checkpoint: &mut Checkpoint,
        items: Vec<Item>,
    ) -> Result<Option<Exit>, WorkerError> {
        if items.is_empty() {
            return Ok(None);
        }
        let (items, stop) = match self.on_error {
            OnError::Stop => match items
                .iter()
                .position(|i| matches!(i.outcome, Outcome::Poison(_)))
            {
                Some(at) => {
                    let mut items = items;
                    let rest = items.split_off(at);
                    (items, rest.into_iter().next())
                }
                None => (items, None),
            },
            _ => (items, None),
        };
        if !items.is_empty() {
            let progress = Progress {
                sequence: items.last().map_or(checkpoint.sequence, |i| i.sequence),
                events: items.len() as u64,
                lag: items.last().map_or(0, |i| i.pending),
            };
            match self.commit(checkpoint, &items, &progress, None).await {
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
        let progress = Progress {
            sequence: item.sequence,
            events: 1,
            lag: item.pending,
        };
        let items = [item];
        match self.commit(checkpoint, &items, &progress, None).await {
            Err(WorkerError::Commit(CommitError::Rejected(error))) => {
                let [item] = items;
                let Outcome::Row(projected) = item.outcome else {
                    return Err(WorkerError::Commit(CommitError::Rejected(error)));
                };
                let code = database::sqlstate(&error).unwrap_or_default();
                let reason = Poison::Rejected {
                    code,
                    source: error,
                }
                .reason();
                let poison = Item {
                    outcome: Outcome::Poison(DeadLetter::new(
                        projected.sequence,
                        Some(projected.key),
                        Some(projected.version),
                        item.payload.clone(),
                        reason,
                    )),
                    ..item
                };
                match self.on_error {
                    OnError::Stop => self.stop(checkpoint, poison).await,
                    _ => self.commit(checkpoint, &[poison], &progress, None).await,
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
        let progress = Progress {
            sequence: checkpoint.sequence,
            events: 0,
            lag: poison.pending + 1,
        };
        let reason = format!("sequence {}: {}", poison.sequence, dead.reason);
        if let Some(exit) = self
            .commit(checkpoint, &[], &progress, Some(&reason))
            .await?
        {
            return Ok(Some(exit));
        }
        Ok(Some(Exit::Stopped {
            at: checkpoint.sequence,
        }))
    }

    /// A stopped partition is not restarted before its process is; until the worker is
    /// cancelled or fenced it counts its lag again, so the status shows it growing.
    async fn stay_stopped(&self, at: u64) -> Exit {
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
    async fn report_stall(&self, at: Option<u64>, failing: Option<&str>) -> bool {
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
                    let labels = vec![
                        ("generation", plan.generation.clone()),
                        ("partition", self.partition.to_string()),
                    ];
                    self.metrics.lag.get_or_create(&labels).set(lag as i64);
                }
                recorded
            }
            Err(error) => {
                tracing::warn!(partition = self.partition, error = %crate::error_chain(&error), "cannot record a partition that cannot move");
                true
            }
        }
    }

    /// Events of the partition after stream sequence `sequence`: the pending count of a
    /// consumer that starts there and is deleted unread.
    async fn pending_after(&self, sequence: u64) -> Result<u64, WorkerError> {
        let names = self.running.plan.stream_names();
        let stream = self
            .jetstream
            .get_stream(names.stream())
            .await
            .map_err(|source| WorkerError::Stream {
                stream: names.stream(),
                source,
            })?;
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

    /// Publishes (NATS sink), then commits rows, dead letters and checkpoint in one transaction.
    async fn commit(
        &self,
        checkpoint: &mut Checkpoint,
        items: &[Item],
        progress: &Progress,
        stopped: Option<&str>,
    ) -> Result<Option<Exit>, WorkerError> {
        let plan = &self.running.plan;
        let started = Instant::now();
        let mut projected = Vec::new();
        let mut dead = Vec::new();
        let mut outbound = Vec::new();
        let mut skipped = 0;
        for item in items {
            match &item.outcome {
                Outcome::Row(row) => projected.push(row),
                Outcome::Publish(Some(message)) => outbound.push(message),
                Outcome::Publish(None) => {}
                Outcome::Poison(letter) => match self.on_error {
                    OnError::Skip => {
                        tracing::warn!(generation = %plan.generation, partition = self.partition, sequence = letter.sequence, reason = %letter.reason, "poison event skipped");
                        skipped += 1;
                    }
                    _ => {
                        tracing::warn!(generation = %plan.generation, partition = self.partition, sequence = letter.sequence, reason = %letter.reason, "poison event dead-lettered");
                        dead.push(letter.clone());
                    }
                },
            }
        }
        if let Output::Nats { subject } = &plan.output {
            self.publish(subject, &outbound).await?;
        }
        let batch = Batch {
            partition: self.partition,
            fence: &self.fence,
            from: checkpoint.sequence,
            rows: &projected,
            dead_letters: &dead,
            progress: *progress,
            stopped,
        };
        let result = database::commit(&self.pool, plan, self.running.write.as_ref(), &batch).await;
        match result {
            Ok(()) => {
                *checkpoint = Checkpoint {
                    sequence: progress.sequence,
                    lag: Some(progress.lag),
                    failing: false,
                };
                let generation = plan.generation.as_str();
                self.metrics
                    .count(generation, "dead_letter", dead.len() as u64);
                self.metrics.count(generation, "skipped", skipped);
                self.metrics.count(
                    generation,
                    "applied",
                    progress.events - dead.len() as u64 - skipped,
                );
                let labels = vec![
                    ("generation", generation.to_owned()),
                    ("partition", self.partition.to_string()),
                ];
                self.metrics
                    .lag
                    .get_or_create(&labels)
                    .set(progress.lag as i64);
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

/// Decodes an event. Where nothing reads `changes` (no `previous` or `event` in the filters,
/// a Postgres sink), they are skipped: they are often the larger half of the payload.
fn decode(plan: &Plan, payload: &[u8]) -> Result<Event, serde_json::Error> {
    if plan.needs.previous || plan.needs.event || matches!(plan.output, Output::Nats { .. }) {
        return serde_json::from_slice(payload);
    }
    Event::from_slice_without_changes(payload)
}

/// The event republished by a NATS sink: the envelope with `set` assignments laid over its
/// state, under the message id `<projection>/<generation>/<key>/<version>`.
fn republished(plan: &Plan, event: &Event, assigned: super::plan::Assignments) -> Outbound {
    let mut event = event.clone();
    if let Some(Json::Object(state)) = &mut event.state {
        state.extend(assigned);
    }
    Outbound {
        message_id: format!(
            "{}/{}/{}/{}",
            plan.projection, plan.generation, event.key, event.version
        ),
        payload: serde_json::to_vec(&event)
            .expect("an event always serialises")
            .into(),
    }
}
