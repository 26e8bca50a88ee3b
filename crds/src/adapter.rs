//! `Adapter`: where records come from and how their fields map onto an Entity. DreamPipe runs
//! an adapter Deployment that reads, normalises and submits them to the Entity's receiver.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, PodOverlay, SecretKeyRef, TokenAuth, conditions_schema};
use crate::validate::{Invalid, Problems, is_nats_subject};

/// A source of records for one Entity.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "dreampipe.io",
    version = "v1alpha1",
    kind = "Adapter",
    doc = "An Adapter: reads records from an external system, maps them onto an Entity and submits them.",
    namespaced,
    status = "AdapterStatus",
    shortname = "adp",
    category = "dreampipe",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Entity","type":"string","jsonPath":".spec.entity"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Read","type":"integer","jsonPath":".status.recordsRead"}"#,
    printcolumn = r#"{"name":"Changed","type":"integer","jsonPath":".status.changed"}"#,
    printcolumn = r#"{"name":"Rejected","type":"integer","jsonPath":".status.rejected"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog","description":"Records the source holds that the adapter has not read yet","priority":1}"#,
    printcolumn = r#"{"name":"Slot Lag","type":"integer","jsonPath":".status.sourceLagBytes","description":"Bytes of WAL a postgres source's slot holds unconfirmed","priority":1}"#,
    printcolumn = r#"{"name":"Last Error","type":"string","jsonPath":".status.lastError","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AdapterSpec {
    /// Name of the Entity (same namespace) the records are submitted to.
    #[schemars(length(min = 1, max = 63))]
    pub entity: String,

    /// Where the records come from: exactly one of `http`, `webhook`, `nats`, `file`, `generator`.
    pub source: AdapterSource,

    /// Output field name -> CEL expression over `record` (the source record as JSON).
    /// The output object is what is submitted, so it must carry the Entity's key.
    #[schemars(length(min = 1, max = 256))]
    pub mapping: BTreeMap<String, String>,

    /// CEL predicate over `record`; when true the key is deleted instead of submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub delete_when: Option<String>,

    /// Time between polls of an `http` source, e.g. `30s`; also the retry pace of idle sources.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32))]
    pub interval: String,

    /// Records per batch submitted to the receiver.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,
    /// `true` stops reading the source without deleting anything, as on a CronJob: the
    /// adapter Deployment is scaled to 0 (its ConfigMap, Service and the http cursor stay),
    /// and `false` again resumes where the cursor is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Pod settings of the adapter pods: resources, placement, spread, labels and annotations,
    /// image pull secrets, ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverlay>,
}

fn default_interval() -> String {
    "30s".to_owned()
}

fn default_batch_size() -> u32 {
    500
}

/// The source of an Adapter; exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http), has(self.webhook), has(self.nats), has(self.jetstream), has(self.postgres), has(self.file), has(self.generator)].filter(x, x).size() == 1").message("exactly one of http, webhook, nats, jetstream, postgres, file or generator must be set"))]
pub struct AdapterSource {
    /// Poll an HTTP API that answers JSON pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// Receive records pushed to the adapter's own HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSource>,
    /// Subscribe to a NATS subject whose messages are JSON records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSource>,
    /// Consume an existing JetStream stream through a durable pull consumer, acknowledging a
    /// message only once the receiver acknowledged its record (at least once, end to end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSource>,
    /// Follow a table of an external Postgres through logical decoding (change data capture):
    /// its existing rows first, then every insert, update and delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSource>,
    /// Read a file of JSON lines or CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Generate synthetic records, deterministically from a seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSource>,
}

/// Which kind of source an Adapter has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceKind<'a> {
    Http(&'a HttpSource),
    Webhook(&'a WebhookSource),
    Nats(&'a NatsSource),
    JetStream(&'a JetStreamSource),
    Postgres(&'a PostgresSource),
    File(&'a FileSource),
    Generator(&'a GeneratorSource),
}

impl AdapterSource {
    /// Every source that is set, in declaration order; a valid source has exactly one.
    pub fn kinds(&self) -> Vec<SourceKind<'_>> {
        [
            self.http.as_ref().map(SourceKind::Http),
            self.webhook.as_ref().map(SourceKind::Webhook),
            self.nats.as_ref().map(SourceKind::Nats),
            self.jetstream.as_ref().map(SourceKind::JetStream),
            self.postgres.as_ref().map(SourceKind::Postgres),
            self.file.as_ref().map(SourceKind::File),
            self.generator.as_ref().map(SourceKind::Generator),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// An HTTP API polled page by page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// URL of the first page (http or https).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Bearer token sent as `Authorization`, read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Bearer tokens from an OAuth2 token endpoint instead (client credentials or refresh
    /// token grant), refreshed before they expire. Not with `tokenSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
    /// JSON pointer of the records array in a page, e.g. `/records`.
    #[serde(default = "default_records_pointer")]
    #[schemars(length(max = 256))]
    pub records: String,
    /// How to find the next page; one page only when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<NextPage>,
    /// Incremental sync: ask only for records modified since the last one seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// Full resync on an interval, e.g. `24h`; never when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub resync_interval: Option<String>,
    /// On a full resync, delete keys that the source no longer returns.
    #[serde(default)]
    pub delete_missing: bool,
}

fn default_records_pointer() -> String {
    "/records".to_owned()
}

/// OAuth2 for an HTTP source (RFC 6749): where tokens come from and the credentials for it,
/// every credential by reference to a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2 {
    /// The token endpoint, e.g. `https://login.salesforce.com/services/oauth2/token`.
    #[schemars(length(min = 1, max = 2048))]
    pub token_url: String,
    /// `ClientCredentials` (the default) or `RefreshToken`.
    #[serde(default)]
    pub grant: OAuth2Grant,
    /// The client id (a connected app's consumer key).
    pub client_id_ref: SecretKeyRef,
    /// The client secret (a connected app's consumer secret).
    pub client_secret_ref: SecretKeyRef,
    /// The refresh token; required with `grant: RefreshToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_ref: Option<SecretKeyRef>,
    /// Scopes asked for; none when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub scopes: Vec<String>,
    /// A token is replaced this long before it expires, e.g. `60s` (the default).
    #[serde(default = "default_refresh_before")]
    #[schemars(length(max = 32))]
    pub refresh_before: String,
}

fn default_refresh_before() -> String {
    "60s".to_owned()
}

/// How an HTTP source gets its OAuth2 access tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OAuth2Grant {
    /// `client_credentials`: the client authenticates as itself.
    #[default]
    ClientCredentials,
    /// `refresh_token`: a refresh token a person granted once stands for them.
    RefreshToken,
}

/// Where a page says how to fetch the next one; exactly one field is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.urlField) != has(self.cursorField)").message("set exactly one of urlField or cursorField"))]
#[x_kube(validation = Rule::new("!has(self.cursorField) || has(self.cursorParam)").message("cursorField needs cursorParam"))]
pub struct NextPage {
    /// JSON pointer of the next page's URL (absolute, or relative to the source URL),
    /// e.g. `/nextRecordsUrl`. Paging ends when it is missing or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub url_field: Option<String>,
    /// JSON pointer of an opaque cursor in the page, e.g. `/next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub cursor_field: Option<String>,
    /// Query parameter that carries the cursor to the next request, e.g. `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub cursor_param: Option<String>,
}

/// Incremental sync by a modification timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incremental {
    /// JSON pointer, in a record, of its modification time, e.g. `/LastModifiedDate`.
    #[schemars(length(min = 2, max = 256))]
    pub field: String,
    /// Query parameter that carries the highest value seen so far, e.g. `modifiedSince`.
    #[schemars(length(min = 1, max = 128))]
    pub param: String,
}

/// Records pushed over HTTP to the adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSource {
    /// Bearer tokens accepted from pushers; open when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TokenAuth>,
    /// An HMAC signature every push must carry (GitHub or Stripe style); unchecked when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<WebhookSignature>,
}

/// How pushes are signed: an HMAC of the body with a shared secret, in a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSignature {
    /// The header carrying the signature, e.g. `X-Hub-Signature-256` or `Stripe-Signature`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub header: String,
    /// What the header holds: `github` is `sha256=<hex>` of the body; `stripe` is
    /// `t=<unix seconds>,v1=<hex>` of `<t>.<body>`, whose time bounds replays.
    #[serde(default)]
    pub style: SignatureStyle,
    /// The HMAC's hash.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// The Secret key holding the shared secret.
    pub secret_ref: SecretKeyRef,
    /// `stripe` style: pushes signed longer ago (or further ahead) than this are refused as
    /// replays.
    #[serde(default = "default_tolerance_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub tolerance_seconds: u32,
}

fn default_tolerance_seconds() -> u32 {
    300
}

/// The layout of a signature header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SignatureStyle {
    /// `<algorithm>=<hex>` over the body (GitHub); no time, so no replay window.
    #[default]
    Github,
    /// `t=<unix seconds>,v1=<hex>` over `<t>.<body>` (Stripe); replays outside
    /// `toleranceSeconds` are refused.
    Stripe,
}

/// The hash of a signature's HMAC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256, as GitHub's `X-Hub-Signature-256` and Stripe use.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// A NATS subject whose messages are JSON records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsSource {
    /// Subject to subscribe to; wildcards allowed.
    #[schemars(length(min = 1, max = 256))]
    pub subject: String,
    /// Queue group, so adapter replicas share the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub queue_group: Option<String>,
    /// NATS server URL; the one DreamPipe uses when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
}

/// An existing JetStream stream whose messages are JSON records, read by a durable consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamSource {
    /// Name of the stream (it must exist; the adapter never creates or changes it).
    #[schemars(length(min = 1, max = 256))]
    pub stream: String,
    /// Durable consumer name: the stream remembers how far the adapter got under it, so a
    /// restart goes on where it stopped. Default `dreampipe-<adapter name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub consumer: Option<String>,
    /// Only messages on this subject (wildcards allowed); all of the stream when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub filter_subject: Option<String>,
    /// Where a new consumer starts: `All` (the default, the stream's first message) or `New`
    /// (only messages stored from now on). An existing consumer goes on where it stopped.
    #[serde(default)]
    pub deliver: JetStreamDeliver,
    /// How long the server waits for an acknowledgement before it delivers a message again,
    /// e.g. `30s`; the adapter reports progress while the receiver is retried, so this only
    /// bounds a crash. Default `30s`.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: String,
    /// NATS server URL; the one DreamPipe uses when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
}

fn default_ack_wait() -> String {
    "30s".to_owned()
}

/// A table of an external Postgres followed by logical decoding (ADR 79).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSource {
    /// The database URL (`postgres://user:password@host:5432/db`), from a Secret. The user
    /// needs the REPLICATION attribute (or `rds_replication` and the like), SELECT on the
    /// table, and CREATE on the database to make the publication when it does not exist.
    pub url_secret_ref: SecretKeyRef,
    /// The table, `schema.table` or `table` (schema `public`).
    #[schemars(length(min = 1, max = 127))]
    pub table: String,
    /// The publication to decode; `dreampipe_<adapter>` when omitted, created for the table
    /// if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub publication: Option<String>,
    /// The replication slot that keeps the adapter's position; `dreampipe_<adapter>` (with
    /// `_` for `-`) when omitted. Created on first start; drop it when the Adapter goes
    /// (`SELECT pg_drop_replication_slot('...')`), or the database keeps WAL for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub slot: Option<String>,
    /// Submit the table's existing rows before the changes (the default); `false` follows
    /// only changes from the slot's creation on.
    #[serde(default = "default_true")]
    pub snapshot: bool,
}

fn default_true() -> bool {
    true
}

/// Where a new JetStream consumer starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JetStreamDeliver {
    /// From the stream's first message.
    #[default]
    All,
    /// Only messages stored after the consumer was created.
    New,
}

/// A file read once from start to end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.volume) || (!self.path.startsWith('/') && !self.path.matches('(^|/)[.][.](/|$)'))").message("with a volume, path is relative to it and has no '..'"))]
pub struct FileSource {
    /// Path of the file: with `volume`, relative to the volume (e.g. `customers.jsonl`, a
    /// ConfigMap's or Secret's key); without, a path inside the adapter's container.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// `JsonLines` (one JSON object a line) or `Csv` (a header row, then records).
    #[serde(default)]
    pub format: FileFormat,
    /// The volume holding the file: exactly one of a ConfigMap, a Secret or a
    /// PersistentVolumeClaim of the Adapter's namespace, mounted read-only at
    /// `/var/run/dreampipe/source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<FileVolume>,
}

/// Where the adapter mounts a file source's volume; `path` is read below it.
pub const FILE_VOLUME_DIR: &str = "/var/run/dreampipe/source";

impl FileSource {
    /// The path the adapter opens: below [`FILE_VOLUME_DIR`] with a volume, `path` without.
    pub fn resolved_path(&self) -> String {
        match &self.volume {
            Some(_) => format!("{FILE_VOLUME_DIR}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

/// A volume a file source reads from; exactly one field of `configMap`, `secret` and
/// `persistentVolumeClaim` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.configMap), has(self.secret), has(self.persistentVolumeClaim)].filter(x, x).size() == 1").message("set exactly one of configMap, secret or persistentVolumeClaim"))]
pub struct FileVolume {
    /// Name of a ConfigMap; each key is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: Option<String>,
    /// Name of a Secret; each key is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret: Option<String>,
    /// Name of a PersistentVolumeClaim, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: Option<String>,
}

/// The kind and name of a file source's volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind<'a> {
    ConfigMap(&'a str),
    Secret(&'a str),
    PersistentVolumeClaim(&'a str),
}

impl FileVolume {
    /// Every kind that is set; a valid volume has exactly one.
    pub fn kinds(&self) -> Vec<VolumeKind<'_>> {
        [
            self.config_map.as_deref().map(VolumeKind::ConfigMap),
            self.secret.as_deref().map(VolumeKind::Secret),
            self.persistent_volume_claim
                .as_deref()
                .map(VolumeKind::PersistentVolumeClaim),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Format of a file source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FileFormat {
    #[default]
    JsonLines,
    Csv,
}

/// Synthetic records: `{id, name, email, city, amount, updatedAt}` over a fixed set of keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSource {
    /// Records per second.
    #[schemars(range(min = 1, max = 1000000))]
    pub rate: u32,
    /// Stop after this many records; run forever when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Number of distinct keys the records cycle through.
    #[serde(default = "default_generator_keys")]
    #[schemars(range(min = 1))]
    pub keys: u64,
    /// Seed of the pseudo-random sequence; the same seed yields the same records.
    #[serde(default)]
    pub seed: u64,
}

fn default_generator_keys() -> u64 {
    1000
}

/// What DreamPipe observed of an Adapter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, one of each at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// When the last sync finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// Records read from the source.
    #[serde(default)]
    pub records_read: u64,
    /// Records submitted to the receiver.
    #[serde(default)]
    pub submitted: u64,
    /// Submissions that appended an event (created, updated or deleted).
    #[serde(default)]
    pub changed: u64,
    /// Submissions that carried no new information.
    #[serde(default)]
    pub unchanged: u64,
    /// Records that failed mapping or were rejected by the receiver.
    #[serde(default)]
    pub rejected: u64,
    /// The most recent error, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Records the source holds that the adapter has not read yet (a JetStream consumer's
    /// pending messages); absent where the source cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Bytes of WAL a `postgres` source's replication slot holds that the adapter has not
    /// confirmed yet (the slot's lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_lag_bytes: Option<u64>,
}

/// Reports every problem of an Adapter at once: names, the source, CEL and durations.
pub fn validate_adapter(adapter: &Adapter) -> Result<(), Invalid> {
    let mut problems = Problems::default();
    problems.check_name("metadata.name", adapter.metadata.name.as_deref());
    let spec = &adapter.spec;
    problems.check_reference("spec.entity", &spec.entity);

    match spec.source.kinds().as_slice() {
        [one] => check_source(&mut problems, one),
        [] => problems.add(
            "spec.source",
            "set one of http, webhook, nats, file or generator",
        ),
        many => problems.add(
            "spec.source",
            format!("exactly one source may be set, found {}", many.len()),
        ),
    }

    if spec.mapping.is_empty() {
        problems.add("spec.mapping", "map at least one output field");
    }
    for (field, expression) in &spec.mapping {
        let path = format!("spec.mapping.{field}");
        if !is_field_name(field) {
            problems.add(
                &path,
                format!("{field:?} is not a field name: use letters, digits and '_', not starting with a digit"),
            );
        }
        problems.check_cel(&path, expression);
    }
    if let Some(delete_when) = &spec.delete_when {
        problems.check_cel("spec.deleteWhen", delete_when);
    }
    problems.check_duration("spec.interval", &spec.interval);
    if spec.batch_size == 0 {
        problems.add("spec.batchSize", "must be at least 1");
    }
    if let Some(pod) = &spec.pod {
        pod.check(&mut problems, "spec.pod");
    }
    problems.finish("Adapter", adapter.metadata.name.as_deref())
}

fn check_source(problems: &mut Problems, source: &SourceKind<'_>) {
    match source {
        SourceKind::Http(http) => {
            let path = "spec.source.http";
            if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                problems.add(
                    format!("{path}.url"),
                    format!("{:?} must be an http:// or https:// URL", http.url),
                );
            }
            problems.check_pointer(&format!("{path}.records"), &http.records);
            if let Some(next) = &http.next_page {
                match (&next.url_field, &next.cursor_field) {
                    (Some(url_field), None) => {
                        problems.check_pointer(&format!("{path}.nextPage.urlField"), url_field);
                    }
                    (None, Some(cursor_field)) => {
                        problems
                            .check_pointer(&format!("{path}.nextPage.cursorField"), cursor_field);
                        if next.cursor_param.as_deref().is_none_or(str::is_empty) {
                            problems.add(
                                format!("{path}.nextPage.cursorParam"),
                                "is required with cursorField",
                            );
                        }
                    }
                    _ => problems.add(
                        format!("{path}.nextPage"),
                        "set exactly one of urlField or cursorField",
                    ),
                }
            }
            if let Some(incremental) = &http.incremental {
                problems.check_pointer(&format!("{path}.incremental.field"), &incremental.field);
                if incremental.param.is_empty() {
                    problems.add(format!("{path}.incremental.param"), "must not be empty");
                }
            }
            if let Some(oauth2) = &http.oauth2 {
                if http.token_secret_ref.is_some() {
                    problems.add(
                        format!("{path}.oauth2"),
                        "set either tokenSecretRef or oauth2, not both",
                    );
                }
                if !(oauth2.token_url.starts_with("http://")
                    || oauth2.token_url.starts_with("https://"))
                {
                    problems.add(
                        format!("{path}.oauth2.tokenUrl"),
                        format!("{:?} must be an http:// or https:// URL", oauth2.token_url),
                    );
                }
                if oauth2.grant == OAuth2Grant::RefreshToken && oauth2.refresh_token_ref.is_none() {
                    problems.add(
                        format!("{path}.oauth2.refreshTokenRef"),
                        "is required with grant: RefreshToken",
                    );
                }
                problems.check_duration(
                    &format!("{path}.oauth2.refreshBefore"),
                    &oauth2.refresh_before,
                );
            }
            if let Some(resync) = &http.resync_interval {
                problems.check_duration(&format!("{path}.resyncInterval"), resync);
            } else if http.delete_missing {
                problems.add(
                    format!("{path}.deleteMissing"),
                    "needs resyncInterval: missing keys are found by a full resync",
                );
            }
        }
        SourceKind::Webhook(_) => {}
        SourceKind::Nats(nats) => {
            if !is_nats_subject(&nats.subject, true) {
                problems.add(
                    "spec.source.nats.subject",
                    format!(
                        "{:?} is not a NATS subject: dot-separated tokens without spaces",
                        nats.subject
                    ),
                );
            }
        }
        SourceKind::JetStream(jetstream) => {
            let path = "spec.source.jetstream";
            if !is_stream_name(&jetstream.stream) {
                problems.add(
                    format!("{path}.stream"),
                    format!(
                        "{:?} is not a JetStream stream name: no spaces, '.', '*', '>', '/' or '\\'",
                        jetstream.stream
                    ),
                );
            }
            if let Some(consumer) = &jetstream.consumer
                && !is_stream_name(consumer)
            {
                problems.add(
                    format!("{path}.consumer"),
                    format!(
                        "{consumer:?} is not a consumer name: no spaces, '.', '*', '>', '/' or '\\'"
                    ),
                );
            }
            if let Some(subject) = &jetstream.filter_subject
                && !is_nats_subject(subject, true)
            {
                problems.add(
                    format!("{path}.filterSubject"),
                    format!(
                        "{subject:?} is not a NATS subject: dot-separated tokens without spaces"
                    ),
                );
            }
            problems.check_duration(&format!("{path}.ackWait"), &jetstream.ack_wait);
        }
        SourceKind::Postgres(postgres) => {
            let path = "spec.source.postgres";
            if !is_table_name(&postgres.table) {
                problems.add(
                    format!("{path}.table"),
                    format!(
                        "{:?} is not a table name: `table` or `schema.table`, letters, digits \
                         and '_', not starting with a digit",
                        postgres.table
                    ),
                );
            }
            for (field, name) in [
                ("publication", &postgres.publication),
                ("slot", &postgres.slot),
            ] {
                if let Some(name) = name
                    && !is_slot_name(name)
                {
                    problems.add(
                        format!("{path}.{field}"),
                        format!("{name:?} must be 1 to 63 lowercase letters, digits or '_'"),
                    );
                }
            }
        }
        SourceKind::File(file) => {
            if file.path.is_empty() {
                problems.add("spec.source.file.path", "must not be empty");
            }
            if let Some(volume) = &file.volume {
                check_file_volume(problems, &file.path, volume);
            }
        }
        SourceKind::Generator(generator) => {
            if generator.rate == 0 {
                problems.add(
                    "spec.source.generator.rate",
                    "must be at least 1 record per second",
                );
            }
            if generator.keys == 0 {
                problems.add("spec.source.generator.keys", "must be at least 1");
            }
        }
    }
}

/// A file source's volume names exactly one object by a DNS name, and the path stays inside it.
fn check_file_volume(problems: &mut Problems, path: &str, volume: &FileVolume) {
    let base = "spec.source.file.volume";
    match volume.kinds().as_slice() {
        [one] => {
            let (field, name) = match one {
                VolumeKind::ConfigMap(name) => ("configMap", name),
                VolumeKind::Secret(name) => ("secret", name),
                VolumeKind::PersistentVolumeClaim(name) => ("persistentVolumeClaim", name),
            };
            if !crate::validate::is_dns_subdomain(name) {
                problems.add(
                    format!("{base}.{field}"),
                    format!("{name:?} is not a Kubernetes object name"),
                );
            }
        }
        [] => problems.add(
            base,
            "set one of configMap, secret or persistentVolumeClaim",
        ),
        many => problems.add(
            base,
            format!(
                "set exactly one of configMap, secret or persistentVolumeClaim, found {}",
                many.len()
            ),
        ),
    }
    if path.starts_with('/') {
        problems.add(
            "spec.source.file.path",
            format!("{path:?} must be relative to the volume, e.g. customers.jsonl"),
        );
    }
    if path.split('/').any(|segment| segment == "..") {
        problems.add(
            "spec.source.file.path",
            format!("{path:?} must not leave the volume with '..'"),
        );
    }
}

/// Whether `name` is a plain (unquoted) Postgres identifier.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `table` or `schema.table`, each a plain identifier.
fn is_table_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((schema, table)) => is_identifier(schema) && is_identifier(table),
        None => is_identifier(name),
    }
}

/// A replication slot's (and our publication's) name: Postgres allows lowercase letters,
/// digits and '_' in slot names.
fn is_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` can name a JetStream stream or consumer (they become API subject tokens).
fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

/// Whether `name` can be a top-level field of a submitted record.
fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
