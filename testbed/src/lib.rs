//! Throwaway servers for integration tests: a real `nats-server` with JetStream and a real
//! Postgres (started by the `servers` crate), each on a free port with its own temporary
//! directory, stopped and removed on drop. `DATABASE_URL`, when set, names an existing server
//! to use instead of a throwaway cluster; every test still gets a fresh database.
//! [`child`] drives the project's own binaries the way the kubelet does.

pub mod child;
mod nats;
mod postgres;

pub use nats::{NatsCluster, NatsServer};
pub use postgres::TestDatabase;
pub use servers::{ServerError, locate_binary};

/// Why a test server could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to NATS at {url}")]
    NatsConnect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("Postgres: {action}")]
    Postgres {
        action: String,
        #[source]
        source: sqlx::Error,
    },
}

impl TestbedError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| TestbedError::Io { action, source }
    }
}
