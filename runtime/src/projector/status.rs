//! The status endpoint (`GET /v1/status`): per generation, its phase, lag, last applied
//! sequence, build progress and dead letters, read from Postgres so that every replica
//! answers for the whole projection (the operator reads it into the Projection's status). The
//! wire type is `crds::report::ProjectorReport`, the one the operator reads.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use crds::projection::Phase;
use crds::report::{GenerationReport, PartitionReport, ProjectorReport};
use sqlx::PgPool;

use super::database::{self, DeadLetterCounts, GenerationRow, GenerationState, PartitionRow};

/// What the status endpoint needs besides the database.
#[derive(Clone, Debug)]
pub struct StatusSource {
    pub pool: PgPool,
    pub projection: String,
    pub replica: String,
    pub view: String,
    pub configured_generation: String,
    /// Kept up to date by the supervisor.
    pub owned: Arc<Mutex<BTreeSet<u32>>>,
}

impl StatusSource {
    /// Reads the figures and builds the report.
    pub async fn report(&self) -> Result<ProjectorReport, database::DatabaseError> {
        let generations = database::generations(&self.pool, &self.projection).await?;
        let partitions = database::partitions(&self.pool, &self.projection).await?;
        let dead_letters = database::dead_letter_counts(&self.pool, &self.projection).await?;
        let owned = self
            .owned
            .lock()
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default();
        Ok(report(
            self,
            owned,
            &generations,
            &partitions,
            &dead_letters,
        ))
    }
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
        // Lag in seconds is measured by the metrics work (issue 15); until then the operator's
        // autoscaler holds replicas where they are.
        lag_seconds: None,
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
        (events * 100)
            .checked_div(events + lag)
            .unwrap_or(0)
            .min(99) as u8
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
                ]
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
