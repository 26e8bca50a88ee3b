//! A source's durable progress, in the NATS KV bucket `dp_adapters` under
//! `<namespace>.<adapter>`: for the http source the incremental cursor, when the last full
//! read ran, and (with `deleteMissing`) the keys the adapter has submitted and not deleted;
//! for the postgres source the snapshot its initial read was taken at (the replication slot
//! keeps its position in the WAL).
//!
//! The keys are remembered here rather than read back from the Entity's stream: the adapter
//! then needs no access to the event store, only to its receiver, and the set is exactly the
//! keys this adapter is responsible for (another adapter of the same Entity keeps its own).

use std::collections::BTreeSet;

use async_nats::jetstream::context::CreateKeyValueError;
use async_nats::jetstream::kv::{self, EntryError, PutError};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The KV bucket holding every adapter's cursor.
pub const BUCKET: &str = "dp_adapters";

/// What an http source has durably achieved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// The highest value of the incremental field submitted so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Json>,
    /// When the last full read finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_read: Option<jiff::Timestamp>,
    /// Keys submitted and not deleted (kept only with `deleteMissing`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub keys: BTreeSet<String>,
    /// The postgres source's initial snapshot, once every row of it was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<super::source::postgres::SnapshotMark>,
}

/// Why the cursor could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cannot open the KV bucket {BUCKET}")]
    Bucket(#[source] CreateKeyValueError),
    #[error("cannot read the cursor {key:?}")]
    Read {
        key: String,
        #[source]
        source: EntryError,
    },
    #[error("the cursor {key:?} is not valid JSON")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot store the cursor {key:?}")]
    Write {
        key: String,
        #[source]
        source: PutError,
    },
}

/// One adapter's entry in the bucket.
#[derive(Debug, Clone)]
pub struct CursorStore {
    store: kv::Store,
    key: String,
}

impl CursorStore {
    /// Opens (creating when missing) the bucket and names the adapter's entry.
    pub async fn open(
        client: &async_nats::Client,
        namespace: &str,
        adapter: &str,
    ) -> Result<Self, CursorError> {
        let store = async_nats::jetstream::new(client.clone())
            .create_or_update_key_value(kv::Config {
                bucket: BUCKET.to_owned(),
                description: "DreamPipe adapters' durable cursors".to_owned(),
                history: 1,
                ..Default::default()
            })
            .await
            .map_err(CursorError::Bucket)?;
        Ok(CursorStore {
            store,
            key: format!("{namespace}.{adapter}"),
        })
    }

    /// The stored cursor, or the empty one before the first sync.
    pub async fn load(&self) -> Result<Cursor, CursorError> {
        let value =
            self.store
                .get(self.key.as_str())
                .await
                .map_err(|source| CursorError::Read {
                    key: self.key.clone(),
                    source,
                })?;
        match value {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| CursorError::Decode {
                key: self.key.clone(),
                source,
            }),
            None => Ok(Cursor::default()),
        }
    }

    pub async fn save(&self, cursor: &Cursor) -> Result<(), CursorError> {
        let bytes = serde_json::to_vec(cursor).expect("a cursor serialises");
        self.store
            .put(self.key.as_str(), bytes.into())
            .await
            .map_err(|source| CursorError::Write {
                key: self.key.clone(),
                source,
            })?;
        Ok(())
    }
}
