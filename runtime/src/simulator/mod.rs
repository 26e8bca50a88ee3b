//! A Salesforce-like CRM, served by DreamPipe's own code for the example and the tests:
//! accounts that change and get deleted over time, a SOQL-like query API with pages and
//! `nextRecordsUrl`, bearer auth with a fixed token or an OAuth2 token endpoint.
//! `dreampipe crm-simulator` runs it.

pub mod crm;
pub mod http;
pub mod oauth;

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
    /// A fixed bearer token the API accepts.
    #[arg(long, env = "CRM_TOKEN", hide_env_values = true, default_value = "")]
    pub token: String,
    /// The connected app's client id: with a client secret, the OAuth2 token endpoint
    /// `/services/oauth2/token` issues tokens the API accepts.
    #[arg(long, env = "CRM_CLIENT_ID", requires = "client_secret")]
    pub client_id: Option<String>,
    /// The connected app's client secret.
    #[arg(
        long,
        env = "CRM_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id"
    )]
    pub client_secret: Option<String>,
    /// A refresh token the app was granted (the refresh token grant is offered with it).
    #[arg(long, env = "CRM_REFRESH_TOKEN", hide_env_values = true)]
    pub refresh_token: Option<String>,
    /// How long an issued access token is good for.
    #[arg(long, env = "CRM_TOKEN_LIFETIME", default_value = "2h", value_parser = humantime_duration)]
    pub token_lifetime: Duration,
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
        client_id,
        client_secret,
        refresh_token,
        token_lifetime,
        accounts,
        seed,
        tick,
        changes_per_tick,
        page_size,
    } = args;
    let crm = crm::Crm::new(accounts, seed, jiff::Timestamp::now());
    let mut simulator = http::Simulator::new(crm, token, page_size);
    if let (Some(client_id), Some(client_secret)) = (client_id, client_secret) {
        simulator = simulator.with_oauth(oauth::ConnectedApp {
            client_id,
            client_secret,
            refresh_token,
            lifetime: token_lifetime,
        });
    }
    let simulator = Arc::new(simulator);
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
