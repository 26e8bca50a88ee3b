//! A throwaway `nats-server` with JetStream.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{TestbedError, locate_binary, log_tail};

/// A running `nats-server` with JetStream, on a free port, storing into a temporary directory.
/// Dropping it kills the server and removes the directory.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    url: String,
    // Declared last so the directory is removed after the server is stopped.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients.
    pub async fn start() -> Result<Self, TestbedError> {
        let override_dir = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .and_then(|bin| bin.parent().map(PathBuf::from));
        let binary = locate_binary("nats-server", override_dir.as_deref(), &[])?;
        let dir = tempfile::Builder::new()
            .prefix("dreampipe-nats-")
            .tempdir()
            .map_err(TestbedError::io("create a temp dir for nats-server"))?;
        let log = dir.path().join("nats.log");
        // `-p -1` lets the server pick a free port itself (no race with other tests); it
        // reports the port in a ports file.
        let child = Command::new(&binary)
            .args([
                "--jetstream",
                "--addr",
                "127.0.0.1",
                "--port",
                "-1",
                "--http_port",
                "-1",
            ])
            .arg("--store_dir")
            .arg(dir.path().join("jetstream"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TestbedError::io(format!("start {}", binary.display())))?;
        let mut server = NatsServer {
            child,
            url: String::new(),
            dir,
        };
        server.url = server.wait_for_port(&log).await?;
        Ok(server)
    }

    async fn wait_for_port(&mut self, log: &std::path::Path) -> Result<String, TestbedError> {
        let ports_file = self
            .dir
            .path()
            .join(format!("nats-server_{}.ports", self.child.id()));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Some(url) = client_url(&text)
            {
                return Ok(url);
            }
            let failure = match self.child.try_wait() {
                Ok(Some(status)) => Some(format!("it exited with {status}")),
                Ok(None) if Instant::now() > deadline => {
                    Some("no client port after 15s".to_owned())
                }
                Ok(None) => None,
                Err(error) => Some(error.to_string()),
            };
            if let Some(reason) = failure {
                return Err(TestbedError::StartFailed {
                    server: "nats-server",
                    reason,
                    log: log_tail(log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client, TestbedError> {
        async_nats::connect(&self.url)
            .await
            .map_err(|source| TestbedError::NatsConnect {
                url: self.url.clone(),
                source,
            })
    }

    /// A JetStream context over a new client connection.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, TestbedError> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }
}

/// The first client URL in a nats-server ports file (`{"nats": ["nats://127.0.0.1:port"], ...}`).
fn client_url(ports_file: &str) -> Option<String> {
    let ports: serde_json::Value = serde_json::from_str(ports_file).ok()?;
    ports.get("nats")?.get(0)?.as_str().map(str::to_owned)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // A test server keeps nothing worth a graceful shutdown; its store is removed next.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
