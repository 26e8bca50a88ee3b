//! What can go wrong in the event store: one variant per action, so a failure names what it
//! was doing, and beneath a read, what failed at the server.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, GetStreamError, PublishError};
use async_nats::jetstream::stream::{DirectGetError, InfoError, LastRawMessageError};

use super::jetstream::MIN_SERVER;

/// Why the event store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "NATS server {version} is too old: DreamPipe needs {}.{} or newer (older servers silently \
         ignore stream settings it depends on)",
        MIN_SERVER.0, MIN_SERVER.1
    )]
    ServerTooOld { version: String },
    #[error("invalid stream setting {field}: {value:?}")]
    Setting { field: &'static str, value: String },
    #[error("could not create or update stream {stream}")]
    EnsureStream {
        stream: String,
        #[source]
        source: CreateStreamError,
    },
    #[error("could not open stream {stream}")]
    OpenStream {
        stream: String,
        #[source]
        source: GetStreamError,
    },
    #[error("could not read the state of stream {stream}")]
    StreamInfo {
        stream: String,
        #[source]
        source: InfoError,
    },
    #[error("could not read message {sequence} of stream {stream} from its leader")]
    Anchor {
        stream: String,
        sequence: u64,
        #[source]
        source: async_nats::jetstream::stream::RawMessageError,
    },
    #[error("could not read the latest event of {subject}")]
    Latest {
        subject: String,
        #[source]
        source: ReadError,
    },
    #[error("could not read the latest events of {keys} keys of stream {stream}")]
    LatestMany {
        stream: String,
        keys: usize,
        #[source]
        source: ReadError,
    },
    #[error("could not read the history of {subject} from sequence {from}")]
    History {
        subject: String,
        from: u64,
        #[source]
        source: ReadError,
    },
    #[error("event at {subject} (sequence {sequence}) is not a DreamPipe event")]
    Corrupt {
        subject: String,
        sequence: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the event for {subject} is {size} bytes; the NATS server accepts at most {limit} bytes \
         per event (its max_payload less the event's headers)"
    )]
    EventTooLarge {
        subject: String,
        size: usize,
        limit: usize,
    },
    #[error("could not purge the events of {subject} before sequence {before}")]
    Purge {
        subject: String,
        before: u64,
        #[source]
        source: async_nats::jetstream::stream::PurgeError,
    },
    #[error("could not append to {subject}")]
    Append {
        subject: String,
        #[source]
        source: PublishError,
    },
}

/// What failed while reading events from the server; [`StoreError`] says which read it was.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the direct get failed")]
    Direct(#[source] DirectGetError),
    #[error("the get from the stream leader failed")]
    Leader(#[source] LastRawMessageError),
    #[error("cannot subscribe to the reply inbox of a batched direct get")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("cannot send the batched direct get")]
    Publish(#[source] async_nats::PublishError),
    #[error("the batched direct get did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the reply subscription closed before the batch ended")]
    Closed,
    #[error("the connection to NATS was lost before the batch ended")]
    Disconnected,
    #[error("the batched direct get answered {status}: {description:?}")]
    Status {
        status: u16,
        description: Option<String>,
    },
    #[error("a batched direct get reply has no Nats-Subject or Nats-Sequence header")]
    MissingHeaders,
    #[error("the Nats-Sequence {0:?} of a batched direct get reply is not a number")]
    Sequence(String, #[source] std::num::ParseIntError),
}
