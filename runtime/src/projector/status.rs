//! The status endpoint (`GET /v1/status`): per generation, its phase, lag, last applied
//! sequence, build progress and dead letters, read from Postgres so that every replica
//! answers for the whole projection (the operator reads it into the Projection's status). The
//! wire type is `crds::report::ProjectorReport`, the one the operator reads.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_nats::jetstream::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use crds::projection::Phase;
use crds::report::{GenerationReport, PartitionReport, ProjectorReport, ViewConflict};
use sqlx::PgPool;

use super::database::{self, DeadLetterCounts, GenerationRow, GenerationState, PartitionRow};
use super::lag::oldest_pending_age;
use crate::sql::Schema;
use crate::store::StreamNames;

/// What the status endpoint needs besides the database.
#[derive(Clone, Debug)]
pub struct StatusSource {
    pub pool: PgPool,
    /// The namespace's schema.
    pub schema: Schema,
    pub projection: String,
    pub replica: String,
    pub view: String,
    pub configured_generation: String,
    /// Kept up to date by the supervisor.
    pub owned: Arc<Mutex<BTreeSet<u32>>>,
    /// Where the lag in seconds is read from (the stream's timestamps); without it the
    /// report has no `lagSeconds`.
    pub jetstream: Option<Context>,
    /// Set while another Projection owns the view.
    pub conflict: Arc<Mutex<Option<ViewConflict>>>,
}

impl StatusSource {
    /// Reads the figures and builds the report.
    pub async fn report(&self) -> Result<ProjectorReport, database::DatabaseError> {
        let schema = &self.schema;
        let generations = database::generations(&self.pool, schema, &self.projection).await?;
        let partitions = database::partitions(&self.pool, schema, &self.projection).await?;
        let dead_letters =
            database::dead_letter_counts(&self.pool, schema, &self.projection).await?;
        let owned = self
            .owned
            .lock()
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default();
        let lag_seconds = self.lag_seconds(&generations, &partitions).await;
        let mut report = report(self, owned, &generations, &partitions, &dead_letters);
        report.lag_seconds = lag_seconds;
        Ok(report)
    }

    /// The age of the serving generation's oldest event not yet applied, over its
    /// partitions; `None` when the stream cannot be read.
    async fn lag_seconds(
        &self,
        generations: &[GenerationRow],
        partitions: &[PartitionRow],
    ) -> Option<f64> {
        let serving = serving_generation(generations)?;
        let definition = &serving.definition;
        let checkpoints: HashMap<u32, &PartitionRow> = partitions
            .iter()
            .filter(|p| p.generation == serving.generation)
            .map(|p| (p.partition, p))
            .collect();
        let behind: Vec<(u32, u64)> = (0..definition.partitions)
            .filter_map(|partition| match checkpoints.get(&partition) {
                Some(row) if row.lag == Some(0) => None,
                Some(row) => Some((partition, row.sequence)),
                None => Some((partition, 0)),
            })
            .collect();
        if behind.is_empty() {
            return Some(0.0);
        }
        let jetstream = self.jetstream.as_ref()?;
        let names = StreamNames::new(
            &definition.namespace,
            &definition.entity,
            definition.partitions,
        );
        let stream = match jetstream.get_stream(names.stream()).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "no lag in seconds: the stream is not available");
                return None;
            }
        };
        let now = SystemTime::now();
        let mut oldest: f64 = 0.0;
        for (partition, after) in behind {
            match oldest_pending_age(&stream, &names, partition, after, now).await {
                Ok(age) => oldest = oldest.max(age),
                Err(error) => {
                    tracing::debug!(partition, %error, "no lag in seconds: the stream cannot be read");
                    return None;
                }
            }
        }
        Some(oldest)
    }
}

/// The generation whose lag the report shows: the live one, or the building one while none
/// is live. Pure.
pub fn serving_generation(generations: &[GenerationRow]) -> Option<&GenerationRow> {
    let newest = |state: GenerationState| generations.iter().rev().find(|g| g.state == state);
    newest(GenerationState::Live).or_else(|| newest(GenerationState::Building))
}

/// Builds the report from what the database holds. Pure.
pub fn report(
    source: &StatusSource,
    owned_partitions: Vec<u32>,
    generations: &[GenerationRow],
    partitions: &[PartitionRow],
    dead_letters: &HashMap<String, DeadLetterCounts>,
) -> ProjectorReport {
    let generations: Vec<GenerationReport> = generations
        .iter()
        .filter(|g| g.state != GenerationState::Dropped)
        .map(|g| {
            let rows: Vec<&PartitionRow> = partitions
                .iter()
                .filter(|p| p.generation == g.generation)
                .collect();
            generation_status(
                g,
                &rows,
                dead_letters.get(&g.generation).copied().unwrap_or_default(),
            )
        })
        .collect();
    let find = |state: &str| {
        generations
            .iter()
            .rev()
            .find(|g| g.state == state)
            .map(|g| g.generation.clone())
    };
    ProjectorReport {
        projection: source.projection.clone(),
        replica: source.replica.clone(),
        owned_partitions,
        view: source.view.clone(),
        active_generation: find("live"),
        building_generation: find("building"),
        configured_generation: source.configured_generation.clone(),
        generations,
        lag_seconds: None,
        view_conflict: source.conflict.lock().ok().and_then(|c| c.clone()),
    }
}

/// The share of the stream a generation has replayed (0..1): events applied over applied
/// and pending; 1 once every partition has caught up. Pure.
pub fn progress_ratio(partitions: &[&PartitionRow]) -> f64 {
    let lag: u64 = partitions.iter().filter_map(|p| p.lag).sum();
    let events: u64 = partitions.iter().map(|p| p.events).sum();
    if lag == 0 && partitions.iter().all(|p| p.lag.is_some()) && !partitions.is_empty() {
        return 1.0;
    }
    match events + lag {
        0 => 0.0,
        total => events as f64 / total as f64,
    }
}

/// One generation's figures from its checkpoints. Pure.
pub fn generation_status(
    generation: &GenerationRow,
    partitions: &[&PartitionRow],
    dead_letters: DeadLetterCounts,
) -> GenerationReport {
    let lag: u64 = partitions.iter().filter_map(|p| p.lag).sum();
    let events: u64 = partitions.iter().map(|p| p.events).sum();
    let unknown = partitions.iter().any(|p| p.lag.is_none());
    // A partition that cannot move (stopped, or failing again and again) degrades the generation.
    let stalled = partitions
        .iter()
        .any(|p| p.stopped.is_some() || p.failing.is_some());
    let progress = if lag == 0 && !unknown {
        100
    } else {
        ((progress_ratio(partitions) * 100.0) as u8).min(99)
    };
    let state = generation.state.as_str().to_owned();
    let phase = match generation.state {
        _ if stalled => Phase::Degraded,
        GenerationState::Live | GenerationState::Retired => Phase::Live,
        GenerationState::Building | GenerationState::Dropped => Phase::Building,
    };
    GenerationReport {
        generation: generation.generation.clone(),
        state,
        phase,
        lag,
        last_applied_sequence: partitions.iter().map(|p| p.sequence).max().unwrap_or(0),
        events,
        progress,
        dead_letters: dead_letters.total,
        unhandled_dead_letters: dead_letters.unhandled,
        partitions: partitions
            .iter()
            .map(|p| PartitionReport {
                partition: p.partition,
                sequence: p.sequence,
                lag: p.lag,
                owner: p.owner.clone(),
                stopped: p.stopped.clone(),
                failing: p.failing.clone(),
            })
            .collect(),
    }
}

/// `GET /v1/status`.
pub fn routes(source: StatusSource) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .with_state(Arc::new(source))
}

async fn status(State(source): State<Arc<StatusSource>>) -> Response {
    match source.report().await {
        Ok(report) => Json(report).into_response(),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "status unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "status unavailable: database error",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::plan::Definition;
    use crds::projection::Sink;

    fn row(generation: &str, state: GenerationState) -> GenerationRow {
        GenerationRow {
            generation: generation.into(),
            state,
            definition: Definition {
                namespace: "default".into(),
                entity: "customer".into(),
                partitions: 2,
                filters: vec![],
                sink: Sink::default(),
                rebuild: None,
            },
            retired_for: None,
        }
    }

    fn partition(
        generation: &str,
        partition: u32,
        sequence: u64,
        events: u64,
        lag: Option<u64>,
    ) -> PartitionRow {
        PartitionRow {
            generation: generation.into(),
            partition,
            sequence,
            events,
            lag,
            stopped: None,
            failing: None,
            owner: Some("r1".into()),
        }
    }

    // A lazy pool needs a runtime; it never connects.
    #[tokio::test]
    async fn the_report_keeps_the_wire_names_the_operator_reads() {
        let source = StatusSource {
            pool: sqlx::PgPool::connect_lazy("postgres://localhost/unused").unwrap(),
            projection: "default/customers".into(),
            replica: "r1".into(),
            view: "customers".into(),
            configured_generation: "g2".into(),
            owned: Arc::default(),
            jetstream: None,
            conflict: Arc::default(),
            schema: Schema::of_namespace("default"),
        };
        let mut stopped = partition("g2", 1, 5, 5, None);
        stopped.stopped = Some("sequence 6: a filter failed".into());
        let report = report(
            &source,
            vec![0, 1],
            &[
                row("g1", GenerationState::Live),
                row("g2", GenerationState::Building),
            ],
            &[partition("g1", 0, 9, 9, Some(0)), stopped],
            &HashMap::from([(
                "g2".to_owned(),
                DeadLetterCounts {
                    total: 1,
                    unhandled: 1,
                },
            )]),
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "projection": "default/customers",
                "replica": "r1",
                "ownedPartitions": [0, 1],
                "view": "customers",
                "activeGeneration": "g1",
                "buildingGeneration": "g2",
                "configuredGeneration": "g2",
                "lagSeconds": null,
                "generations": [
                    {
                        "generation": "g1", "state": "live", "phase": "Live", "lag": 0,
                        "lastAppliedSequence": 9, "events": 9, "progress": 100, "deadLetters": 0,
                        "unhandledDeadLetters": 0,
                        "partitions": [{"partition": 0, "sequence": 9, "lag": 0, "owner": "r1",
                                        "stopped": null, "failing": null}]
                    },
                    {
                        "generation": "g2", "state": "building", "phase": "Degraded", "lag": 0,
                        "lastAppliedSequence": 5, "events": 5, "progress": 99, "deadLetters": 1,
                        "unhandledDeadLetters": 1,
                        "partitions": [{"partition": 1, "sequence": 5, "lag": null, "owner": "r1",
                                        "stopped": "sequence 6: a filter failed", "failing": null}]
                    }
                ],
                "lagSeconds": null
            })
        );
    }

    #[test]
    fn a_building_generation_reports_progress_from_applied_and_pending_events() {
        let rows = [
            partition("g2", 0, 40, 30, Some(60)),
            partition("g2", 1, 41, 30, Some(30)),
        ];
        let status = generation_status(
            &row("g2", GenerationState::Building),
            &rows.iter().collect::<Vec<_>>(),
            DeadLetterCounts {
                total: 2,
                unhandled: 1,
            },
        );
        assert_eq!(status.phase, Phase::Building);
        assert_eq!((status.lag, status.events, status.progress), (90, 60, 40));
        assert_eq!(status.last_applied_sequence, 41);
        assert_eq!((status.dead_letters, status.unhandled_dead_letters), (2, 1));
    }

    #[test]
    fn a_live_generation_with_a_stopped_partition_is_degraded() {
        let mut stopped = partition("g1", 1, 5, 5, Some(3));
        stopped.stopped = Some("sequence 6: a filter failed".into());
        let rows = [partition("g1", 0, 4, 4, Some(0)), stopped];
        let status = generation_status(
            &row("g1", GenerationState::Live),
            &rows.iter().collect::<Vec<_>>(),
            DeadLetterCounts::default(),
        );
        assert_eq!(status.phase, Phase::Degraded);
        let caught_up = [
            partition("g1", 0, 4, 4, Some(0)),
            partition("g1", 1, 5, 5, Some(0)),
        ];
        let status = generation_status(
            &row("g1", GenerationState::Live),
            &caught_up.iter().collect::<Vec<_>>(),
            DeadLetterCounts::default(),
        );
        assert_eq!(
            (status.phase, status.progress, status.lag),
            (Phase::Live, 100, 0)
        );
    }

    #[test]
    fn a_partition_that_keeps_failing_degrades_its_generation_and_shows_its_lag() {
        let mut failing = partition("g1", 1, 5, 5, Some(12));
        failing.failing = Some("committing a batch failed: relation does not exist".into());
        let rows = [partition("g1", 0, 4, 4, Some(0)), failing];
        let status = generation_status(
            &row("g1", GenerationState::Live),
            &rows.iter().collect::<Vec<_>>(),
            DeadLetterCounts::default(),
        );
        assert_eq!((status.phase, status.lag), (Phase::Degraded, 12));
        assert_eq!(
            status.partitions[1].failing.as_deref(),
            Some("committing a batch failed: relation does not exist")
        );
        let building = generation_status(
            &row("g2", GenerationState::Building),
            &rows.iter().collect::<Vec<_>>(),
            DeadLetterCounts::default(),
        );
        assert_eq!(building.phase, Phase::Degraded);
    }
}
