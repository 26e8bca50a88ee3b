//! `dreampipe`: the one runtime image; its subcommand picks the role. `main` owns the async
//! runtime, logging and the one shutdown token.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use process::LogFormat;

// The receiver and projector allocate many short-lived JSON values; glibc's allocator spent
// about 40% of the receiver's CPU on them (profiled with the receiver benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DreamPipe runtime: one binary, a subcommand per role.
#[derive(Debug, Parser)]
#[command(name = "dreampipe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as JSON (for collectors) or text (for a terminal).
    #[arg(
        long,
        env = "DREAMPIPE_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Event Receiver: validates submissions and appends an event when they carry new information.
    Receiver(runtime::receiver::Args),
    /// Adapter: reads records from a source, maps them onto an Entity and submits them.
    Adapter(runtime::adapter::Args),
    /// Projector: keeps a Projection's view (or subject) up to date from its Entity's stream.
    Projector(runtime::projector::command::ProjectorArgs),
    /// Event Query Service: entity states and history, and projected views.
    Query(runtime::query::Args),
    /// A Salesforce-like CRM whose accounts change over time, for the example and the tests.
    CrmSimulator(runtime::simulator::Args),
    /// Everything of a folder of YAML in one process, with NATS and Postgres started if needed.
    Dev(runtime::dev::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        command,
        log_format,
    } = Cli::parse();
    process::init_tracing(log_format);
    let shutdown = process::shutdown_on_signal();
    let result = match command {
        Command::Receiver(args) => runtime::receiver::run(args, shutdown)
            .await
            .map_err(|e| runtime::error_chain(&e)),
        Command::Adapter(args) => runtime::adapter::run(args, shutdown)
            .await
            .map_err(|e| runtime::error_chain(&e)),
        Command::Projector(args) => runtime::projector::command::run(args, shutdown)
            .await
            .map_err(|e| runtime::error_chain(&e)),
        Command::Query(args) => runtime::query::run(args, shutdown)
            .await
            .map_err(|e| runtime::error_chain(&e)),
        Command::CrmSimulator(args) => runtime::simulator::run(args, shutdown)
            .await
            .map_err(|e| runtime::error_chain(&e)),
        Command::Dev(args) => runtime::dev::run(args, shutdown)
            .await
            .map_err(|e| runtime::error_chain(&e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped with an error");
            ExitCode::FAILURE
        }
    }
}
