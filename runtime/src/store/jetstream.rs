//! The event store on JetStream: one stream per Entity, created or updated idempotently; reads
//! of a key's latest event; appends guarded by `Nats-Expected-Last-Subject-Sequence`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use async_nats::HeaderMap;
use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{self, DirectGetErrorKind, LastRawMessageErrorKind};
use async_nats::jetstream::{self, Context};
use crds::entity::{Storage, StreamSpec};
use tracing::Instrument as _;

pub use super::error::{ReadError, StoreError};

mod many;
use super::{Event, Key, StreamNames};

/// How long a multi-subject direct get may take to answer completely.
const MULTI_GET_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a batched read waiting for replies looks whether the connection is still up:
/// replies to a request sent before a disconnect never come, so waiting on is pointless.
const CONNECTION_CHECK: Duration = Duration::from_millis(200);

/// Oldest NATS server whose stream and consumer settings DreamPipe relies on.
pub const MIN_SERVER: (u64, u64) = (2, 10);

/// The latest event of a key and its stream sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub event: Event,
    pub sequence: u64,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this stream sequence.
    Stored { sequence: u64 },
    /// Another append took the place first: re-read and decide again.
    Conflict,
}

/// Creates the Entity's stream, or brings its settings up to date. Safe to run from many
/// receivers at once: identical creates are accepted by the server.
pub async fn ensure_stream(
    client: &async_nats::Client,
    names: &StreamNames,
    spec: &StreamSpec,
) -> Result<stream::Config, StoreError> {
    check_server_version(&client.server_info().version)?;
    let mut config = stream_config(names, spec)?;
    let js = jetstream::new(client.clone());
    // JetStream refuses to cancel deny_purge on an existing stream: one created before
    // erasure existed keeps denying it, and its receiver refuses erasures (ADR 75).
    if let Ok(existing) = js.get_stream(&config.name).await
        && existing.cached_info().config.deny_purge
    {
        config.deny_purge = true;
    }
    match js.create_or_update_stream(config.clone()).await {
        Ok(_) => Ok(config),
        // Two receivers starting together can both see "not found" and both create.
        Err(error) if matches!(error.kind(), CreateStreamErrorKind::JetStream(_)) => {
            js.update_stream(&config)
                .await
                .map_err(|source| StoreError::EnsureStream {
                    stream: config.name.clone(),
                    source,
                })?;
            Ok(config)
        }
        Err(source) => Err(StoreError::EnsureStream {
            stream: config.name.clone(),
            source,
        }),
    }
}

/// The stream configuration DESIGN §3 asks for.
pub fn stream_config(names: &StreamNames, spec: &StreamSpec) -> Result<stream::Config, StoreError> {
    let duration = |field: &'static str, text: &str| {
        crds::validate::parse_duration(text).map_err(|_| StoreError::Setting {
            field,
            value: text.to_owned(),
        })
    };
    Ok(stream::Config {
        name: names.stream(),
        subjects: vec![names.stream_subjects()],
        storage: match spec.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: usize::from(spec.replicas_or_default()),
        max_age: match &spec.max_age {
            Some(age) => duration("maxAge", age)?,
            None => Duration::ZERO,
        },
        duplicate_window: duration("duplicateWindow", &spec.duplicate_window)?,
        allow_direct: true,
        deny_delete: true,
        // Erasure purges one key's subject (ADR 75); nothing else in DreamPipe purges.
        deny_purge: false,
        // Lets readers (the query service) find an Entity's partitions without its YAML.
        metadata: HashMap::from([
            (METADATA_ENTITY.to_owned(), names.entity().to_owned()),
            (METADATA_NAMESPACE.to_owned(), names.namespace().to_owned()),
            (
                METADATA_PARTITIONS.to_owned(),
                names.partitions().to_string(),
            ),
        ]),
        ..Default::default()
    })
}

/// Stream metadata key naming the Entity.
pub const METADATA_ENTITY: &str = "dreampipe.io/entity";
/// Stream metadata key naming the Entity's namespace.
pub const METADATA_NAMESPACE: &str = "dreampipe.io/namespace";
/// Stream metadata key holding the Entity's partition count.
pub const METADATA_PARTITIONS: &str = "dreampipe.io/partitions";

/// What a stream holds, for status reports: the figures of the receiver's `/v1/status`, which
/// the operator reads with the same type.
pub use crds::report::StreamStats;

fn version_at_least(version: &str, wanted: (u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= wanted
}

fn check_server_version(version: &str) -> Result<(), StoreError> {
    if !version_at_least(version, MIN_SERVER) {
        return Err(StoreError::ServerTooOld {
            version: version.to_owned(),
        });
    }
    Ok(())
}

/// Reads and appends the events of one Entity.
#[derive(Clone, Debug)]
pub struct EventStore {
    js: Context,
    stream: stream::Stream,
    names: StreamNames,
    /// With one replica a direct get is answered by the only server, so it is never stale.
    /// With more, followers may lag: single reads go to the leader, and batched reads are
    /// checked against the leader's last sequence (ADR 0047).
    replicated: bool,
    /// A subject known to be in the stream, asked for beside a batch's keys on a replicated
    /// stream so that every answer says how fresh it is (ADR 0047).
    anchor: Arc<Mutex<Option<String>>>,
}

impl EventStore {
    /// Opens the (ensured) stream of `names`. Whether it is replicated is read from the
    /// stream's own configuration, so a stream scaled since its Entity was written is read
    /// the way it is now.
    pub async fn open(client: &async_nats::Client, names: StreamNames) -> Result<Self, StoreError> {
        let js = jetstream::new(client.clone());
        let stream =
            js.get_stream(names.stream())
                .await
                .map_err(|source| StoreError::OpenStream {
                    stream: names.stream(),
                    source,
                })?;
        Ok(EventStore {
            replicated: stream.cached_info().config.num_replicas > 1,
            js,
            stream,
            names,
            anchor: Arc::default(),
        })
    }

    /// Whether the server answers multi-subject direct gets (2.11 and later). Asked each
    /// time: the server a client is connected to can change on reconnect, and a client that
    /// retries its first connection knows no server until it has one.
    fn multi_get(&self) -> bool {
        version_at_least(&self.js.client().server_info().version, (2, 11))
    }

    /// The NATS server's max_payload: no event and its headers may be longer.
    pub fn max_payload(&self) -> usize {
        self.js.client().max_payload()
    }

    /// Whether the stream lets erasure purge a key (false for a stream created before
    /// erasure existed, ADR 75).
    pub fn purge_allowed(&self) -> bool {
        !self.stream.cached_info().config.deny_purge
    }

    /// Stream and subject names.
    pub fn names(&self) -> &StreamNames {
        &self.names
    }

    /// The stream's info, as its leader reports it (or, while it has none, a member).
    async fn info(&self) -> Result<stream::Info, StoreError> {
        let mut stream = self.stream.clone();
        stream
            .info()
            .await
            .cloned()
            .map_err(|source| StoreError::StreamInfo {
                stream: self.names.stream(),
                source,
            })
    }

    /// Events, keys and the newest event of the stream, as the server reports them now.
    pub async fn stats(&self) -> Result<StreamStats, StoreError> {
        let info = self.info().await?;
        let state = &info.state;
        let last_event_time = (state.messages > 0)
            .then(|| {
                jiff::Timestamp::from_nanosecond(state.last_timestamp.unix_timestamp_nanos()).ok()
            })
            .flatten()
            .map(|t| t.to_string());
        Ok(StreamStats {
            events: state.messages,
            keys: state.subjects_count,
            last_sequence: state.last_sequence,
            last_event_time,
        })
    }

    /// The latest event of `key`, read from the stream itself (never from a cache), without
    /// its `changes` (see [`EventStore::history`] for whole events).
    pub async fn latest(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        let subject = self.names.subject(key);
        let failed = |source| StoreError::Latest {
            subject: subject.clone(),
            source,
        };
        let message = if !self.replicated {
            match self
                .stream
                .direct_get_last_for_subject(subject.as_str())
                .await
            {
                Ok(message) => message,
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(failed(ReadError::Direct(error))),
            }
        } else {
            match self
                .stream
                .get_last_raw_message_by_subject(subject.as_str())
                .await
            {
                Ok(message) => message,
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Err(error) => return Err(failed(ReadError::Leader(error))),
            }
        };
        parse_stored(&subject, message.sequence, &message.payload, Detail::Head).map(Some)
    }

    /// Up to `limit` events of `key` from stream sequence `from` on, in order: one round trip
    /// on NATS 2.11+ (a batched direct get), one per event before.
    pub async fn history(
        &self,
        key: &Key,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let subject = self.names.subject(key);
        let failed = |source| StoreError::History {
            subject: subject.clone(),
            from,
            source,
        };
        if self.multi_get() {
            let request =
                serde_json::json!({ "seq": from.max(1), "next_by_subj": subject, "batch": limit });
            return Ok(self
                .direct_batch(&request, Detail::Full, failed)
                .await?
                .found
                .into_iter()
                .map(|(_, stored)| stored)
                .collect());
        }
        let mut events = Vec::new();
        let mut next = from.max(1);
        while events.len() < limit {
            match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    events.push(parse_stored(
                        &subject,
                        message.sequence,
                        &message.payload,
                        Detail::Full,
                    )?);
                }
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
                Err(error) => return Err(failed(ReadError::Direct(error))),
            }
        }
        Ok(events)
    }

    /// Sends a batched direct get and collects its replies until the end-of-batch marker;
    /// `failed` names the read a server failure is reported as.
    async fn direct_batch(
        &self,
        request: &serde_json::Value,
        detail: Detail,
        failed: impl Fn(ReadError) -> StoreError,
    ) -> Result<DirectBatch, StoreError> {
        let client = self.js.client();
        let api = format!("$JS.API.DIRECT.GET.{}", self.names.stream());
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(ReadError::Subscribe(e)))?;
        client
            .publish_with_reply(api, inbox, request.to_string().into())
            .await
            .map_err(|e| failed(ReadError::Publish(e)))?;
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + MULTI_GET_TIMEOUT;
        loop {
            let reply = match tokio::time::timeout(CONNECTION_CHECK, replies.next()).await {
                Ok(reply) => reply.ok_or_else(|| failed(ReadError::Closed))?,
                Err(_) if client.connection_state() != async_nats::connection::State::Connected => {
                    return Err(failed(ReadError::Disconnected));
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(failed(ReadError::Timeout(MULTI_GET_TIMEOUT)));
                }
                Err(_) => continue,
            };
            let header = |name: &str| {
                reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            match reply.status {
                // End of batch: it names the stream sequence the answer is as of (the
                // answering replica's last sequence when the request named none).
                Some(status) if status.as_u16() == 204 => {
                    let as_of = header("Nats-UpTo-Sequence")
                        .and_then(|sequence| sequence.parse().ok())
                        .unwrap_or(0);
                    return Ok(DirectBatch { found, as_of });
                }
                // Nothing matched.
                Some(status) if status.as_u16() == 404 => {
                    return Ok(DirectBatch { found, as_of: 0 });
                }
                Some(status) => {
                    return Err(failed(ReadError::Status {
                        status: status.as_u16(),
                        description: reply.description.clone(),
                    }));
                }
                None => {}
            }
            let (Some(subject), Some(sequence)) = (header("Nats-Subject"), header("Nats-Sequence"))
            else {
                return Err(failed(ReadError::MissingHeaders));
            };
            let sequence: u64 = sequence
                .parse()
                .map_err(|e| failed(ReadError::Sequence(sequence.clone(), e)))?;
            let stored = parse_stored(&subject, sequence, &reply.payload, detail)?;
            found.push((subject, stored));
        }
    }

    /// Appends `event` to its key's subject if that subject's last sequence is still
    /// `expected` (0 for a key never seen). Returns after JetStream acknowledged the write.
    /// Traced as `store.append`, whose context is stored with the event (`traceparent`), so
    /// the projector's commit of it continues the trace.
    pub async fn append(
        &self,
        key: &Key,
        event: &Event,
        expected: u64,
    ) -> Result<Appended, StoreError> {
        let span = crate::span!(
            "store.append",
            otel.kind = "producer",
            subject = tracing::field::Empty,
            sequence = tracing::field::Empty,
        );
        let traceparent = crate::trace::traceparent(&span);
        let appended = self
            .append_traced(key, event, expected, traceparent.as_deref())
            .instrument(span.clone())
            .await;
        if let Ok(Appended::Stored { sequence }) = &appended {
            span.record("subject", self.names.subject(key));
            span.record("sequence", sequence);
        }
        appended
    }

    async fn append_traced(
        &self,
        key: &Key,
        event: &Event,
        expected: u64,
        traceparent: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let subject = self.names.subject(key);
        let message_id = message_id(event);
        let expected = expected.to_string();
        let payload: Vec<u8> = serde_json::to_vec(event).expect("an event always serialises");
        // Read at every append: after a reconnect the server (and its limit) may be another.
        let max_payload = self.max_payload();
        let limit = max_payload.saturating_sub(header_bytes(&message_id, &expected, traceparent));
        if payload.len() > limit {
            return Err(StoreError::EventTooLarge {
                subject,
                size: payload.len(),
                limit,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, message_id.as_str());
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.as_str());
        if let Some(traceparent) = traceparent {
            headers.insert(crate::trace::TRACEPARENT, traceparent);
        }
        let payload = payload.into();
        let append_error = |source| StoreError::Append {
            subject: subject.clone(),
            source,
        };
        let ack = match self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
        {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        match ack {
            Ok(ack) if !ack.duplicate => {
                self.remember_anchor(&subject);
                return Ok(Appended::Stored {
                    sequence: ack.sequence,
                });
            }
            // A duplicate `Nats-Msg-Id`: this version of the key is already stored.
            Ok(_) => {}
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {}
            Err(error) => return Err(append_error(error)),
        }
        // Either way the place was taken: by another writer (a conflict), or by this very
        // event on an earlier attempt, which is then stored and must not be counted twice.
        match self.latest(key).await? {
            Some(stored) if stored.event.id == event.id => Ok(Appended::Stored {
                sequence: stored.sequence,
            }),
            _ => Ok(Appended::Conflict),
        }
    }
}

impl EventStore {
    /// Removes every event of `key` stored before stream sequence `before` (an erasure's
    /// tombstone, which stays): JetStream's purge of one subject up to a sequence, so an event
    /// appended after the tombstone (the key's new life) is never purged. The only purge
    /// DreamPipe makes (ADR 75). Returns how many events left the stream.
    pub async fn purge_before(&self, key: &Key, before: u64) -> Result<u64, StoreError> {
        let subject = self.names.subject(key);
        let purged = self
            .stream
            .purge()
            .filter(subject.clone())
            .sequence(before)
            .await
            .map_err(|source| StoreError::Purge {
                subject: subject.clone(),
                before,
                source,
            })?;
        Ok(purged.purged)
    }
}

/// The replies of one batched direct get.
struct DirectBatch {
    found: Vec<(String, Stored)>,
    /// The stream sequence the answer is as of; 0 when nothing matched.
    as_of: u64,
}

/// How much of a stored event a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detail {
    /// Everything, `changes` included (history).
    Full,
    /// All but `changes`, which deciding on or showing the current state never needs; for a
    /// created event they repeat every field, so skipping them halves the work.
    Head,
}

fn parse_stored(
    subject: &str,
    sequence: u64,
    payload: &[u8],
    detail: Detail,
) -> Result<Stored, StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        subject: subject.to_owned(),
        sequence,
        source,
    };
    let event = match detail {
        Detail::Full => serde_json::from_slice(payload).map_err(corrupt)?,
        Detail::Head => Event::from_slice_without_changes(payload).map_err(corrupt)?,
    };
    Ok(Stored { event, sequence })
}

/// Bytes the headers of an append take on the wire (`NATS/1.0`, each `Name: value`, the blank
/// line): the server counts them against max_payload together with the payload.
fn header_bytes(message_id: &str, expected: &str, traceparent: Option<&str>) -> usize {
    let line = |name: &[u8], value: &str| name.len() + 2 + value.len() + 2;
    "NATS/1.0\r\n".len()
        + line(NATS_MESSAGE_ID.as_ref(), message_id)
        + line(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE.as_ref(), expected)
        + traceparent.map_or(0, |value| line(crate::trace::TRACEPARENT.as_bytes(), value))
        + 2
}

/// `Nats-Msg-Id` of an event: `<entity>/<key>/<version>`, so a version is stored once.
pub fn message_id(event: &Event) -> String {
    format!("{}/{}/{}", event.entity, event.key, event.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_before_2_10_are_refused_by_name() {
        assert!(check_server_version("2.10.0").is_ok());
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("3.0.0").is_ok());
        let error = check_server_version("2.9.25").unwrap_err().to_string();
        assert!(
            error.starts_with("NATS server 2.9.25 is too old: DreamPipe needs 2.10 or newer"),
            "{error}"
        );
    }

    #[test]
    fn the_stream_denies_delete_allows_purge_for_erasure_and_allows_direct_get() {
        let config = stream_config(
            &StreamNames::new("shop", "customer", 8),
            &StreamSpec::default(),
        )
        .unwrap();
        assert_eq!(config.name, "dp_shop_customer");
        assert_eq!(config.subjects, ["dp.shop.customer.>"]);
        assert!(config.allow_direct && config.deny_delete && !config.deny_purge);
        assert_eq!(config.storage, stream::StorageType::File);
        assert_eq!(
            config.max_age,
            Duration::ZERO,
            "events are kept forever by default"
        );
        assert_eq!(config.duplicate_window, Duration::from_secs(120));
    }
}
