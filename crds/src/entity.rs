//! `Entity`: a kind of business object, its key and JSON Schema. DreamPipe runs a JetStream
//! stream (the event store) and an Event Receiver (the command side) for each.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Condition, PodOverlay, TokenAuth, conditions_schema, free_form_object};
use crate::validate::{Invalid, Problems};

/// A kind of business object whose every change is kept as an event.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "dreampipe.io",
    version = "v1alpha1",
    kind = "Entity",
    doc = "An Entity: a kind of business object (key, JSON Schema), its event stream and its Event Receiver.",
    plural = "entities",
    namespaced,
    status = "EntityStatus",
    shortname = "ent",
    category = "dreampipe",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Receivers","type":"string","jsonPath":".status.receivers"}"#,
    printcolumn = r#"{"name":"Events","type":"integer","jsonPath":".status.events"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keys"}"#,
    printcolumn = r#"{"name":"Last Event","type":"date","jsonPath":".status.lastEventTime"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.ignore) || !self.ignore.exists(p, p == self.key)").message("spec.ignore must not contain the key pointer"))]
#[serde(rename_all = "camelCase")]
pub struct EntitySpec {
    /// JSON pointer (RFC 6901) of the field that identifies an object, e.g. `/id`.
    /// The schema must define it as a required string or integer. Immutable.
    #[schemars(length(min = 2, max = 256), regex(pattern = r"^/"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("key is immutable"))]
    pub key: String,

    /// Number of ordering partitions of the stream; events of one key stay in order within
    /// its partition, and projections scale up to this many replicas. Immutable.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("partitions is immutable"))]
    pub partitions: u32,

    /// JSON Schema (draft 2020-12) of the object's state. Submissions that do not match are
    /// rejected with the failing paths.
    #[schemars(schema_with = "free_form_object")]
    pub schema: Value,

    /// JSON pointers of fields whose change alone is not new information (e.g. `/lastSyncedAt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 2, max = 256)))]
    pub ignore: Vec<String>,

    /// The JetStream stream that stores the events.
    #[serde(default)]
    pub stream: StreamSpec,

    /// The Event Receiver Deployment.
    #[serde(default)]
    pub receiver: ReceiverSpec,

    /// Pod settings of the Event Receiver pods: resources, placement, spread, labels and
    /// annotations, image pull secrets, ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverlay>,

    /// What happens to the event stream when the Entity is deleted: `Retain` keeps it
    /// (the default), `Delete` removes it. The event store is never dropped silently.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// What a submission for an erased key means: `NewLife` (the default) starts the key
    /// afresh after its tombstone; `Refuse` answers 410 Gone, so a source that still holds
    /// the person's record cannot bring it back.
    #[serde(default)]
    pub after_erasure: AfterErasure,
}

fn default_partitions() -> u32 {
    8
}

/// Settings of the Entity's JetStream stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// Number of stream replicas in the NATS cluster (1 to 5). When omitted, the operator's
    /// default: the chart sets it to 3 when it runs a NATS cluster of three or more servers,
    /// 1 otherwise; `dreampipe dev` uses 1. Raising it later scales the stream up in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: Option<u8>,
    /// Where JetStream keeps the events: `File` (the default) or `Memory`.
    #[serde(default)]
    pub storage: Storage,
    /// How long events are kept, e.g. `8760h`; kept forever when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub max_age: Option<String>,
    /// Window in which a repeated `Nats-Msg-Id` is recognised as a duplicate, e.g. `2m`.
    #[serde(default = "default_duplicate_window")]
    #[schemars(length(max = 32))]
    pub duplicate_window: String,
}

impl StreamSpec {
    /// Replicas of a stream whose Entity names none and that no operator defaulted: what
    /// `dreampipe dev`'s single server can hold.
    pub const DEFAULT_REPLICAS: u8 = 1;

    /// The replicas the stream is created with.
    pub fn replicas_or_default(&self) -> u8 {
        self.replicas.unwrap_or(Self::DEFAULT_REPLICAS)
    }
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            replicas: None,
            storage: Storage::default(),
            max_age: None,
            duplicate_window: default_duplicate_window(),
        }
    }
}

fn default_duplicate_window() -> String {
    "2m".to_owned()
}

/// JetStream storage type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// Settings of the Event Receiver Deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// Number of receiver pods; 1 when omitted.
    #[serde(default = "default_receiver_replicas")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: i32,
    /// Bearer tokens accepted by the receiver; the receiver is open when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TokenAuth>,
    /// Deprecated: set `spec.pod.resources`, which every kind has. Still honoured when
    /// `spec.pod.resources` is omitted; setting both is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Bounds on what one request may carry.
    #[serde(default)]
    pub limits: ReceiverLimits,
}

fn default_receiver_replicas() -> i32 {
    1
}

/// Bounds on submissions; anything beyond is rejected with a 4xx before it reaches the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverLimits {
    /// Largest request body in bytes.
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_body_bytes: u32,
    /// Most items in one batch request.
    #[serde(default = "default_max_batch_items")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_batch_items: u32,
    /// Deepest nesting of arrays and objects in a submitted state.
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = 2, max = 128))]
    pub max_depth: u32,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits {
            max_body_bytes: default_max_body_bytes(),
            max_batch_items: default_max_batch_items(),
            max_depth: default_max_depth(),
        }
    }
}

fn default_max_body_bytes() -> u32 {
    8 * 1024 * 1024
}

fn default_max_batch_items() -> u32 {
    5000
}

fn default_max_depth() -> u32 {
    32
}

/// What deleting an Entity does to its event stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the stream; recreating the Entity picks up its history again.
    #[default]
    Retain,
    /// Delete the stream and every event in it.
    Delete,
}

/// What a submission for a key whose latest event is an erasure's tombstone does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AfterErasure {
    /// The key starts a new life: its next event is `created`, one version after the
    /// tombstone.
    #[default]
    NewLife,
    /// The key stays erased: submissions are refused with 410 Gone.
    Refuse,
}

/// What DreamPipe observed of an Entity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, one of each at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Ready receivers over desired receivers, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receivers: Option<String>,
    /// Receiver pods ready to serve.
    #[serde(default)]
    pub ready_receivers: i32,
    /// Receiver pods asked for.
    #[serde(default)]
    pub desired_receivers: i32,
    /// Events in the stream.
    #[serde(default)]
    pub events: u64,
    /// Distinct keys in the stream.
    #[serde(default)]
    pub keys: u64,
    /// When the newest event was recorded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<String>,
    /// In-cluster URL of the Event Receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the JetStream stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

impl EntitySpec {
    /// The receiver pods' settings: `spec.pod`, with the deprecated `spec.receiver.resources`
    /// standing in for `spec.pod.resources` when that is omitted (ADR 50).
    pub fn receiver_pod(&self) -> PodOverlay {
        let mut pod = self.pod.clone().unwrap_or_default();
        if pod.resources.is_none() {
            pod.resources = self.receiver.resources.clone();
        }
        pod
    }
}

/// The JetStream stream holding an Entity's events, `dp_<namespace>_<entity>` (DESIGN §3): the
/// one name the receiver creates, readers open and the operator deletes.
pub fn stream_name(namespace: &str, entity: &str) -> String {
    format!("dp_{namespace}_{entity}")
}

/// Reports every problem of an Entity at once: name, key pointer against the schema, ignore
/// pointers, the schema itself and stream settings.
pub fn validate_entity(entity: &Entity) -> Result<(), Invalid> {
    let mut problems = Problems::default();
    problems.check_name("metadata.name", entity.metadata.name.as_deref());
    let spec = &entity.spec;

    let schema_ok = check_schema(&mut problems, &spec.schema);
    if problems.check_pointer("spec.key", &spec.key) && schema_ok {
        match defined_type(&spec.schema, &spec.key) {
            Lookup::Defined {
                required: false, ..
            } => problems.add(
                "spec.key",
                format!(
                    "{} must be listed in the schema's required fields",
                    spec.key
                ),
            ),
            Lookup::Defined { types, .. }
                if !types.is_empty() && !types.iter().any(|t| t == "string" || t == "integer") =>
            {
                problems.add(
                    "spec.key",
                    format!(
                        "{} must be a string or integer in the schema, not {}",
                        spec.key,
                        types.join(" or ")
                    ),
                );
            }
            Lookup::Defined { .. } => {}
            Lookup::Undefined => problems.add(
                "spec.key",
                format!("{} is not defined in spec.schema's properties", spec.key),
            ),
        }
    }
    if !(1..=1024).contains(&spec.partitions) {
        problems.add("spec.partitions", "must be between 1 and 1024");
    }
    for (i, pointer) in spec.ignore.iter().enumerate() {
        let path = format!("spec.ignore[{i}]");
        if !problems.check_pointer(&path, pointer) {
            continue;
        }
        if pointer == &spec.key {
            problems.add(&path, "the key cannot be ignored");
        } else if schema_ok && matches!(defined_type(&spec.schema, pointer), Lookup::Undefined) {
            problems.add(
                &path,
                format!("{pointer} is not defined in spec.schema's properties"),
            );
        }
    }
    if spec
        .stream
        .replicas
        .is_some_and(|replicas| !(1..=5).contains(&replicas))
    {
        problems.add("spec.stream.replicas", "must be between 1 and 5");
    }
    if let Some(max_age) = &spec.stream.max_age {
        problems.check_duration("spec.stream.maxAge", max_age);
    }
    problems.check_duration("spec.stream.duplicateWindow", &spec.stream.duplicate_window);
    if spec.receiver.replicas < 0 {
        problems.add("spec.receiver.replicas", "must not be negative");
    }
    if let Some(pod) = &spec.pod {
        pod.check(&mut problems, "spec.pod");
        if pod.resources.is_some() && spec.receiver.resources.is_some() {
            problems.add(
                "spec.receiver.resources",
                "is deprecated and spec.pod.resources is set too: keep only spec.pod.resources",
            );
        }
    }
    problems.finish("Entity", entity.metadata.name.as_deref())
}

/// Checks that the schema is an object schema and a valid JSON Schema; true when it is.
fn check_schema(problems: &mut Problems, schema: &Value) -> bool {
    if !schema.is_object() {
        problems.add("spec.schema", "must be a JSON Schema object");
        return false;
    }
    if let Err(error) = jsonschema::meta::validate(schema) {
        problems.add(
            "spec.schema",
            format!(
                "is not a valid JSON Schema: {error} (at {})",
                error.instance_path()
            ),
        );
        return false;
    }
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        problems.add(
            "spec.schema.type",
            "must be \"object\": an entity's state is a JSON object",
        );
        return false;
    }
    true
}

enum Lookup {
    Undefined,
    Defined { types: Vec<String>, required: bool },
}

/// Follows a JSON pointer through nested `properties`, noting whether every step is required.
fn defined_type(schema: &Value, pointer: &str) -> Lookup {
    let Ok(tokens) = crate::pointer::tokens(pointer) else {
        return Lookup::Undefined;
    };
    let mut node = schema;
    let mut required = true;
    for token in &tokens {
        let listed = node
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(token)));
        required &= listed;
        match node.get("properties").and_then(|p| p.get(token)) {
            Some(child) => node = child,
            None => return Lookup::Undefined,
        }
    }
    let types = match node.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Lookup::Defined { types, required }
}
