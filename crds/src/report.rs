//! The `GET /v1/status` reports of the runtime's roles: written by the runtime, read by the
//! operator into each resource's status. One definition for both sides, so a field renamed on
//! one side cannot silently vanish from `kubectl get` on the other.

use serde::{Deserialize, Serialize};

use crate::projection::Phase;

/// A receiver's report: its Entity's stream and the stream's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverReport {
    pub entity: String,
    pub stream: String,
    #[serde(flatten)]
    pub stats: StreamStats,
}

/// The figures of an Entity's stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStats {
    /// Events stored.
    pub events: u64,
    /// Distinct keys (subjects) with events.
    pub keys: u64,
    /// Sequence of the newest event.
    pub last_sequence: u64,
    /// When the newest event was stored (RFC 3339); absent while the stream is empty.
    #[serde(default)]
    pub last_event_time: Option<String>,
}

/// A projector replica's report of its Projection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorReport {
    pub projection: String,
    pub replica: String,
    /// Partitions this replica holds the lease of.
    #[serde(default)]
    pub owned_partitions: Vec<u32>,
    /// The stable view (or subject) readers use.
    pub view: String,
    /// The generation serving the view.
    #[serde(default)]
    pub active_generation: Option<String>,
    /// A generation being built to replace it.
    #[serde(default)]
    pub building_generation: Option<String>,
    /// The generation this replica's configuration asks for.
    pub configured_generation: String,
    #[serde(default)]
    pub generations: Vec<GenerationReport>,
    /// How far behind in time the serving generation (the building one while none serves)
    /// is: the age of its oldest event not yet applied, 0 when caught up; absent when the
    /// stream could not be read.
    #[serde(default)]
    pub lag_seconds: Option<f64>,
    /// The view is owned by another Projection of the namespace: this one is refused and
    /// projects nothing until the owner lets it go (ADR 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_conflict: Option<ViewConflict>,
}

/// A view name claimed by another Projection of the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewConflict {
    pub view: String,
    /// `<namespace>/<name>` of the Projection that owns the view.
    pub owner: String,
}

/// One generation's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationReport {
    pub generation: String,
    /// `building`, `live` or `retired`.
    pub state: String,
    pub phase: Phase,
    /// Events not yet applied, summed over partitions.
    pub lag: u64,
    /// Highest stream sequence applied in any partition.
    pub last_applied_sequence: u64,
    /// Events applied.
    pub events: u64,
    /// Percentage of the stream replayed (100 once caught up).
    pub progress: u8,
    pub dead_letters: u64,
    /// Dead letters nobody marked handled yet (`dreampipe deadletters handle`).
    #[serde(default)]
    pub unhandled_dead_letters: u64,
    #[serde(default)]
    pub partitions: Vec<PartitionReport>,
}

/// One partition of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionReport {
    pub partition: u32,
    pub sequence: u64,
    #[serde(default)]
    pub lag: Option<u64>,
    #[serde(default)]
    pub owner: Option<String>,
    /// Why the partition stopped (`onError: Stop`), if it did.
    #[serde(default)]
    pub stopped: Option<String>,
    /// The error the partition keeps failing with, while it cannot move.
    #[serde(default)]
    pub failing: Option<String>,
}

/// An adapter's report: its last sync and its counts since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterReport {
    #[serde(default)]
    pub last_sync_time: Option<String>,
    pub records_read: u64,
    pub submitted: u64,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub updated: u64,
    #[serde(default)]
    pub deleted: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub rejected: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Records the source holds that the adapter has not read yet (a JetStream consumer's
    /// pending messages), where the source can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Bytes of WAL a Postgres source's replication slot holds that the adapter has not
    /// confirmed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_lag_bytes: Option<u64>,
}

/// What a runtime replica says of itself on NATS every few seconds (ADR 80): its resource,
/// its readiness and its `/v1/status` report. The console's live pipeline is made of these,
/// the same under `dreampipe dev` and on Kubernetes, with no call to the Kubernetes API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    /// The replica sending it (the pod name on Kubernetes).
    pub replica: String,
    pub ready: bool,
    /// Why the replica is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_because: Option<String>,
    /// Milliseconds until the next one: a replica silent for three of these is gone.
    pub every_ms: u64,
    #[serde(flatten)]
    pub role: RoleHeartbeat,
}

/// The role-specific part of a [`Heartbeat`]: the resource's spec (what the console draws the
/// pipeline's edges and a Projection's filters from) and the role's report, absent while the
/// role cannot read its own figures (NATS or Postgres away).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RoleHeartbeat {
    Receiver {
        spec: Box<crate::EntitySpec>,
        report: Option<ReceiverReport>,
    },
    Adapter {
        spec: Box<crate::AdapterSpec>,
        report: AdapterReport,
    },
    Projector {
        spec: Box<crate::ProjectionSpec>,
        report: Option<ProjectorReport>,
    },
}

impl RoleHeartbeat {
    /// The kind's token in heartbeat subjects.
    pub fn kind(&self) -> &'static str {
        match self {
            RoleHeartbeat::Receiver { .. } => "receiver",
            RoleHeartbeat::Adapter { .. } => "adapter",
            RoleHeartbeat::Projector { .. } => "projector",
        }
    }
}

/// Where a replica of `kind` for resource `name` sends its heartbeats:
/// `dreampipe.status.<namespace>.<kind>.<name>`. Readers take who sent it from the body, so a
/// name with dots (more tokens) is read the same.
pub fn heartbeat_subject(namespace: &str, kind: &str, name: &str) -> String {
    format!("{HEARTBEAT_PREFIX}.{namespace}.{kind}.{name}")
}

/// Every heartbeat subject starts with this.
pub const HEARTBEAT_PREFIX: &str = "dreampipe.status";
