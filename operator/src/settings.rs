//! What every child Deployment needs besides its resource: the runtime image and where the
//! shared services are. Set once from the operator's flags (the chart's values).

use crds::SecretKeyRef;

/// Cluster-wide settings of the runtime pods the operator builds.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeSettings {
    /// The runtime image (`dreampipe` binary), e.g. `dreampipe:0.1.0`.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never` (kind-loaded images need `IfNotPresent`).
    pub image_pull_policy: String,
    /// NATS URL the runtime pods use (JetStream: streams, KV cursors).
    pub nats_url: String,
    /// Stream replicas of Entities that name none (`spec.stream.replicas`).
    pub default_stream_replicas: u8,
    /// OTLP collector the runtime pods export traces to; none, no traces.
    pub otlp_endpoint: Option<String>,
    /// Secret key (in the resource's namespace) holding the projectors' writer `DATABASE_URL`.
    pub database_secret: SecretKeyRef,
    /// Postgres login roles made members of each namespace's reader role by its projectors
    /// (the chart's query service role, `dreampipe_reader`), so they read every namespace's
    /// stable views and nothing else (ADR 61).
    pub reader_members: Vec<String>,
    /// NetworkPolicies guarding receivers, when the operator is asked for them (ADR 64).
    pub receiver_ingress: Option<ReceiverIngress>,
}

/// Who may reach an Entity's receivers once NetworkPolicies are on: the Adapters of that
/// Entity (in its namespace), the operator (it reads `/v1/status`), and every pod of the
/// namespaces listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverIngress {
    /// The operator's own namespace.
    pub operator_namespace: String,
    /// Namespaces whose pods may call receivers too (applications writing directly, Prometheus).
    pub from_namespaces: Vec<String>,
}

impl RuntimeSettings {
    /// Settings for tests and examples: image `dreampipe:dev`, the chart's default service names.
    pub fn example() -> Self {
        RuntimeSettings {
            image: "dreampipe:dev".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            nats_url: "nats://dreampipe-nats.dreampipe.svc:4222".to_owned(),
            default_stream_replicas: 1,
            otlp_endpoint: None,
            database_secret: SecretKeyRef {
                name: "dreampipe-database".to_owned(),
                key: "writer-url".to_owned(),
            },
            reader_members: vec!["dreampipe_reader".to_owned()],
            receiver_ingress: None,
        }
    }
}
