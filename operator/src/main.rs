//! `dreampipe-operator`: reconciles Entity, Adapter and Projection resources into runtime
//! Deployments. `main` owns the async runtime, logging and the one shutdown token.

use std::io::Write;
use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use process::{Health, LogFormat};
use prometheus_client::registry::Registry;

/// The DreamPipe Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "dreampipe-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
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
    /// Run the operator until SIGTERM.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "DREAMPIPE_PROBE_ADDR", default_value = "0.0.0.0:8080")]
    probe_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli {
        command,
        log_format,
    } = Cli::parse();
    match command {
        Command::Crds => {
            std::io::stdout().write_all(crds_yaml().as_bytes())?;
            Ok(())
        }
        Command::Run(args) => {
            process::init_tracing(log_format);
            run(args).await
        }
    }
}

fn crds_yaml() -> String {
    crds::generate::crd_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs { probe_addr } = args;
    let shutdown = process::shutdown_on_signal();
    let health = Health::new(Registry::default());
    let listener = process::bind(probe_addr).await?;
    health.set_ready(true);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "operator started");
    process::serve(listener, process::probe_routes(health), shutdown).await?;
    tracing::info!("operator stopped");
    Ok(())
}
