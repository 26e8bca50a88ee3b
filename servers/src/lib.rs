//! Starts `nats-server` (with JetStream) and Postgres as child processes whose data live in a
//! folder the caller chooses (a temporary one for tests, `.dreampipe/` for `dreampipe dev`),
//! and stops them on drop. Synchronous: starting takes a moment of polling, nothing async.
//!
//! Binaries are found in the workspace's `.tools/bin` (where `scripts/install-deps` puts
//! them), then on `$PATH` and, for Postgres, Debian's `/usr/lib/postgresql/<version>/bin`;
//! `NATS_SERVER_BIN` and `POSTGRES_BIN_DIR` override.

mod locate;
mod nats;
mod postgres;

pub use locate::locate_binary;
pub use nats::{Nats, NatsCluster};
pub use postgres::{Durability, Postgres, REACHABLE_ROOT, SUPERUSER};

use std::path::Path;

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
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
    #[error(
        "the postgres user cannot run {binary}; install PostgreSQL where every user can \
         reach it (scripts/install-deps installs it from apt)"
    )]
    UnreachableBinary {
        binary: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the postgres user cannot reach the cluster in {data} (a folder above it is private): \
         move the state folder where it can, or remove {data} to start afresh"
    )]
    UnreachableCluster { data: std::path::PathBuf },
    #[error("{server} did not start: {reason}\n--- last lines of its log ---\n{log}")]
    StartFailed {
        server: &'static str,
        reason: String,
        log: String,
    },
}

impl ServerError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| ServerError::Io { action, source }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
