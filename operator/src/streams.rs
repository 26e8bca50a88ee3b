//! Deleting an Entity's JetStream stream when its `deletionPolicy` is `Delete`. Behind a trait
//! so the deletion scenario is tested without a NATS server.

use futures::future::BoxFuture;

/// Why a stream could not be deleted.
#[derive(Debug, thiserror::Error)]
#[error("deleting JetStream stream {stream}")]
pub struct StreamError {
    pub stream: String,
    #[source]
    pub source: async_nats::jetstream::context::DeleteStreamError,
}

/// Removes event streams.
pub trait StreamAdmin: Send + Sync + std::fmt::Debug {
    /// Deletes `stream`; true when it existed, false when it was already gone.
    fn delete_stream(&self, stream: String) -> BoxFuture<'static, Result<bool, StreamError>>;
}

/// Deletes streams on the NATS server the runtime uses.
#[derive(Clone, Debug)]
pub struct JetStreamAdmin {
    jetstream: async_nats::jetstream::Context,
}

impl JetStreamAdmin {
    pub fn new(client: async_nats::Client) -> Self {
        JetStreamAdmin {
            jetstream: async_nats::jetstream::new(client),
        }
    }
}

impl StreamAdmin for JetStreamAdmin {
    fn delete_stream(&self, stream: String) -> BoxFuture<'static, Result<bool, StreamError>> {
        let jetstream = self.jetstream.clone();
        Box::pin(async move {
            use async_nats::jetstream::context::DeleteStreamErrorKind;
            match jetstream.delete_stream(&stream).await {
                Ok(_) => Ok(true),
                Err(error)
                    if matches!(
                        error.kind(),
                        DeleteStreamErrorKind::JetStream(e)
                            if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    Ok(false)
                }
                Err(source) => Err(StreamError { stream, source }),
            }
        })
    }
}
