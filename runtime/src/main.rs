//! `dreampipe`: the one runtime image; its subcommand picks the role. The roles arrive with
//! their issues (receiver, projector, query, adapter, dev).

use clap::{Parser, Subcommand};
use process::LogFormat;

/// DreamPipe runtime: one binary, a subcommand per role.
#[derive(Debug, Parser)]
#[command(name = "dreampipe", version, about)]
struct Cli {
    /// Log lines as JSON (for collectors) or text (for a terminal).
    #[arg(
        long,
        env = "DREAMPIPE_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep a Projection's view (or subject) up to date from its Entity's stream.
    Projector(runtime::projector::command::ProjectorArgs),
}

fn main() -> anyhow::Result<()> {
    let Cli {
        log_format,
        command,
    } = Cli::parse();
    process::init_tracing(log_format);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let shutdown = process::shutdown_on_signal();
        match command {
            Command::Projector(args) => runtime::projector::command::run(args, shutdown).await?,
        }
        Ok(())
    })
}
