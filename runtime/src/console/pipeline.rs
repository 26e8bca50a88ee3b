//! The live pipeline the console draws, made of the replicas' heartbeats (ADR 80). Pure: it
//! is given each heartbeat and the time, and answers a namespace's nodes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crds::report::{Heartbeat, RoleHeartbeat};
use serde::Serialize;

/// A replica silent for this many of its heartbeat periods is no longer shown.
const MISSED_BEATS: u32 = 3;
/// Replicas silent this long are forgotten altogether.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Generation changes kept per Projection.
const TIMELINE_LENGTH: usize = 32;

/// Heartbeats by replica, and what each Projection's generations went through.
#[derive(Debug, Default)]
pub struct Pipeline {
    replicas: BTreeMap<ReplicaKey, Seen>,
    timelines: BTreeMap<ResourceKey, VecDeque<GenerationChange>>,
}

/// `(namespace, kind, name)`.
type ResourceKey = (String, &'static str, String);
/// `(namespace, kind, name, replica)`.
type ReplicaKey = (String, &'static str, String, String);

#[derive(Debug)]
struct Seen {
    heartbeat: Heartbeat,
    at: SystemTime,
}

/// A generation seen in a new state or phase: the console's record of a build and a swap.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationChange {
    pub generation: String,
    /// `building`, `live`, `retired`, …
    pub state: String,
    pub phase: crds::projection::Phase,
    /// When the console first saw it so (RFC 3339).
    pub since: String,
}

/// One namespace's pipeline.
#[derive(Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineView {
    pub namespace: String,
    /// Each: `name`, `ready`, `replicas`, `kind`, `spec` (the Adapter's), `report` (its
    /// `/v1/status`).
    #[schema(value_type = Vec<Object>)]
    pub adapters: Vec<Node>,
    /// Each as an adapter, with the Entity's spec and its receiver's report.
    #[schema(value_type = Vec<Object>)]
    pub entities: Vec<Node>,
    /// Each as an adapter, with the Projection's spec, a replica's report and `timeline`:
    /// the generation changes seen, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub projections: Vec<Node>,
    /// When this was put together (RFC 3339): the clock rates are measured on.
    pub at: String,
}

/// A resource and the replicas running it.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    /// Every replica reporting is ready (and one is).
    pub ready: bool,
    pub replicas: Vec<Replica>,
    /// The spec and report of the replica heard from last (of a projector: the last with a
    /// report).
    #[serde(flatten)]
    pub role: RoleHeartbeat,
    /// A Projection's generation changes, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<GenerationChange>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    pub replica: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_because: Option<String>,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
}

fn kind_of(role: &RoleHeartbeat) -> &'static str {
    role.kind()
}

impl Pipeline {
    /// Takes one heartbeat received at `now`.
    pub fn record(&mut self, heartbeat: Heartbeat, now: SystemTime) {
        let kind = kind_of(&heartbeat.role);
        if let RoleHeartbeat::Projector {
            report: Some(report),
            ..
        } = &heartbeat.role
        {
            let timeline = self
                .timelines
                .entry((heartbeat.namespace.clone(), kind, heartbeat.name.clone()))
                .or_default();
            for generation in &report.generations {
                let last = timeline
                    .iter()
                    .rev()
                    .find(|c| c.generation == generation.generation);
                if last.is_none_or(|c| c.state != generation.state || c.phase != generation.phase) {
                    timeline.push_back(GenerationChange {
                        generation: generation.generation.clone(),
                        state: generation.state.clone(),
                        phase: generation.phase,
                        since: humantime::format_rfc3339_millis(now).to_string(),
                    });
                    if timeline.len() > TIMELINE_LENGTH {
                        timeline.pop_front();
                    }
                }
            }
        }
        let key = (
            heartbeat.namespace.clone(),
            kind,
            heartbeat.name.clone(),
            heartbeat.replica.clone(),
        );
        self.replicas.insert(key, Seen { heartbeat, at: now });
        self.replicas
            .retain(|_, seen| age(seen.at, now) < FORGET_AFTER);
        let replicas = &self.replicas;
        self.timelines.retain(|(namespace, kind, name), _| {
            replicas
                .keys()
                .any(|(n, k, r, _)| n == namespace && k == kind && r == name)
        });
    }

    /// The nodes of `namespace` whose replicas reported lately, by name.
    pub fn view(&self, namespace: &str, now: SystemTime) -> PipelineView {
        let mut nodes: BTreeMap<(&'static str, &str), Vec<&Seen>> = BTreeMap::new();
        for ((n, kind, name, _), seen) in &self.replicas {
            let silent = Duration::from_millis(seen.heartbeat.every_ms) * MISSED_BEATS;
            if n == namespace && age(seen.at, now) <= silent {
                nodes.entry((*kind, name.as_str())).or_default().push(seen);
            }
        }
        let mut view = PipelineView {
            namespace: namespace.to_owned(),
            adapters: Vec::new(),
            entities: Vec::new(),
            projections: Vec::new(),
            at: humantime::format_rfc3339_millis(now).to_string(),
        };
        for ((kind, name), seen) in nodes {
            let node = self.node(namespace, kind, name, &seen, now);
            match node.role {
                RoleHeartbeat::Adapter { .. } => view.adapters.push(node),
                RoleHeartbeat::Receiver { .. } => view.entities.push(node),
                RoleHeartbeat::Projector { .. } => view.projections.push(node),
            }
        }
        view
    }

    fn node(
        &self,
        namespace: &str,
        kind: &'static str,
        name: &str,
        seen: &[&Seen],
        now: SystemTime,
    ) -> Node {
        let has_report = |s: &&&Seen| match &s.heartbeat.role {
            RoleHeartbeat::Projector { report, .. } => report.is_some(),
            _ => true,
        };
        let latest = seen
            .iter()
            .filter(has_report)
            .max_by_key(|s| s.at)
            .or_else(|| seen.iter().max_by_key(|s| s.at))
            .expect("a node has a replica");
        let timeline = self
            .timelines
            .get(&(namespace.to_owned(), kind, name.to_owned()))
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        Node {
            name: name.to_owned(),
            ready: seen.iter().all(|s| s.heartbeat.ready),
            replicas: seen
                .iter()
                .map(|s| Replica {
                    replica: s.heartbeat.replica.clone(),
                    ready: s.heartbeat.ready,
                    not_ready_because: s.heartbeat.not_ready_because.clone(),
                    last_seen_ms: age(s.at, now).as_millis() as u64,
                })
                .collect(),
            role: latest.heartbeat.role.clone(),
            timeline,
        }
    }
}

fn age(at: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(at).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::projection::Phase;
    use crds::report::{AdapterReport, GenerationReport, ProjectorReport};

    fn adapter(name: &str, replica: &str, ready: bool, read: u64) -> Heartbeat {
        let spec: crds::AdapterSpec = serde_json::from_value(serde_json::json!({
            "entity": "customer", "source": {"generator": {"rate": 1}}, "mapping": {"id": "record.id"}
        }))
        .unwrap();
        Heartbeat {
            namespace: "shop".into(),
            name: name.into(),
            replica: replica.into(),
            ready,
            not_ready_because: (!ready).then(|| "nats unreachable".into()),
            every_ms: 2000,
            role: RoleHeartbeat::Adapter {
                spec: Box::new(spec),
                report: AdapterReport {
                    records_read: read,
                    ..AdapterReport::default()
                },
            },
        }
    }

    fn projector(generations: &[(&str, &str, Phase)]) -> Heartbeat {
        let spec: crds::ProjectionSpec = serde_json::from_value(serde_json::json!({
            "entity": "customer",
            "sink": {"postgres": {"view": "customers", "columns": [{"name": "id", "type": "text"}]}}
        }))
        .unwrap();
        Heartbeat {
            namespace: "shop".into(),
            name: "customers".into(),
            replica: "p-0".into(),
            ready: true,
            not_ready_because: None,
            every_ms: 2000,
            role: RoleHeartbeat::Projector {
                spec: Box::new(spec),
                report: Some(ProjectorReport {
                    generations: generations
                        .iter()
                        .map(|(generation, state, phase)| GenerationReport {
                            generation: (*generation).into(),
                            state: (*state).into(),
                            phase: *phase,
                            lag: 0,
                            last_applied_sequence: 0,
                            events: 0,
                            progress: 100,
                            dead_letters: 0,
                            unhandled_dead_letters: 0,
                            partitions: Vec::new(),
                        })
                        .collect(),
                    ..ProjectorReport::default()
                }),
            },
        }
    }

    #[test]
    fn a_node_is_ready_only_when_every_replica_reporting_is() {
        let mut pipeline = Pipeline::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        pipeline.record(adapter("crm", "a-0", true, 10), start);
        pipeline.record(
            adapter("crm", "a-1", false, 20),
            start + Duration::from_secs(1),
        );
        let view = pipeline.view("shop", start + Duration::from_secs(2));
        assert_eq!(view.adapters.len(), 1);
        let node = &view.adapters[0];
        assert!(!node.ready);
        assert_eq!(node.replicas.len(), 2);
        assert_eq!(node.replicas[0].last_seen_ms, 2000);
        let RoleHeartbeat::Adapter { report, .. } = &node.role else {
            panic!("an adapter node")
        };
        assert_eq!(report.records_read, 20, "the replica heard from last");
        assert!(pipeline.view("other", start).adapters.is_empty());
    }

    #[test]
    fn a_replica_silent_for_three_beats_leaves_its_node() {
        let mut pipeline = Pipeline::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        pipeline.record(adapter("crm", "a-0", true, 1), start);
        pipeline.record(
            adapter("crm", "a-1", true, 1),
            start + Duration::from_secs(5),
        );
        let view = pipeline.view("shop", start + Duration::from_secs(7));
        assert_eq!(view.adapters[0].replicas.len(), 1);
        assert_eq!(view.adapters[0].replicas[0].replica, "a-1");
        assert!(
            pipeline
                .view("shop", start + Duration::from_secs(12))
                .adapters
                .is_empty()
        );
    }

    #[test]
    fn a_generation_swap_is_kept_as_building_then_live() {
        let mut pipeline = Pipeline::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let second = |s: u64| start + Duration::from_secs(s);
        pipeline.record(projector(&[("g1", "live", Phase::Live)]), second(0));
        pipeline.record(
            projector(&[
                ("g1", "live", Phase::Live),
                ("g2", "building", Phase::Building),
            ]),
            second(2),
        );
        pipeline.record(
            projector(&[
                ("g1", "live", Phase::Live),
                ("g2", "building", Phase::Building),
            ]),
            second(4),
        );
        pipeline.record(
            projector(&[("g1", "retired", Phase::Live), ("g2", "live", Phase::Live)]),
            second(6),
        );
        let view = pipeline.view("shop", second(7));
        let changes: Vec<(&str, &str)> = view.projections[0]
            .timeline
            .iter()
            .map(|c| (c.generation.as_str(), c.state.as_str()))
            .collect();
        assert_eq!(
            changes,
            [
                ("g1", "live"),
                ("g2", "building"),
                ("g1", "retired"),
                ("g2", "live")
            ]
        );
        assert_eq!(
            view.projections[0].timeline[1].since,
            humantime::format_rfc3339_millis(second(2)).to_string()
        );
    }
}
