//! What the runtime's roles share: the flags every role is started with (flattened into each
//! role's `Args`, as [`crate::auth::TokenArgs`] is), and the roles themselves as `dev` runs them.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The flags of every role that serves: its namespace, its NATS server, where it listens.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ServiceArgs {
    /// Namespace of resources that do not name one; the query service serves its Entities.
    #[arg(long, env = "DREAMPIPE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// NATS server URL, or a comma-separated list of a cluster's servers.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: crate::nats::NatsServers,
    /// Address of the role's API (if it has one), /healthz, /readyz, /metrics and /v1/status.
    #[arg(long, env = "DREAMPIPE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

/// The flags of every role that runs one resource from YAML: where the YAML is, and
/// [`ServiceArgs`].
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ResourceArgs {
    /// YAML files or folders holding the role's resource and its Entity (the operator mounts
    /// its ConfigMap here).
    #[arg(long, env = "DREAMPIPE_CONFIG", value_delimiter = ',', required = true)]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// A role `dev` runs, as its subcommand names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Query,
    Receiver,
    Projector,
    Adapter,
}

impl Role {
    /// The subcommand.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Query => "query",
            Role::Receiver => "receiver",
            Role::Projector => "projector",
            Role::Adapter => "adapter",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
