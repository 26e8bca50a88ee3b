//! One partition of one generation: read the partition's events from the checkpoint on, in
//! order, project them in batches, and commit each batch with its checkpoint. The stream
//! position lives in Postgres, so the consumer is an ordered (ephemeral, ack-less) one that
//! starts after the checkpoint; a crash loses only uncommitted work, which is read again.
//!
//! - `outcome`: pure: what a fetched message becomes, where a chunk is cut, what a commit
//!   writes.
//! - `commit`: committing items (publishing first for a NATS sink), one at a time when
//!   Postgres refuses a row, and stopping at a poison event.
//! - `stall`: a partition that cannot move keeps its lag and its error up to date.

mod commit;
mod outcome;
mod stall;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::{self, Context};
use crds::projection::OnError;
use futures::StreamExt;
use process::Backoff;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::database::{self, Checkpoint, CommitError, Fence};
use super::metrics::{Metrics, age_seconds};
use super::plan::Plan;
use super::schema::Write;
use crate::expr::Evaluator;
use outcome::Item;

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

/// How a [`Worker::read`] of one consumer ended.
enum Read {
    Exit(Exit),
    /// A read of each key's latest event has caught up: read every event from here on.
    CaughtUp,
}

/// Consecutive failed passes after which a partition reports that it cannot move.
const FAILING_AFTER: u32 = 3;

/// The first delay before a failed pass starts again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
        let exit = self.run_passes().await;
        // The partition's gauges belong to the worker that runs it: a partition handed over
        // or a generation retired must not leave a stale lag behind (and keep an alert firing).
        let labels = self.partition_labels();
        self.metrics.lag.remove(&labels);
        self.metrics.lag_seconds.remove(&labels);
        exit
    }

    async fn run_passes(&self) -> Exit {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut failures = 0;
        loop {
            let mut committed = false;
            match self.pass(&mut committed).await {
                Ok(Exit::Stopped { at }) => return self.stay_stopped(at).await,
                Ok(exit) => return exit,
                Err(error) => {
                    if committed {
                        failures = 0;
                        backoff.reset();
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
                    if !backoff.wait(&self.cancel).await {
                        return Exit::Cancelled;
                    }
                }
            }
        }
    }

    /// Reads and commits until an exit or an error; `committed` says whether any commit landed.
    async fn pass(&self, committed: &mut bool) -> Result<Exit, WorkerError> {
        let plan = &self.running.plan;
        let mut checkpoint = database::checkpoint(&self.pool, plan, self.partition).await?;
        let stream = self.stream().await?;
        // A build from the start reads each key's latest event only (ADR 82), until it has
        // caught up: then every event, from a consumer whose pending count is events again
        // (JetStream counts a last-per-subject consumer's pending in subjects).
        let mut latest_only = checkpoint.sequence == 0 && plan.latest_events_suffice();
        loop {
            let messages = self
                .messages(&stream, start(checkpoint.sequence, latest_only))
                .await?;
            match self
                .read(messages, &mut checkpoint, latest_only, committed)
                .await?
            {
                Read::Exit(exit) => return Ok(exit),
                Read::CaughtUp => latest_only = false,
            }
        }
    }

    /// The partition's events from an ordered consumer starting at `deliver`.
    async fn messages(
        &self,
        stream: &async_nats::jetstream::stream::Stream,
        deliver: DeliverPolicy,
    ) -> Result<Ordered, WorkerError> {
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: self
                    .running
                    .plan
                    .stream_names()
                    .partition_subjects(self.partition),
                deliver_policy: deliver,
                max_batch: self.options.batch_size as i64,
                ..Default::default()
            })
            .await
            .map_err(|source| WorkerError::Consumer {
                partition: self.partition,
                source,
            })?;
        consumer
            .messages()
            .await
            .map_err(|e| self.read_error(Box::new(e)))
    }

    fn read_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> WorkerError {
        WorkerError::Read {
            partition: self.partition,
            source,
        }
    }

    /// Reads `messages` and commits them in chunks until an exit, an error, or (when
    /// `latest_only`) the partition has caught up.
    async fn read(
        &self,
        mut messages: Ordered,
        checkpoint: &mut Checkpoint,
        latest_only: bool,
        committed: &mut bool,
    ) -> Result<Read, WorkerError> {
        let plan = &self.running.plan;
        let read_error = |source| self.read_error(source);
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(Read::Exit(Exit::Cancelled)),
                next = tokio::time::timeout(self.options.idle, messages.next()) => next,
            };
            match next {
                Err(_idle) => {
                    if outcome::records_caught_up(checkpoint) {
                        // Nothing more to read: record that this partition has caught up.
                        let progress = outcome::caught_up(checkpoint);
                        if let Some(exit) = self.commit(checkpoint, &[], progress, None).await? {
                            return Ok(Read::Exit(exit));
                        }
                        *committed = true;
                    }
                    if latest_only {
                        return Ok(Read::CaughtUp);
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
                        if items.is_empty() {
                            // The oldest event not yet applied: how far behind in time we are.
                            let age = age_seconds(
                                info.published.unix_timestamp_nanos(),
                                SystemTime::now(),
                            );
                            self.set_lag_seconds(age);
                        }
                        items.push(Item {
                            sequence,
                            pending,
                            outcome: outcome::project(
                                plan,
                                &self.evaluator,
                                sequence,
                                &message.payload,
                            ),
                            payload: message.payload.clone(),
                            trace: crate::trace::enabled()
                                .then(|| message.headers.as_ref()?.get(crate::trace::TRACEPARENT))
                                .flatten()
                                .map(|value| value.as_str().to_owned()),
                        });
                    }
                    let caught_up = items.last().is_some_and(|item| item.pending == 0);
                    if let Some(exit) = self.apply(checkpoint, items).await? {
                        return Ok(Read::Exit(exit));
                    }
                    *committed = true;
                    if latest_only && caught_up {
                        return Ok(Read::CaughtUp);
                    }
                }
            }
        }
    }

    /// The Entity's stream.
    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream, WorkerError> {
        let name = self.running.plan.stream_names().stream();
        self.jetstream
            .get_stream(&name)
            .await
            .map_err(|source| WorkerError::Stream {
                stream: name,
                source,
            })
    }

    fn set_lag_seconds(&self, age: f64) {
        self.metrics
            .lag_seconds
            .get_or_create(&self.partition_labels())
            .set(age);
    }

    /// The labels of this partition's metrics.
    fn partition_labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("generation", self.running.plan.generation.clone()),
            ("partition", self.partition.to_string()),
        ]
    }
}

/// Where a consumer of a partition whose checkpoint is at `sequence` starts. A build from the
/// start whose view needs only each key's latest event reads just those (ADR 82): JetStream
/// sends them in stream order and then every new event, so the checkpoint keeps its meaning
/// (everything up to it is applied) and a restart goes on from it with every event.
fn start(sequence: u64, latest_events_suffice: bool) -> DeliverPolicy {
    match sequence {
        0 if latest_events_suffice => DeliverPolicy::LastPerSubject,
        0 => DeliverPolicy::All,
        sequence => DeliverPolicy::ByStartSequence {
            start_sequence: sequence + 1,
        },
    }
}
