//! Entity reads from JetStream: the current state, the history paged by version, and the state
//! as of a time or a version, folded from the stream. Each Entity's stream describes itself
//! (its partitions are in the stream's metadata), so the query service needs no Entity YAML.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;

use crate::store::jetstream::{EventStore, METADATA_PARTITIONS, StoreError, Stored};
use crate::store::{Event, Key, StreamNames};

use super::QueryError;

/// Events read from the stream per round trip while folding or paging.
const READ_BATCH: usize = 256;

/// Opens Entity streams on demand and keeps them open (partitions are immutable).
#[derive(Debug)]
pub struct Entities {
    client: async_nats::Client,
    namespace: String,
    open: Mutex<HashMap<String, EventStore>>,
}

/// A key's state at some version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub key: String,
    pub version: u64,
    pub sequence: u64,
    /// When the event that produced this state was recorded (RFC 3339).
    pub recorded_at: String,
    #[schema(value_type = Object)]
    pub state: Value,
}

/// A page of a key's events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub key: String,
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// The `fromVersion` of the next page; absent on the last page.
    pub next_from_version: Option<u64>,
}

/// A point in a key's past: a version, or a time (RFC 3339).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AsOf {
    Version(u64),
    Time(jiff::Timestamp),
}

impl AsOf {
    /// Parses `asOf`: a positive version number or an RFC 3339 timestamp.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        if let Ok(version) = text.parse::<u64>() {
            return match version {
                0 => Err(QueryError::BadRequest(
                    "asOf version must be 1 or more".to_owned(),
                )),
                version => Ok(AsOf::Version(version)),
            };
        }
        crate::store::envelope::parse_rfc3339(text).map(AsOf::Time).ok_or_else(|| {
            QueryError::BadRequest(format!(
                "asOf must be a version number or an RFC 3339 time such as 2026-01-31T12:00:00Z, not {:?}",
                truncate(text)
            ))
        })
    }

    /// Whether `event` lies at or before this point.
    fn covers(&self, event: &Event) -> bool {
        match self {
            AsOf::Version(version) => event.version <= *version,
            AsOf::Time(time) => event
                .recorded_at
                .parse::<jiff::Timestamp>()
                .is_ok_and(|at| at <= *time),
        }
    }
}

impl Entities {
    pub fn new(client: async_nats::Client, namespace: String) -> Self {
        Entities {
            client,
            namespace,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The store of `entity`, or `UnknownEntity` when it has no stream.
    async fn store(&self, entity: &str) -> Result<EventStore, QueryError> {
        if !crds::validate::is_dns_label(entity) {
            return Err(QueryError::UnknownEntity(truncate(entity)));
        }
        if let Some(store) = self.open.lock().expect("entity lock").get(entity) {
            return Ok(store.clone());
        }
        let stream_name = StreamNames::new(&self.namespace, entity, 1).stream();
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = match js.get_stream(&stream_name).await {
            Ok(stream) => stream,
            Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Err(QueryError::UnknownEntity(entity.to_owned()));
            }
            Err(error) => {
                return Err(QueryError::Store(StoreError::OpenStream {
                    stream: stream_name,
                    source: error,
                }));
            }
        };
        let info = stream.info().await.map_err(|error| {
            QueryError::Store(StoreError::StreamInfo {
                stream: stream_name.clone(),
                source: error,
            })
        })?;
        let partitions = info
            .config
            .metadata
            .get(METADATA_PARTITIONS)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| QueryError::UnknownEntity(entity.to_owned()))?;
        let names = StreamNames::new(&self.namespace, entity, partitions);
        let store = EventStore::open(&self.client, names).await?;
        self.open
            .lock()
            .expect("entity lock")
            .insert(entity.to_owned(), store.clone());
        Ok(store)
    }

    /// The current state of a key; 404 when it never existed or is deleted, 410 when erased.
    pub async fn current(&self, entity: &str, key: &str) -> Result<State, QueryError> {
        let key = parse_key(key)?;
        let store = self.store(entity).await?;
        match store.latest(&key).await? {
            Some(stored) => present(&key, stored),
            None => Err(QueryError::NotFound(format!(
                "{entity} {key} does not exist"
            ))),
        }
    }

    /// The state of a key as of `as_of`, folded from its events in the stream.
    pub async fn as_of(&self, entity: &str, key: &str, as_of: AsOf) -> Result<State, QueryError> {
        let key = parse_key(key)?;
        let store = self.store(entity).await?;
        let mut last: Option<Stored> = None;
        let mut erased_first = false;
        let mut from = 1;
        'fold: loop {
            let page = store.history(&key, from, READ_BATCH).await?;
            let Some(tail) = page.last() else { break };
            from = tail.sequence + 1;
            let full = page.len() == READ_BATCH;
            if last.is_none() && page.first().is_some_and(|s| s.event.is_tombstone()) {
                erased_first = true;
            }
            for stored in page {
                if !as_of.covers(&stored.event) {
                    break 'fold;
                }
                last = Some(stored);
            }
            if !full {
                break;
            }
        }
        match last {
            Some(stored) => present(&key, stored),
            // Whatever the key was before its tombstone has left the stream.
            None if erased_first => Err(erased(&key)),
            None => Err(QueryError::NotFound(format!(
                "{entity} {key} did not exist at that point"
            ))),
        }
    }

    /// Up to `limit` events of a key from version `from_version` on.
    pub async fn history(
        &self,
        entity: &str,
        key: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<History, QueryError> {
        let key = parse_key(key)?;
        let store = self.store(entity).await?;
        // Read until one event past the page (to know whether another page follows).
        let mut events: Vec<Event> = Vec::new();
        let mut any = false;
        // An erased key with no life since answers 410, like its state.
        if store
            .latest(&key)
            .await?
            .is_some_and(|latest| latest.event.is_tombstone())
        {
            return Err(erased(&key));
        }
        let mut from = 1;
        loop {
            let page = store.history(&key, from, READ_BATCH).await?;
            let full = page.len() == READ_BATCH;
            if let Some(tail) = page.last() {
                any = true;
                from = tail.sequence + 1;
            }
            events.extend(
                page.into_iter()
                    .map(|s| s.event)
                    .filter(|e| e.version >= from_version),
            );
            if !full || events.len() > limit {
                break;
            }
        }
        if !any {
            return Err(QueryError::NotFound(format!(
                "{entity} {key} has no events"
            )));
        }
        let next_from_version = events.get(limit).map(|e| e.version);
        events.truncate(limit);
        Ok(History {
            key: key.to_string(),
            events,
            next_from_version,
        })
    }
}

fn parse_key(key: &str) -> Result<Key, QueryError> {
    Key::new(key).map_err(|error| QueryError::BadRequest(format!("invalid key: {error}")))
}

fn erased(key: &Key) -> QueryError {
    QueryError::Erased(format!("{key} was erased"))
}

fn present(key: &Key, stored: Stored) -> Result<State, QueryError> {
    if stored.event.is_tombstone() {
        return Err(erased(key));
    }
    match stored.event.state {
        Some(state) => Ok(State {
            key: key.to_string(),
            version: stored.event.version,
            sequence: stored.sequence,
            recorded_at: stored.event.recorded_at,
            state,
        }),
        None => Err(QueryError::NotFound(format!(
            "{key} was deleted at version {}",
            stored.event.version
        ))),
    }
}

/// At most 80 characters of user input, for echoing in an error.
pub(super) fn truncate(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_is_a_version_or_an_rfc3339_time() {
        assert_eq!(AsOf::parse("3").unwrap(), AsOf::Version(3));
        assert!(matches!(
            AsOf::parse("2026-01-31T12:00:00Z").unwrap(),
            AsOf::Time(_)
        ));
        assert_eq!(
            AsOf::parse("9999-12-31T23:59:59-23:59").unwrap(),
            AsOf::Time(jiff::Timestamp::MAX),
            "a time past jiff's range is after every event"
        );
        for bad in ["0", "yesterday", "-1", "2026-13-01T00:00:00Z", ""] {
            assert!(
                matches!(AsOf::parse(bad), Err(QueryError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn echoed_input_is_cut_to_80_characters() {
        assert_eq!(truncate("short"), "short");
        assert_eq!(truncate(&"é".repeat(200)).chars().count(), 81);
    }
}
