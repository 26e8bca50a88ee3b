//! `dreampipe-operator`: reconciles Entity, Adapter and Projection resources into runtime
//! Deployments. `main` owns the async runtime, logging and the one shutdown token.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use operator::context::Context;
use operator::erasures::NatsEraser;
use operator::leader::{self, LeaseConfig};
use operator::probe::HttpProbe;
use operator::settings::RuntimeSettings;
use operator::streams::JetStreamAdmin;
use process::{Health, LogFormat};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

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
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once, in main; boxing it buys nothing"
)]
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
    /// `deletionPolicy: Delete` Entities), or a comma-separated list of a cluster's servers.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Stream replicas of Entities that set no `spec.stream.replicas` (1 to 5): the chart sets
    /// 3 when it runs a NATS cluster.
    #[arg(long, env = "DREAMPIPE_DEFAULT_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    default_stream_replicas: u8,
    /// OTLP/HTTP collector the runtime pods export traces to (their
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); the operator's own traces follow its own
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[arg(long, env = "DREAMPIPE_RUNTIME_OTLP_ENDPOINT")]
    runtime_otlp_endpoint: Option<String>,
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
    /// Postgres login roles the projectors make members of their namespace's reader role
    /// (`dp_<namespace>_reader`), comma-separated: the query service's role.
    #[arg(long, env = "DREAMPIPE_READER_MEMBERS", value_delimiter = ',')]
    reader_members: Vec<String>,
    /// NetworkPolicies for every Entity's receivers: only the Entity's adapters, the operator
    /// and the namespaces of `--receiver-ingress-namespaces` reach them (ADR 64). Off, the
    /// operator deletes the ones it made.
    #[arg(
        long,
        env = "DREAMPIPE_NETWORK_POLICIES",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    network_policies: bool,
    /// Namespaces whose pods may also call receivers when NetworkPolicies are on,
    /// comma-separated (applications writing directly, Prometheus).
    #[arg(
        long,
        env = "DREAMPIPE_RECEIVER_INGRESS_NAMESPACES",
        value_delimiter = ','
    )]
    receiver_ingress_namespaces: Vec<String>,
    /// This operator's pod, named as the reporter of its Events and as its identity in the
    /// leader Lease.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Whether replicas elect a leader on a Lease, so only one reconciles (ADR 51). Off, every
    /// replica reconciles: run one.
    #[arg(
        long,
        env = "DREAMPIPE_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    leader_election: bool,
    /// Namespace of the leader Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "DREAMPIPE_LEASE_NAME",
        default_value = "dreampipe-operator"
    )]
    lease_name: String,
    /// How long a leader's term lasts without renewal (whole seconds); a standby takes over
    /// after it.
    #[arg(long, env = "DREAMPIPE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How long before its term ends the leader renews (whole seconds, shorter than the term):
    /// also the clock skew between nodes the election tolerates.
    #[arg(long, env = "DREAMPIPE_LEASE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    lease_grace: Duration,
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
            let telemetry = process::init_tracing(log_format, "dreampipe-operator");
            let result = run(args).await;
            tokio::task::spawn_blocking(move || telemetry.shutdown())
                .await
                .ok();
            result
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
        default_stream_replicas,
        runtime_otlp_endpoint,
        database_secret,
        database_secret_key,
        reader_members,
        network_policies,
        receiver_ingress_namespaces,
        pod_name,
        leader_election,
        lease_namespace,
        lease_name,
        lease_duration,
        lease_grace,
    } = args;
    let shutdown = process::shutdown_on_signal();
    let mut registry = Registry::default();
    let metrics = operator::metrics::Metrics::register(&mut registry);
    let health = Health::new(registry);

    let client = kube::Client::try_default().await?;
    // NATS is only needed to delete streams and ask receivers for erasures; the operator
    // starts without it and reconnects.
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats_url.split(',').map(str::trim).collect::<Vec<_>>())
        .await?;
    let settings = RuntimeSettings {
        image: runtime_image,
        image_pull_policy: runtime_pull_policy,
        nats_url,
        default_stream_replicas,
        otlp_endpoint: runtime_otlp_endpoint.filter(|endpoint| !endpoint.trim().is_empty()),
        database_secret: crds::SecretKeyRef {
            name: database_secret,
            key: database_secret_key,
        },
        reader_members,
        receiver_ingress: network_policies.then(|| operator::settings::ReceiverIngress {
            operator_namespace: lease_namespace.clone(),
            from_namespaces: receiver_ingress_namespaces
                .into_iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        }),
    };
    let identity = pod_name
        .clone()
        .unwrap_or_else(|| format!("dreampipe-operator-{}", std::process::id()));
    let election = leader_election.then(|| {
        (
            client.clone(),
            LeaseConfig {
                namespace: lease_namespace,
                name: lease_name,
                identity,
                duration: lease_duration,
                grace: lease_grace,
            },
        )
    });
    let ctx = Arc::new(Context::new(
        client,
        settings,
        Arc::new(HttpProbe::new(Duration::from_secs(3))),
        Arc::new(JetStreamAdmin::new(nats.clone())),
        Arc::new(NatsEraser::new(nats)),
        metrics.clone(),
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
    let controllers = move |stop: CancellationToken| async move {
        futures::future::join_all(
            scopes
                .into_iter()
                .map(|scope| operator::controller::run(ctx.clone(), scope, stop.clone())),
        )
        .await;
    };
    let reconciling = match election {
        // The standby serves its probes and is ready: it is a healthy replica, waiting.
        Some((client, config)) => {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let result =
                    leader::while_leading(client, config, &metrics, stop.clone(), controllers)
                        .await;
                // A replica that lost the lease exits, and comes back as a standby.
                stop.cancel();
                result.map_err(anyhow::Error::from)
            })
        }
        None => {
            metrics.set_leader(true);
            let work = tokio::spawn(controllers(shutdown.clone()));
            tokio::spawn(async move { work.await.map_err(anyhow::Error::from) })
        }
    };
    // Bound last: once the probe port answers, the signal handlers are long installed.
    let listener = process::bind(probe_addr).await?;
    health.set_ready(true);
    process::serve(listener, process::probe_routes(health), shutdown).await?;
    // Reconciles in flight finish; a watch still backing off from an unreachable API server
    // would hold the controllers open, and abandoning it is safe (reconciles are idempotent).
    match tokio::time::timeout(Duration::from_secs(10), reconciling).await {
        Err(_) => tracing::warn!("controllers did not stop within 10s; exiting anyway"),
        Ok(joined) => joined??,
    }
    tracing::info!("operator stopped");
    Ok(())
}
