//! Throwaway servers for integration tests: a real `nats-server` with JetStream and a real
//! Postgres, each on a free port with its own temporary directory, stopped and removed on drop.
//!
//! Binaries are found in `$NATS_SERVER_BIN` / `$POSTGRES_BIN_DIR`, then the workspace's
//! `.tools/bin` (where `scripts/install-deps` puts them), then `$PATH` and, for Postgres,
//! Debian's `/usr/lib/postgresql/<version>/bin`. `DATABASE_URL`, when set, names an existing
//! server to use instead of a throwaway cluster; every test still gets a fresh database.
//! [`child`] drives the project's own binaries the way the kubelet does.

pub mod child;
mod locate;
mod nats;
mod postgres;

pub use locate::locate_binary;
pub use nats::NatsServer;
pub use postgres::TestDatabase;

use std::path::PathBuf;

/// Why a test server could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{name} not found (looked in {looked}); {hint}")]
    MissingBinary {
        name: String,
        looked: String,
        hint: &'static str,
    },
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} did not start: {reason}\n--- last lines of its log ---\n{log}")]
    StartFailed {
        server: &'static str,
        reason: String,
        log: String,
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

/// The workspace root, where `.tools/bin` lives.
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testbed lives one level below the workspace root")
        .to_path_buf()
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
