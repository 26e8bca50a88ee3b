//! `dreampipe`: the one runtime image; its subcommand picks the role. `main` owns the async
//! runtime, logging and the one shutdown token.

use std::process::ExitCode;

use clap::Parser;
use runtime::cli::Cli;

// The receiver and projector allocate many short-lived JSON values; glibc's allocator spent
// about 40% of the receiver's CPU on them (profiled with the receiver benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        command,
        log_format,
    } = Cli::parse();
    let telemetry = process::init_tracing(log_format, &format!("dreampipe-{}", command.name()));
    let shutdown = process::shutdown_on_signal();
    let code = match command.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped with an error");
            ExitCode::FAILURE
        }
    };
    // Off the runtime's threads: the exporter's last, blocking, export.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    code
}
