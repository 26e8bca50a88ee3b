//! Asking an Entity's receivers to erase a key, over NATS request-reply (ADR 76). Behind a trait
//! so the Erasure scenarios are tested without a NATS server.

use std::time::Duration;

use crds::erasure::{ErasureCommand, ErasureReply, erasure_subject};
use futures::future::BoxFuture;

/// How long one erasure request may take: a tombstone append and a subject purge, retried
/// on conflicts by the receiver.
pub const ERASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a receiver gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("no receiver of {entity} answers on {subject}: it is not running or not connected")]
    NoReceiver { entity: String, subject: String },
    #[error("no receiver of {entity} answered on {subject} within {after:?}")]
    Timeout {
        entity: String,
        subject: String,
        after: Duration,
    },
    #[error("asking a receiver of {entity} on {subject} failed")]
    Request {
        entity: String,
        subject: String,
        #[source]
        source: async_nats::RequestError,
    },
    #[error("the answer of a receiver of {entity} is not an erasure reply")]
    Reply {
        entity: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Carries out erasures.
pub trait Eraser: Send + Sync + std::fmt::Debug {
    /// Asks a receiver of `entity` in `namespace` to erase `command.key`.
    fn erase(
        &self,
        namespace: String,
        entity: String,
        command: ErasureCommand,
    ) -> BoxFuture<'static, Result<ErasureReply, EraseError>>;
}

/// Sends erasure requests to the receivers over the operator's NATS connection.
#[derive(Clone, Debug)]
pub struct NatsEraser {
    client: async_nats::Client,
}

impl NatsEraser {
    pub fn new(client: async_nats::Client) -> Self {
        NatsEraser { client }
    }
}

impl Eraser for NatsEraser {
    fn erase(
        &self,
        namespace: String,
        entity: String,
        command: ErasureCommand,
    ) -> BoxFuture<'static, Result<ErasureReply, EraseError>> {
        let client = self.client.clone();
        Box::pin(async move {
            use async_nats::RequestErrorKind;
            let subject = erasure_subject(&namespace, &entity);
            let body = serde_json::to_vec(&command).expect("a command serialises");
            let request = async_nats::Request::new()
                .payload(body.into())
                .timeout(Some(ERASE_TIMEOUT));
            let message = match client.send_request(subject.clone(), request).await {
                Ok(message) => message,
                Err(error) if error.kind() == RequestErrorKind::NoResponders => {
                    return Err(EraseError::NoReceiver { entity, subject });
                }
                Err(error) if error.kind() == RequestErrorKind::TimedOut => {
                    return Err(EraseError::Timeout {
                        entity,
                        subject,
                        after: ERASE_TIMEOUT,
                    });
                }
                Err(source) => {
                    return Err(EraseError::Request {
                        entity,
                        subject,
                        source,
                    });
                }
            };
            serde_json::from_slice(&message.payload)
                .map_err(|source| EraseError::Reply { entity, source })
        })
    }
}
