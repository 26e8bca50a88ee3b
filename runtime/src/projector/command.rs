//! `dreampipe projector`: the flags, and wiring the projector to its config, NATS, Postgres
//! and the HTTP endpoints.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use super::{Metrics, Options, Projector, ProjectorError, database, plan, status};
use crate::config::{ConfigError, PickError, Resources, namespace_of, pick};
use crate::role::{ResourceArgs, ServiceArgs};

/// Keeps one Projection's view (or subject) up to date.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ProjectorArgs {
    /// The config (the Projection and its Entity), namespace, NATS and the address of
    /// /healthz, /readyz, /metrics and /v1/status.
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// Name of the Projection to run, when the config holds several.
    #[arg(long, env = "DREAMPIPE_PROJECTION")]
    pub projection: Option<String>,
    /// Postgres URL of the database holding the views and the projector's bookkeeping.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// This replica's identity in partition leases (the pod name on Kubernetes; also read
    /// from DREAMPIPE_REPLICA_ID); defaults to hostname and process id.
    #[arg(long, env = "POD_NAME")]
    pub replica_id: Option<String>,
    /// The analysts' read-only Postgres role: granted SELECT on the stable view, nothing else.
    #[arg(long, env = "DREAMPIPE_READER_ROLE")]
    pub reader_role: Option<String>,
    /// Login roles made members of the reader role, comma-separated (the query service's
    /// role on Kubernetes): they read the namespace's stable views through it (ADR 61).
    #[arg(
        long,
        env = "DREAMPIPE_READER_MEMBERS",
        value_delimiter = ',',
        requires = "reader_role"
    )]
    pub reader_members: Vec<String>,
    /// Instead of projecting: drop the Projection's view, every generation's tables and its
    /// bookkeeping from Postgres, then exit (the operator's Job for `deletionPolicy: Delete`;
    /// stop the projector's replicas first, or they build their generation again).
    #[arg(long)]
    pub drop: bool,
}

/// Why the projector command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error("the config holds no Entity {entity:?} for the Projection")]
    NoEntity { entity: String },
    #[error("the reader role {0:?} is not a valid role name ([a-z_][a-z0-9_]{{0,62}})")]
    ReaderRole(String),
    #[error("invalid DATABASE_URL")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error(transparent)]
    Nats(#[from] crate::nats::ConnectError),
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Runs the projector until `shutdown`.
pub async fn run(args: ProjectorArgs, shutdown: CancellationToken) -> Result<(), CommandError> {
    let ProjectorArgs {
        resource:
            ResourceArgs {
                config,
                service:
                    ServiceArgs {
                        namespace,
                        nats_url,
                        listen,
                    },
            },
        projection,
        database_url,
        replica_id,
        reader_role,
        reader_members,
        drop,
    } = args;
    if let Some(role) = reader_role
        .iter()
        .chain(&reader_members)
        .find(|role| !crds::validate::is_sql_identifier(role))
    {
        return Err(CommandError::ReaderRole(role.clone()));
    }
    let resources = Resources::load(&config, &namespace)?;
    let projection = pick(&resources.projections, projection.as_deref())?;
    let entity = resources
        .entity(namespace_of(&projection.metadata), &projection.spec.entity)
        .ok_or_else(|| CommandError::NoEntity {
            entity: projection.spec.entity.clone(),
        })?;
    if drop {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database_url)
            .await
            .map_err(|source| database::DatabaseError::Query {
                action: "connect",
                source,
            })
            .map_err(|e| CommandError::Projector(ProjectorError::from(e)))?;
        let view = projection
            .spec
            .sink
            .postgres
            .as_ref()
            .map(|p| p.view.as_str());
        let schema =
            crate::sql::Schema::of_namespace(crate::config::namespace_of(&projection.metadata));
        database::drop_projection(&pool, &schema, &plan::projection_id(projection), view)
            .await
            .map_err(|e| CommandError::Projector(ProjectorError::from(e)))?;
        return Ok(());
    }
    let replica = replica_id
        .or_else(|| std::env::var("DREAMPIPE_REPLICA_ID").ok())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(crate::heartbeat::default_replica);

    // Connections are made lazily and retried, so the projector waits for Postgres and NATS
    // (not ready meanwhile) instead of crashing.
    let partitions = entity.spec.partitions;
    let pool = PgPoolOptions::new()
        .max_connections((partitions * 2 + 4).min(32))
        .connect_lazy(&database_url)
        .map_err(CommandError::DatabaseUrl)?;
    let client = crate::nats::connect(&nats_url).await?;

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let health = process::Health::new(registry);
    let dependencies = crate::reachability::Dependencies {
        nats: Some(client.clone()),
        postgres: Some(pool.clone()),
    };
    dependencies.spawn(Arc::clone(&health), shutdown.clone());
    let projector = Projector::new(
        projection,
        entity,
        replica,
        pool,
        client.clone(),
        metrics,
        Options {
            reader_role,
            reader_members,
            ..Options::default()
        },
    )?;
    let (beats, nudge) = {
        let source = Arc::new(projector.status_source());
        let spec = Box::new(projection.spec.clone());
        let beacon = crate::heartbeat::Beacon::new(
            namespace_of(&projection.metadata),
            crate::config::name_of(&projection.metadata),
            source.replica.clone(),
        );
        let nudge = beacon.nudger();
        let beats = crate::heartbeat::spawn(
            client.clone(),
            beacon,
            Arc::clone(&health),
            shutdown.clone(),
            move || {
                let (source, spec) = (source.clone(), spec.clone());
                async move {
                    crds::report::RoleHeartbeat::Projector {
                        spec,
                        report: crate::heartbeat::within_beat(source.report()).await,
                    }
                }
            },
        );
        (beats, nudge)
    };
    let router =
        process::probe_routes(Arc::clone(&health)).merge(status::routes(projector.status_source()));
    let listener = process::bind(listen).await.map_err(CommandError::Serve)?;
    let server = tokio::spawn(process::serve(listener, router, shutdown.clone()));
    // A replica turning ready has registered its generation: the console hears of it now.
    let ready = move |ready: bool| {
        health.set_ready(ready);
        nudge();
    };
    let result = projector.run(ready, shutdown.clone()).await;
    shutdown.cancel();
    beats.abort();
    match server.await {
        Ok(Err(error)) => return Err(CommandError::Serve(error)),
        Err(error) => tracing::error!(%error, "HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    Ok(result?)
}
