//! A Salesforce-like CRM, served by DreamPipe's own code for the example and the tests:
//! accounts that change and get deleted over time, a SOQL-like query API with pages and
//! `nextRecordsUrl`, bearer auth. `dreampipe crm-simulator` runs it.

pub mod crm;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Flags of `dreampipe crm-simulator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the CRM's API.
    #[arg(long, env = "CRM_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// Bearer token the API accepts.
    #[arg(long, env = "CRM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Accounts at start.
    #[arg(long, env = "CRM_ACCOUNTS", default_value_t = 200)]
    pub accounts: u64,
    /// Seed of the simulated history: the same seed gives the same accounts and changes.
    #[arg(long, env = "CRM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Time between two ticks of business (e.g. 1s); every tenth tick deletes one account and
    /// creates one.
    #[arg(long, env = "CRM_TICK", default_value = "1s", value_parser = humantime_duration)]
    pub tick: Duration,
    /// Accounts changed per tick.
    #[arg(long, env = "CRM_CHANGES_PER_TICK", default_value_t = 5)]
    pub changes_per_tick: u64,
    /// Records per page.
    #[arg(long, env = "CRM_PAGE_SIZE", default_value_t = 100)]
    pub page_size: usize,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    crds::validate::parse_duration(text).map_err(|e| e.to_string())
}

/// Serves the simulated CRM until `shutdown`, advancing its business every tick.
pub async fn run(args: Args, shutdown: CancellationToken) -> std::io::Result<()> {
    let Args {
        listen,
        token,
        accounts,
        seed,
        tick,
        changes_per_tick,
        page_size,
    } = args;
    let crm = crm::Crm::new(accounts, seed, jiff::Timestamp::now());
    let simulator = Arc::new(http::Simulator::new(crm, token, page_size));
    let ticking = {
        let simulator = simulator.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            for n in 0.. {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                simulator.crm.lock().expect("crm lock").tick(
                    n,
                    changes_per_tick,
                    jiff::Timestamp::now(),
                );
            }
        }
    };
    tokio::spawn(ticking);
    let listener = process::bind(listen).await?;
    tracing::info!(%listen, accounts, seed, "CRM simulator serving");
    process::serve(listener, http::routes(simulator), shutdown).await
}
