//! `dreampipe`: the one runtime image; its subcommand picks the role. The roles arrive with
//! their issues (receiver, projector, query, adapter, dev).

use clap::Parser;

/// DreamPipe runtime: one binary, a subcommand per role.
#[derive(Debug, Parser)]
#[command(name = "dreampipe", version, about)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
}
