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
    process::init_tracing(log_format);
    let shutdown = process::shutdown_on_signal();
    match command.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped with an error");
            ExitCode::FAILURE
        }
    }
}
