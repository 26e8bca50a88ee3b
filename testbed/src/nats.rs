//! A throwaway `nats-server` with JetStream.

use servers::Nats;
use tempfile::TempDir;

use crate::TestbedError;

/// A running `nats-server` with JetStream, on a free port, storing into a temporary directory.
/// Dropping it kills the server and removes the directory.
#[derive(Debug)]
pub struct NatsServer {
    server: Nats,
    // Declared last so the directory is removed after the server is stopped.
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients.
    pub async fn start() -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("dreampipe-nats-")
            .tempdir()
            .map_err(TestbedError::io("create a temp dir for nats-server"))?;
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || Nats::start(&path))
            .await
            .expect("starting nats-server does not panic")?;
        Ok(NatsServer { server, _dir: dir })
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client, TestbedError> {
        async_nats::connect(self.url())
            .await
            .map_err(|source| TestbedError::NatsConnect {
                url: self.url().to_owned(),
                source,
            })
    }

    /// A JetStream context over a new client connection.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, TestbedError> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }
}
