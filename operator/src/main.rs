//! `dreampipe-operator`: reconciles Entity, Adapter and Projection resources into runtime
//! Deployments. `main` owns the async runtime, logging and the one shutdown token.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use operator::context::Context;
use operator::probe::HttpProbe;
use operator::settings::RuntimeSettings;
use operator::streams::JetStreamAdmin;
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
    /// Namespaces to reconcile, comma-separated; every namespace when empty.
    #[arg(long, env = "DREAMPIPE_WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// The runtime image the children run.
    #[arg(long, env = "DREAMPIPE_RUNTIME_IMAGE", default_value = "dreampipe:dev")]
    runtime_image: String,
    /// Pull policy of the runtime image.
    #[arg(
        long,
        env = "DREAMPIPE_RUNTIME_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    runtime_pull_policy: String,
    /// NATS URL of the runtime pods and of the operator (it deletes streams of
    /// `deletionPolicy: Delete` Entities).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Secret (in each resource's namespace) holding the projectors' DATABASE_URL.
    #[arg(
        long,
        env = "DREAMPIPE_DATABASE_SECRET",
        default_value = "dreampipe-database"
    )]
    database_secret: String,
    /// Key of that Secret.
    #[arg(
        long,
        env = "DREAMPIPE_DATABASE_SECRET_KEY",
        default_value = "writer-url"
    )]
    database_secret_key: String,
    /// This operator's pod, named as the reporter of its Events.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
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
    let RunArgs {
        probe_addr,
        namespaces,
        runtime_image,
        runtime_pull_policy,
        nats_url,
        database_secret,
        database_secret_key,
        pod_name,
    } = args;
    let shutdown = process::shutdown_on_signal();
    let mut registry = Registry::default();
    let metrics = operator::metrics::Metrics::register(&mut registry);
    let health = Health::new(registry);

    let client = kube::Client::try_default().await?;
    // NATS is only needed to delete streams; the operator starts without it and reconnects.
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&nats_url)
        .await?;
    let settings = RuntimeSettings {
        image: runtime_image,
        image_pull_policy: runtime_pull_policy,
        nats_url,
        database_secret: crds::SecretKeyRef {
            name: database_secret,
            key: database_secret_key,
        },
    };
    let ctx = Arc::new(Context::new(
        client,
        settings,
        Arc::new(HttpProbe::new(Duration::from_secs(3))),
        Arc::new(JetStreamAdmin::new(nats)),
        metrics,
        pod_name,
    ));
    let scopes: Vec<Option<String>> = if namespaces.iter().all(|n| n.is_empty()) {
        vec![None]
    } else {
        namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(Some)
            .collect()
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        ?scopes,
        "operator started"
    );
    let controllers = futures::future::join_all(
        scopes
            .into_iter()
            .map(|scope| operator::controller::run(ctx.clone(), scope, shutdown.clone())),
    );
    let controllers = tokio::spawn(controllers);
    // Bound last: once the probe port answers, the signal handlers are long installed.
    let listener = process::bind(probe_addr).await?;
    health.set_ready(true);
    process::serve(listener, process::probe_routes(health), shutdown).await?;
    // Reconciles in flight finish; a watch still backing off from an unreachable API server
    // would hold the controllers open, and abandoning it is safe (reconciles are idempotent).
    if tokio::time::timeout(Duration::from_secs(5), controllers)
        .await
        .is_err()
    {
        tracing::warn!("controllers did not stop within 5s; exiting anyway");
    }
    tracing::info!("operator stopped");
    Ok(())
}
