//! One projector replica: registers its generation, shares the partitions with the other
//! replicas through leases, runs a worker per (leased partition, running generation), swaps
//! a caught-up generation in, and drops retired ones after a grace period.
//!
//! - `decide`: pure: partition assignment, lease changes, which generations and workers run.
//! - here: the IO around it, once per heartbeat (`tick`).

mod decide;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use crds::projection::OnError;
use crds::report::ViewConflict;
use crds::{Entity, Projection};
use process::Backoff;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::database::{self, DatabaseError, Fence, GenerationRow};
use super::metrics::Metrics;
use super::plan::{Output, Plan, PlanError};
use super::status::{StatusSource, progress_ratio};
use super::worker::{Exit, Running, Worker, WorkerOptions};
use crate::expr::Evaluator;
use decide::WorkerKey;

/// The first delay before preparing the database again, and the longest.
const PREPARE_RETRY_FIRST: Duration = Duration::from_millis(200);
const PREPARE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why a projector could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("projection {projection} cannot be compiled")]
    Plan {
        projection: String,
        #[source]
        source: Box<PlanError>,
    },
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// Timings of leases, swaps and workers.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often a replica heartbeats, renews its leases and rebalances.
    pub heartbeat: Duration,
    /// A lease (and a replica's liveness) lasts this long without renewal; a dead replica's
    /// partitions move after at most this long plus a heartbeat.
    pub lease_ttl: Duration,
    /// How long a retired generation's table is kept after the swap.
    pub retire_after: Duration,
    /// A building generation counts as caught up when every partition's lag is at most this.
    pub caught_up_lag: u64,
    /// The analysts' read-only Postgres role, granted SELECT on the stable view.
    pub reader_role: Option<String>,
    /// Login roles made members of the reader role.
    pub reader_members: Vec<String>,
    pub worker: WorkerOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(5),
            retire_after: Duration::from_secs(300),
            caught_up_lag: 0,
            reader_role: None,
            reader_members: Vec::new(),
            worker: WorkerOptions::default(),
        }
    }
}

/// A projector replica, ready to run.
#[derive(Debug)]
pub struct Projector {
    configured: Arc<Running>,
    replica: String,
    options: Options,
    pool: PgPool,
    jetstream: Context,
    metrics: Metrics,
    owned: Arc<Mutex<BTreeSet<u32>>>,
    /// Set while another Projection owns the view; the status endpoint reports it.
    conflict: Arc<Mutex<Option<ViewConflict>>>,
}

/// A worker task; aborted when dropped, so that a replica that is itself aborted (a crash
/// in tests) leaves no worker behind.
#[derive(Debug)]
struct WorkerTask {
    cancel: CancellationToken,
    handle: Option<JoinHandle<Exit>>,
}

impl Drop for WorkerTask {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

impl WorkerTask {
    /// Cancels the worker and waits (briefly) for it to finish its current commit.
    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(handle) = self.handle.take()
            && tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .is_err()
        {
            tracing::warn!("a partition worker did not stop within 10s");
        }
    }
}

impl Projector {
    /// Compiles `projection` (over `entity`) for replica `replica`.
    pub fn new(
        projection: &Projection,
        entity: &Entity,
        replica: impl Into<String>,
        pool: PgPool,
        client: async_nats::Client,
        metrics: Metrics,
        options: Options,
    ) -> Result<Self, ProjectorError> {
        let plan = Plan::new(projection, entity.spec.partitions).map_err(|source| {
            ProjectorError::Plan {
                projection: super::plan::projection_id(projection),
                source: Box::new(source),
            }
        })?;
        Ok(Projector {
            configured: Arc::new(Running::new(plan)),
            replica: replica.into(),
            options,
            pool,
            jetstream: jetstream::new(client),
            metrics,
            owned: Arc::default(),
            conflict: Arc::default(),
        })
    }

    /// The generation this replica's configuration asks for.
    pub fn generation(&self) -> &str {
        &self.configured.plan.generation
    }

    /// What the status endpoint reads.
    pub fn status_source(&self) -> StatusSource {
        let plan = &self.configured.plan;
        StatusSource {
            pool: self.pool.clone(),
            schema: plan.schema.clone(),
            projection: plan.projection.clone(),
            replica: self.replica.clone(),
            view: match &plan.output {
                Output::Postgres(view) => view.view.clone(),
                Output::Nats { subject } => subject.clone(),
            },
            configured_generation: plan.generation.clone(),
            owned: Arc::clone(&self.owned),
            jetstream: Some(self.jetstream.clone()),
            conflict: Arc::clone(&self.conflict),
        }
    }

    /// Runs until `shutdown`; `ready` is called with true once the stream exists and the
    /// generation is registered. Transient failures (database, NATS) are retried, not returned.
    pub async fn run(
        self,
        ready: impl Fn(bool) + Send,
        shutdown: CancellationToken,
    ) -> Result<(), ProjectorError> {
        let plan = &self.configured.plan;
        let projection = plan.projection.clone();
        tracing::info!(%projection, generation = %plan.generation, replica = %self.replica, "projector starting");
        let mut backoff = Backoff::new(PREPARE_RETRY_FIRST, PREPARE_RETRY_MAX);
        loop {
            let prepared = async {
                database::prepare(&self.pool, &plan.schema).await?;
                if let Some(role) = &self.options.reader_role {
                    let view = plan.postgres().map(|p| p.view.as_str());
                    database::open_to_reader(
                        &self.pool,
                        &plan.schema,
                        role,
                        &self.options.reader_members,
                        view,
                    )
                    .await?;
                }
                database::register(&self.pool, plan).await
            };
            match prepared.await {
                Ok(()) => {
                    if self.set_conflict(None).is_some() {
                        tracing::info!(%projection, "the view is free again; this projection owns it now");
                        ready(false); // until the stream is found, as on any start
                    }
                    break;
                }
                Err(DatabaseError::ViewConflict { view, owner }) => {
                    // Refused, not broken: the process stays up and ready so that its status
                    // (the conflict, naming the owner) reaches the Projection (ADR 60).
                    if self
                        .set_conflict(Some(ViewConflict {
                            view: view.clone(),
                            owner: owner.clone(),
                        }))
                        .is_none()
                    {
                        tracing::warn!(%projection, %view, %owner, "view owned by another projection: refused; projecting nothing until it is free");
                    }
                    ready(true);
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "cannot prepare the database yet; retrying");
                }
            }
            if !backoff.wait(&shutdown).await {
                return Ok(());
            }
        }
        let stream_name = plan.stream_names().stream();
        // The receiver creates the stream; look again every heartbeat, no faster, no slower.
        let mut poll = Backoff::new(self.options.heartbeat, self.options.heartbeat);
        loop {
            match self.jetstream.get_stream(&stream_name).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::info!(stream = %stream_name, %error, "waiting for the entity's stream");
                }
            }
            if !poll.wait(&shutdown).await {
                return Ok(());
            }
        }
        ready(true);

        let mut state = Supervision::default();
        let mut ticks = tokio::time::interval(self.options.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.tick(&mut state).await {
                tracing::warn!(error = %crate::error_chain(&error), "projector housekeeping failed; retrying");
            }
        }

        ready(false);
        let stopping: Vec<WorkerTask> = state.workers.drain().map(|(_, w)| w).collect();
        futures::future::join_all(stopping.into_iter().map(WorkerTask::stop)).await;
        if let Err(error) =
            database::leave(&self.pool, &plan.schema, &projection, &self.replica).await
        {
            tracing::warn!(error = %crate::error_chain(&error), "could not release the leases; they will expire");
        }
        tracing::info!(%projection, "projector stopped");
        Ok(())
    }

    /// Records (or clears) a view conflict; returns the previous one.
    fn set_conflict(&self, conflict: Option<ViewConflict>) -> Option<ViewConflict> {
        match self.conflict.lock() {
            Ok(mut shared) => std::mem::replace(&mut *shared, conflict),
            Err(_) => None,
        }
    }

    /// One round of housekeeping: leases, generations, workers, swap, retirement.
    async fn tick(&self, state: &mut Supervision) -> Result<(), ProjectorError> {
        self.reap(state).await;
        self.rebalance(state).await?;
        let rows = database::generations(
            &self.pool,
            &self.configured.plan.schema,
            &self.configured.plan.projection,
        )
        .await?;
        let running = self.running(state, &rows)?;
        self.start_and_stop_workers(state, &running).await;
        self.export_build_progress(&rows).await?;
        self.swap_and_drop(state, &rows).await
    }

    /// Sets the build progress gauge of every building generation (over all replicas'
    /// partitions) and removes the gauges of generations that stopped building.
    async fn export_build_progress(&self, rows: &[GenerationRow]) -> Result<(), ProjectorError> {
        let (building, others): (Vec<&GenerationRow>, Vec<&GenerationRow>) = rows
            .iter()
            .partition(|g| g.state == database::GenerationState::Building);
        let stopped: Vec<String> = others.iter().map(|g| g.generation.clone()).collect();
        let mut ratios = Vec::with_capacity(building.len());
        if !building.is_empty() {
            let partitions = database::partitions(
                &self.pool,
                &self.configured.plan.schema,
                &self.configured.plan.projection,
            )
            .await?;
            for generation in building {
                let rows: Vec<&database::PartitionRow> = partitions
                    .iter()
                    .filter(|p| p.generation == generation.generation)
                    .collect();
                ratios.push((generation.generation.clone(), progress_ratio(&rows)));
            }
        }
        self.metrics.set_build_progress(&ratios, &stopped);
        Ok(())
    }

    /// Collects the workers that ended on their own; a fenced one gives its partition up (it
    /// is acquired again if it is still ours).
    async fn reap(&self, state: &mut Supervision) {
        let finished: Vec<WorkerKey> = state
            .workers
            .iter()
            .filter(|(_, w)| w.handle.as_ref().is_none_or(JoinHandle::is_finished))
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            if let Some(mut task) = state.workers.remove(&key)
                && let Some(handle) = task.handle.take()
            {
                match handle.await {
                    Ok(Exit::Fenced) => self.lose(state, key.1).await,
                    Ok(Exit::Cancelled | Exit::Stopped { .. }) => {}
                    Err(error) => tracing::error!(%error, "a partition worker panicked"),
                }
            }
        }
    }

    /// Heartbeats, renews the leases held, and moves them towards this replica's share.
    async fn rebalance(&self, state: &mut Supervision) -> Result<(), ProjectorError> {
        let projection = self.configured.plan.projection.as_str();
        let schema = &self.configured.plan.schema;
        let partitions = self.configured.plan.definition.partitions;
        let ttl = self.options.lease_ttl;
        let replicas =
            database::heartbeat(&self.pool, schema, projection, &self.replica, ttl).await?;
        let assigned = decide::assigned_partitions(&replicas, &self.replica, partitions);
        let owned: Vec<(u32, i64)> = state.leases.iter().map(|(p, f)| (*p, f.epoch)).collect();
        let renewed: HashSet<u32> =
            database::renew(&self.pool, schema, projection, &self.replica, &owned, ttl)
                .await?
                .into_iter()
                .collect();
        let owned: BTreeSet<u32> = owned.into_iter().map(|(p, _)| p).collect();
        let changes = decide::lease_changes(&owned, &renewed, &assigned);
        for partition in changes.lost {
            tracing::warn!(partition, "partition lease lost");
            self.lose(state, partition).await;
        }
        for partition in changes.hand_over {
            // Hand it over once its workers have committed and stopped.
            self.stop_partition(state, partition).await;
            if let Some(fence) = state.leases.remove(&partition) {
                database::release(&self.pool, schema, projection, partition, &fence).await?;
                tracing::info!(partition, "partition handed over");
            }
        }
        for partition in changes.acquire {
            if let Some(fence) = database::acquire(
                &self.pool,
                schema,
                projection,
                partition,
                &self.replica,
                ttl,
            )
            .await?
            {
                tracing::info!(partition, epoch = fence.epoch, "partition lease acquired");
                state.leases.insert(partition, fence);
            }
        }
        if let Ok(mut shared) = self.owned.lock() {
            *shared = state.leases.keys().copied().collect();
        }
        self.metrics.partitions_owned.set(state.leases.len() as i64);
        Ok(())
    }

    /// The compiled generations that run here, by name (compiled once, then kept).
    fn running(
        &self,
        state: &mut Supervision,
        rows: &[GenerationRow],
    ) -> Result<HashMap<String, Arc<Running>>, ProjectorError> {
        let plan = &self.configured.plan;
        let nats = matches!(plan.output, Output::Nats { .. });
        let mut running = HashMap::new();
        for row in decide::running_generations(rows, &plan.generation, nats) {
            let compiled = if row.generation == plan.generation {
                Arc::clone(&self.configured)
            } else if let Some(compiled) = state.plans.get(&row.generation) {
                Arc::clone(compiled)
            } else {
                let compiled = Arc::new(Running::new(self.compile(row, plan.on_error)?));
                state
                    .plans
                    .insert(row.generation.clone(), Arc::clone(&compiled));
                compiled
            };
            running.insert(row.generation.clone(), compiled);
        }
        Ok(running)
    }

    /// Stops the workers of generations that no longer run; starts the missing ones.
    async fn start_and_stop_workers(
        &self,
        state: &mut Supervision,
        running: &HashMap<String, Arc<Running>>,
    ) {
        let held: BTreeSet<u32> = state.leases.keys().copied().collect();
        let names: BTreeSet<&str> = running.keys().map(String::as_str).collect();
        let changes = decide::worker_changes(state.workers.keys(), &held, &names);
        for key in changes.stop {
            if let Some(task) = state.workers.remove(&key) {
                task.stop().await;
            }
        }
        for key in changes.start {
            if let (Some(compiled), Some(fence)) = (running.get(&key.0), state.leases.get(&key.1)) {
                let task = self.spawn(compiled, key.1, fence.clone());
                state.workers.insert(key, task);
            }
        }
    }

    /// Swaps our generation in once it has caught up; drops retired tables after the grace.
    async fn swap_and_drop(
        &self,
        state: &mut Supervision,
        rows: &[GenerationRow],
    ) -> Result<(), ProjectorError> {
        let plan = &self.configured.plan;
        if decide::is_building(rows, &plan.generation) {
            database::swap_if_caught_up(
                &self.pool,
                plan,
                self.options.caught_up_lag,
                self.options.reader_role.as_deref(),
            )
            .await?;
        }
        for row in decide::due_for_drop(rows, self.options.retire_after) {
            let retired = self.compile(row, OnError::Skip)?;
            database::drop_generation(&self.pool, &retired).await?;
            state.plans.remove(&row.generation);
        }
        Ok(())
    }

    /// Compiles a recorded generation of this projection.
    fn compile(&self, row: &GenerationRow, on_error: OnError) -> Result<Plan, ProjectorError> {
        let projection = &self.configured.plan.projection;
        Plan::compile(projection.clone(), row.definition.clone(), on_error).map_err(|source| {
            ProjectorError::Plan {
                projection: projection.clone(),
                source: Box::new(source),
            }
        })
    }

    fn spawn(&self, running: &Arc<Running>, partition: u32, fence: Fence) -> WorkerTask {
        let cancel = CancellationToken::new();
        let worker = Worker {
            running: Arc::clone(running),
            partition,
            fence,
            pool: self.pool.clone(),
            jetstream: self.jetstream.clone(),
            evaluator: Evaluator::default(),
            options: self.options.worker.clone(),
            metrics: self.metrics.clone(),
            on_error: self.configured.plan.on_error,
            cancel: cancel.clone(),
        };
        tracing::debug!(generation = %running.plan.generation, partition, "partition worker starting");
        WorkerTask {
            cancel,
            handle: Some(tokio::spawn(worker.run())),
        }
    }

    async fn stop_partition(&self, state: &mut Supervision, partition: u32) {
        let keys: Vec<WorkerKey> = state
            .workers
            .keys()
            .filter(|(_, p)| *p == partition)
            .cloned()
            .collect();
        let tasks: Vec<WorkerTask> = keys
            .iter()
            .filter_map(|k| state.workers.remove(k))
            .collect();
        futures::future::join_all(tasks.into_iter().map(WorkerTask::stop)).await;
    }

    async fn lose(&self, state: &mut Supervision, partition: u32) {
        self.stop_partition(state, partition).await;
        state.leases.remove(&partition);
    }
}

/// What the supervisor keeps between ticks.
#[derive(Debug, Default)]
struct Supervision {
    leases: HashMap<u32, Fence>,
    /// A worker stopped by a poison event (`onError: Stop`) stays here, keeping its lag up to
    /// date, so it is not restarted until the process is.
    workers: HashMap<WorkerKey, WorkerTask>,
    /// Compiled plans of generations other than ours (the live one while ours builds).
    plans: HashMap<String, Arc<Running>>,
}
