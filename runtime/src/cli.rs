//! The command line of `dreampipe`: a subcommand per role, each its module's `Args` and `run`.
//! In the library so that tests parse exactly what the binary parses (the operator's pod specs,
//! `dev`'s settings).

use clap::{Parser, Subcommand};
use process::LogFormat;
use tokio_util::sync::CancellationToken;

/// DreamPipe runtime: one binary, a subcommand per role.
#[derive(Debug, Parser)]
#[command(name = "dreampipe", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as JSON (for collectors) or text (for a terminal).
    #[arg(
        long,
        env = "DREAMPIPE_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Event Receiver: validates submissions and appends an event when they carry new information.
    Receiver(crate::receiver::Args),
    /// Adapter: reads records from a source, maps them onto an Entity and submits them.
    Adapter(crate::adapter::Args),
    /// Projector: keeps a Projection's view (or subject) up to date from its Entity's stream.
    Projector(crate::projector::command::ProjectorArgs),
    /// Event Query Service: entity states and history, and projected views.
    Query(crate::query::Args),
    /// A Salesforce-like CRM whose accounts change over time, for the example and the tests.
    CrmSimulator(crate::simulator::Args),
    /// Everything of a folder of YAML in one process, with NATS and Postgres started if needed.
    Dev(crate::dev::Args),
    /// A Projection's dead letters: list them, show one, mark them handled.
    Deadletters(crate::deadletters::Args),
    /// Erase one key of an Entity through its receiver (ADR 75).
    Erase(crate::erase::Args),
}

impl Command {
    /// The role's name, as its subcommand spells it (and its traces' service, `dreampipe-<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Receiver(_) => "receiver",
            Command::Adapter(_) => "adapter",
            Command::Projector(_) => "projector",
            Command::Query(_) => "query",
            Command::CrmSimulator(_) => "crm-simulator",
            Command::Dev(_) => "dev",
            Command::Deadletters(_) => "deadletters",
            Command::Erase(_) => "erase",
        }
    }

    /// Runs the role until `shutdown`; its error as one line with its sources.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        fn chain<E: std::error::Error>(error: E) -> String {
            crate::error_chain(&error)
        }
        match self {
            Command::Receiver(args) => crate::receiver::run(args, shutdown).await.map_err(chain),
            Command::Adapter(args) => crate::adapter::run(args, shutdown).await.map_err(chain),
            Command::Projector(args) => crate::projector::command::run(args, shutdown)
                .await
                .map_err(chain),
            Command::Query(args) => crate::query::run(args, shutdown).await.map_err(chain),
            Command::CrmSimulator(args) => {
                crate::simulator::run(args, shutdown).await.map_err(chain)
            }
            Command::Dev(args) => crate::dev::run(args, shutdown).await.map_err(chain),
            Command::Deadletters(args) => {
                crate::deadletters::run(args, shutdown).await.map_err(chain)
            }
            Command::Erase(args) => crate::erase::run(args, shutdown).await.map_err(chain),
        }
    }
}
