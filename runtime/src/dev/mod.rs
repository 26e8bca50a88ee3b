//! `dreampipe dev <folder>`: every Entity, Projection (and Adapter) of a folder of YAML in one
//! process, against NATS and Postgres: the given ones, or servers it starts in a state folder
//! of its own and reuses on the next run. Prints the endpoints and a status table, starts a
//! Projection's new generation when its file changes, and stops everything on Ctrl-C.

mod backing;
pub mod settings;
mod status;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crds::ProjectionSpec;

use crate::auth::TokenArgs;
use crate::config::{ConfigError, Resources, name_of};
use crate::nats::NatsServers;
use crate::role::{ResourceArgs, Role, ServiceArgs};
use backing::{Backing, backing, redact};
use settings::{AdapterPlace, ProjectorPlace};

/// The analysts' role `dev` creates.
pub const READER_ROLE: &str = "dreampipe_reader";

/// Flags of `dreampipe dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of Entity, Adapter and Projection YAML (other documents are skipped).
    pub folder: PathBuf,
    /// Use this NATS server (or comma-separated cluster servers) instead of starting one.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<NatsServers>,
    /// Use this Postgres database (as a superuser) instead of starting a cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where started servers keep their data between runs.
    #[arg(long, env = "DREAMPIPE_STATE_DIR", default_value = ".dreampipe")]
    pub state_dir: PathBuf,
    /// Port of the query service; receivers and projectors take the ports after it.
    #[arg(long, env = "DREAMPIPE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Namespace of resources that do not name one.
    #[arg(long, env = "DREAMPIPE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Seconds between two status tables (0: none).
    #[arg(long, env = "DREAMPIPE_STATUS_EVERY", default_value_t = 10)]
    pub status_every: u64,
    /// Folder of the Secrets adapters reference: a SecretKeyRef {name, key} is the file
    /// `<dir>/<name>/<key>`.
    #[arg(
        long,
        env = "DREAMPIPE_SECRETS_DIR",
        default_value = ".dreampipe/secrets"
    )]
    pub secrets_dir: PathBuf,
    /// Where an in-cluster host an adapter's URL names runs locally, as NAME=HOST:PORT
    /// (e.g. crm-simulator=127.0.0.1:8090); repeatable.
    #[arg(long = "service", env = "DREAMPIPE_SERVICES", value_delimiter = ',', value_parser = parse_service)]
    pub services: Vec<(String, String)>,
}

fn parse_service(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, address)) if !name.is_empty() && !address.is_empty() => {
            Ok((name.to_owned(), address.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAME=HOST:PORT")),
    }
}

/// Why `dreampipe dev` could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] servers::ServerError),
    #[error("could not prepare the database")]
    Database(#[source] sqlx::Error),
    #[error("the {role} stopped, so dev stops too")]
    Role {
        role: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("could not write to the terminal")]
    Terminal(#[source] std::io::Error),
    #[error("could not write the adapters' local configuration to {path}")]
    AdapterConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What every role is started with: the token that stops it, and where it reports that it
/// stopped by itself with an error (dev then stops, rather than print endpoints that are dead).
struct Supervision {
    shutdown: CancellationToken,
    failed: tokio::sync::mpsc::UnboundedSender<RoleFailure>,
}

struct RoleFailure {
    /// The role and the name of what it ran.
    role: String,
    error: Box<dyn std::error::Error + Send + Sync>,
}

/// One running role.
struct Running {
    role: Role,
    name: String,
    port: u16,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs the folder until `shutdown`.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), DevError> {
    let Args {
        folder,
        nats_url,
        database_url,
        state_dir,
        port,
        namespace,
        status_every,
        secrets_dir,
        services,
    } = args;
    let config = vec![folder.clone()];
    let resources = Resources::load(&config, &namespace)?;
    let backing = backing(nats_url, database_url, &state_dir).await?;
    let mut out = std::io::stdout();
    let (failed, mut failures) = tokio::sync::mpsc::unbounded_channel();
    let supervision = Supervision {
        shutdown: shutdown.clone(),
        failed,
    };

    let mut roles = Vec::new();
    let mut next_port = port;
    let mut take_port = || {
        let taken = next_port;
        next_port += 1;
        taken
    };
    let query_port = take_port();
    roles.push(start_query(&backing, &namespace, query_port, &supervision));
    for entity in &resources.entities {
        roles.push(start_receiver(
            &config,
            entity,
            &backing,
            &namespace,
            take_port(),
            &supervision,
        ));
    }
    let mut files = file_times(&folder);
    let mut specs: BTreeMap<String, ProjectionSpec> = resources
        .projections
        .iter()
        .map(|p| (name_of(&p.metadata).to_owned(), p.spec.clone()))
        .collect();
    for projection in &resources.projections {
        roles.push(start_projector(
            &config,
            projection,
            &backing,
            &namespace,
            take_port(),
            &supervision,
        ));
    }
    let (adapters, suspended) = running_adapters(&resources.adapters);
    for adapter in adapters {
        let name = name_of(&adapter.metadata);
        let receiver_port = roles
            .iter()
            .find(|r| r.role == Role::Receiver && r.name == adapter.spec.entity)
            .map(|r| r.port)
            .expect("config validation resolved the adapter's entity");
        let local_config = local_adapter_config(&resources, adapter, &services, &state_dir)?;
        let adapter_port = take_port();
        let args = settings::adapter(
            adapter,
            ResourceArgs {
                config: vec![local_config],
                service: service(&namespace, &backing, adapter_port),
            },
            AdapterPlace {
                receiver_url: format!("http://127.0.0.1:{receiver_port}"),
                receiver_token_file: None,
                secrets_dir: secrets_dir.clone(),
            },
        );
        roles.push(spawn_role(
            Role::Adapter,
            name,
            adapter_port,
            &supervision,
            |stop| crate::adapter::run(args, stop),
        ));
    }

    writeln!(
        out,
        "DreamPipe dev: {} ({} entities, {} projections)",
        folder.display(),
        resources.entities.len(),
        resources.projections.len()
    )
    .map_err(DevError::Terminal)?;
    writeln!(out, "  NATS      {}", backing.nats_url).map_err(DevError::Terminal)?;
    writeln!(
        out,
        "  Postgres  {}  (analysts: {})",
        redact(&backing.writer_psql_url),
        backing.reader_psql_url
    )
    .map_err(DevError::Terminal)?;
    if let Some(cluster) = backing.moved_cluster(&state_dir) {
        // The postgres user could not enter the state folder (ADR 0040): say where data went.
        writeln!(out, "  Postgres data in {}", cluster.display()).map_err(DevError::Terminal)?;
    }
    for role in &roles {
        writeln!(
            out,
            "  {:<10} {:<24} http://127.0.0.1:{}",
            role.role, role.name, role.port
        )
        .map_err(DevError::Terminal)?;
    }
    for adapter in suspended {
        let name = name_of(&adapter.metadata);
        tracing::info!(adapter = name, "suspended (spec.suspend): not started");
        writeln!(out, "  {:<10} {name:<24} suspended", Role::Adapter)
            .map_err(DevError::Terminal)?;
    }
    out.flush().map_err(DevError::Terminal)?;

    let mut table = status::Table::default();
    let mut status_tick = tokio::time::interval(Duration::from_secs(status_every.max(1)));
    status_tick.tick().await;
    let mut watch_tick = tokio::time::interval(Duration::from_secs(1));
    let mut failure = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(failed) = failures.recv() => {
                failure = Some(failed);
                break;
            }
            _ = status_tick.tick(), if status_every > 0 => {
                let table = table.render(&roles.iter().map(|r| (r.role, r.name.as_str(), r.port)).collect::<Vec<_>>()).await;
                write!(out, "{table}").and_then(|()| out.flush()).map_err(DevError::Terminal)?;
            }
            _ = watch_tick.tick() => {
                let now = file_times(&folder);
                if now != files {
                    files = now;
                    restart_changed_projectors(&config, &namespace, &backing, &mut roles, &mut specs, &supervision).await;
                }
            }
        }
    }
    for role in roles {
        role.stop.cancel();
        let _ = role.task.await;
    }
    match failure {
        Some(RoleFailure { role, error }) => Err(DevError::Role {
            role,
            source: error,
        }),
        None => Ok(()),
    }
}

/// Restarts the projectors whose Projection changed: each starts the new generation, which
/// replaces the served one once it has caught up.
async fn restart_changed_projectors(
    config: &[PathBuf],
    namespace: &str,
    backing: &Backing,
    roles: &mut [Running],
    specs: &mut BTreeMap<String, ProjectionSpec>,
    supervision: &Supervision,
) {
    let resources = match Resources::load(config, namespace) {
        Ok(resources) => resources,
        Err(error) => {
            tracing::warn!(%error, "the changed folder is not valid; keeping what runs");
            return;
        }
    };
    for role in roles.iter_mut().filter(|r| r.role == Role::Projector) {
        let Some(projection) = resources
            .projections
            .iter()
            .find(|p| name_of(&p.metadata) == role.name)
        else {
            continue;
        };
        if specs.get(&role.name) == Some(&projection.spec) {
            continue;
        }
        tracing::info!(projection = %role.name, "definition changed: its projector starts the new generation");
        specs.insert(role.name.clone(), projection.spec.clone());
        role.stop.cancel();
        let _ = (&mut role.task).await;
        *role = start_projector(
            config,
            projection,
            backing,
            namespace,
            role.port,
            supervision,
        );
    }
}

fn listen(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The flags every role shares, for one listening on `port`.
fn service(namespace: &str, backing: &Backing, port: u16) -> ServiceArgs {
    ServiceArgs {
        namespace: namespace.to_owned(),
        nats_url: backing.nats_url.clone(),
        listen: listen(port),
    }
}

fn spawn_role<F, E>(
    role: Role,
    name: &str,
    port: u16,
    supervision: &Supervision,
    run: impl FnOnce(CancellationToken) -> F,
) -> Running
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let stop = supervision.shutdown.child_token();
    let future = run(stop.clone());
    let label = format!("{role} {name}");
    let failed = supervision.failed.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = future.await {
            tracing::error!(role = %label, error = %crate::error_chain(&error), "role stopped with an error");
            let _ = failed.send(RoleFailure {
                role: label,
                error: Box::new(error),
            });
        }
    });
    Running {
        role,
        name: name.to_owned(),
        port,
        stop,
        task,
    }
}

fn start_query(
    backing: &Backing,
    namespace: &str,
    port: u16,
    supervision: &Supervision,
) -> Running {
    // The console's Projection pages list dead letters, which the reader role may not read.
    let args = settings::query(
        service(namespace, backing, port),
        Some(backing.reader_url.clone()),
        Some(backing.writer_url.clone()),
    );
    spawn_role(
        Role::Query,
        "entities and views",
        port,
        supervision,
        |stop| crate::query::run(args, stop),
    )
}

fn start_receiver(
    config: &[PathBuf],
    entity: &crds::Entity,
    backing: &Backing,
    namespace: &str,
    port: u16,
    supervision: &Supervision,
) -> Running {
    let name = name_of(&entity.metadata);
    let resource = ResourceArgs {
        config: config.to_vec(),
        service: service(namespace, backing, port),
    };
    let args = settings::receiver(entity, resource, TokenArgs::default());
    spawn_role(Role::Receiver, name, port, supervision, |stop| {
        crate::receiver::run(args, stop)
    })
}

fn start_projector(
    config: &[PathBuf],
    projection: &crds::Projection,
    backing: &Backing,
    namespace: &str,
    port: u16,
    supervision: &Supervision,
) -> Running {
    let name = name_of(&projection.metadata);
    let resource = ResourceArgs {
        config: config.to_vec(),
        service: service(namespace, backing, port),
    };
    let place = ProjectorPlace {
        database_url: backing.writer_url.clone(),
        replica_id: Some(format!("dev-{name}")),
        reader_role: Some(READER_ROLE.to_owned()),
        // dev's reader is itself the login role analysts and the query service use.
        reader_members: Vec::new(),
    };
    let args = settings::projector(projection, resource, place);
    spawn_role(Role::Projector, name, port, supervision, |stop| {
        crate::projector::command::run(args, stop)
    })
}

/// The adapters to run and those `spec.suspend` keeps stopped, as the operator scales them
/// to 0 on a cluster (ADR 0053).
fn running_adapters(adapters: &[crds::Adapter]) -> (Vec<&crds::Adapter>, Vec<&crds::Adapter>) {
    adapters.iter().partition(|adapter| !adapter.spec.suspend)
}

/// The Adapter and its Entity as YAML for the local run, with the hosts of `services`
/// replaced in its HTTP source's URL (in-cluster Service names do not resolve locally).
fn local_adapter_config(
    resources: &Resources,
    adapter: &crds::Adapter,
    services: &[(String, String)],
    state_dir: &Path,
) -> Result<PathBuf, DevError> {
    let mut adapter = adapter.clone();
    if let Some(http) = adapter.spec.source.http.as_mut() {
        http.url = local_url(&http.url, services);
        if let Some(oauth2) = http.oauth2.as_mut() {
            oauth2.token_url = local_url(&oauth2.token_url, services);
        }
    }
    let entity = resources
        .entity(
            crate::config::namespace_of(&adapter.metadata),
            &adapter.spec.entity,
        )
        .expect("config validation resolved the adapter's entity");
    let dir = state_dir.join("config");
    let path = dir.join(format!("adapter-{}.yaml", name_of(&adapter.metadata)));
    let yaml = format!(
        "{}---\n{}",
        serde_yaml::to_string(entity).expect("resources serialise"),
        serde_yaml::to_string(&adapter).expect("resources serialise")
    );
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, yaml))
        .map_err(|source| DevError::AdapterConfig {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// `url` with its host (and port) replaced when `services` names it.
fn local_url(url: &str, services: &[(String, String)]) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.split(':').next().unwrap_or(authority);
    match services.iter().find(|(name, _)| name == host) {
        Some((_, address)) => format!("{scheme}://{address}{path}"),
        None => url.to_owned(),
    }
}

/// Modification times of the folder's YAML files.
fn file_times(folder: &Path) -> BTreeMap<PathBuf, SystemTime> {
    std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            matches!(
                e.path().extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml")
            )
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_hosts_in_adapter_urls_point_at_local_addresses() {
        let services = vec![("crm-simulator".to_owned(), "127.0.0.1:9000".to_owned())];
        assert_eq!(
            local_url("http://crm-simulator:8090/services/data?q=x", &services),
            "http://127.0.0.1:9000/services/data?q=x"
        );
        assert_eq!(
            local_url("http://crm-simulator/q", &services),
            "http://127.0.0.1:9000/q"
        );
        assert_eq!(
            local_url("https://other:8090/q", &services),
            "https://other:8090/q"
        );
        assert_eq!(
            parse_service("a=b:1"),
            Ok(("a".to_owned(), "b:1".to_owned()))
        );
        assert!(parse_service("nohost").is_err());
    }

    #[test]
    fn a_suspended_adapter_is_not_started() {
        let adapter = |name: &str, suspend: bool| -> crds::Adapter {
            serde_yaml::from_str(&format!(
                "apiVersion: dreampipe.io/v1alpha1\nkind: Adapter\nmetadata: {{name: {name}}}\n\
                 spec:\n  entity: customer\n  suspend: {suspend}\n  source: {{generator: {{rate: 1}}}}\n\
                 \x20 mapping: {{id: record.id}}\n"
            ))
            .unwrap()
        };
        let adapters = [adapter("a", false), adapter("b", true), adapter("c", false)];
        let (running, suspended) = running_adapters(&adapters);
        let names = |list: Vec<&crds::Adapter>| -> Vec<String> {
            list.iter()
                .map(|a| name_of(&a.metadata).to_owned())
                .collect()
        };
        assert_eq!(names(running), ["a", "c"]);
        assert_eq!(names(suspended), ["b"]);
    }
}
