//! `nats-server` with JetStream, storing into a folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ServerError, locate_binary, log_tail};

/// A running `nats-server` with JetStream on a port it picked itself, storing its streams in
/// `<dir>/jetstream`. Dropping it stops the server; the folder stays (it is the caller's).
#[derive(Debug)]
pub struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    /// Starts a server over `dir` and waits until it accepts clients.
    pub fn start(dir: &Path) -> Result<Self, ServerError> {
        let dir = &std::path::absolute(dir)
            .map_err(ServerError::io(format!("resolve {}", dir.display())))?;
        let override_dir = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .and_then(|bin| bin.parent().map(PathBuf::from));
        let binary = locate_binary("nats-server", override_dir.as_deref(), &[])?;
        std::fs::create_dir_all(dir)
            .map_err(ServerError::io(format!("create {}", dir.display())))?;
        let log = dir.join("nats.log");
        // `-p -1` lets the server pick a free port itself (no race with other processes); it
        // reports the port in a ports file named after its pid.
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
            .arg(dir.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(dir)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(ServerError::io(format!("start {}", binary.display())))?;
        let mut server = Nats {
            child,
            url: String::new(),
        };
        server.url = server.wait_for_port(dir, &log)?;
        Ok(server)
    }

    fn wait_for_port(&mut self, dir: &Path, log: &Path) -> Result<String, ServerError> {
        let ports_file = dir.join(format!("nats-server_{}.ports", self.child.id()));
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
                return Err(ServerError::StartFailed {
                    server: "nats-server",
                    reason,
                    log: log_tail(log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The first client URL in a nats-server ports file (`{"nats": ["nats://127.0.0.1:port"], ...}`).
fn client_url(ports_file: &str) -> Option<String> {
    let ports: serde_json::Value = serde_json::from_str(ports_file).ok()?;
    ports.get("nats")?.get(0)?.as_str().map(str::to_owned)
}

impl Drop for Nats {
    fn drop(&mut self) {
        // JetStream's file store survives a kill; a graceful stop buys nothing here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
