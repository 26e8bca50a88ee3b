//! The servers `dev` runs on: the given NATS and Postgres, or its own in the state folder,
//! with the `dreampipe` database and the analysts' role made when missing.

use std::path::Path;

use sqlx::{ConnectOptions, Connection};

use super::{DevError, READER_ROLE};
use crate::nats::NatsServers;

/// The analysts' password, and the database `dev` makes on a cluster of its own.
const READER_PASSWORD: &str = "dreampipe";
const DATABASE: &str = "dreampipe";

/// The servers `dev` uses, and the URLs the roles get.
pub(super) struct Backing {
    pub(super) nats_url: NatsServers,
    pub(super) writer_url: String,
    pub(super) reader_url: String,
    // The same two as psql takes them, for people.
    pub(super) writer_psql_url: String,
    pub(super) reader_psql_url: String,
    // Kept alive for the run; dropped (stopped) last.
    _nats: Option<servers::Nats>,
    pub(super) postgres: Option<servers::Postgres>,
}

impl Backing {
    /// Where the started cluster lives when it is not inside the state folder.
    pub(super) fn moved_cluster(&self, state_dir: &Path) -> Option<&Path> {
        let cluster = self.postgres.as_ref()?.cluster_dir();
        let state_dir = std::path::absolute(state_dir).ok()?;
        (!cluster.starts_with(state_dir)).then_some(cluster)
    }
}

/// The given servers, or local ones in `state_dir` (started now, reused from the last run).
pub(super) async fn backing(
    nats_url: Option<NatsServers>,
    database_url: Option<String>,
    state_dir: &Path,
) -> Result<Backing, DevError> {
    let (nats_url, nats) = match nats_url {
        Some(url) => (url, None),
        None => {
            let dir = state_dir.join("nats");
            let nats = tokio::task::spawn_blocking(move || servers::Nats::start(&dir))
                .await
                .expect("starting nats-server does not panic")?;
            let url = nats
                .url()
                .parse()
                .expect("a local nats-server's URL is a NATS URL");
            (url, Some(nats))
        }
    };
    let (admin, postgres) = match database_url {
        Some(url) => (url.parse().map_err(DevError::Database)?, None),
        None => {
            let dir = state_dir.join("postgres");
            let postgres = tokio::task::spawn_blocking(move || {
                servers::Postgres::start(&dir, servers::Durability::Durable)
            })
            .await
            .expect("starting Postgres does not panic")?;
            let admin = sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(postgres.port())
                .username(servers::SUPERUSER)
                .database("postgres");
            (admin, Some(postgres))
        }
    };
    let writer = prepare_database(&admin, postgres.is_some()).await?;
    let reader = writer
        .clone()
        .username(READER_ROLE)
        .password(READER_PASSWORD);
    Ok(Backing {
        nats_url,
        writer_url: writer.to_url_lossy().to_string(),
        reader_url: reader.to_url_lossy().to_string(),
        writer_psql_url: psql_url(&writer),
        reader_psql_url: psql_url(&reader),
        _nats: nats,
        postgres,
    })
}

/// Creates the `dreampipe` database (on a cluster of our own) and the analysts' role when
/// missing; returns the writer's connection options.
async fn prepare_database(
    admin: &sqlx::postgres::PgConnectOptions,
    own_cluster: bool,
) -> Result<sqlx::postgres::PgConnectOptions, DevError> {
    let mut connection = admin.connect().await.map_err(DevError::Database)?;
    let writer = if own_cluster {
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut connection)
                .await
                .map_err(DevError::Database)?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {DATABASE}")))
                .execute(&mut connection)
                .await
                .map_err(DevError::Database)?;
        }
        admin.clone().database(DATABASE)
    } else {
        admin.clone()
    };
    let role_exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
            .bind(READER_ROLE)
            .fetch_one(&mut connection)
            .await
            .map_err(DevError::Database)?;
    if !role_exists {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create role {READER_ROLE} login password '{READER_PASSWORD}'"
        )))
        .execute(&mut connection)
        .await
        .map_err(DevError::Database)?;
    }
    let _ = connection.close().await;
    Ok(writer)
}

/// The connection as a URL psql accepts: sqlx adds parameters of its own (such as
/// `statement-cache-capacity`) that libpq refuses, so only libpq's are kept.
fn psql_url(options: &sqlx::postgres::PgConnectOptions) -> String {
    const LIBPQ_PARAMETERS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let mut url = options.to_url_lossy();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| LIBPQ_PARAMETERS.contains(&name.as_ref()))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    url.to_string()
}

/// A URL without its password.
pub(super) fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        rest.split_once('@')
            .map(|(user, host)| (scheme, user, host))
    }) {
        Some((scheme, user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_postgres_urls_carry_only_parameters_psql_knows() {
        let options: sqlx::postgres::PgConnectOptions =
            "postgres://reader:pw@127.0.0.1:5433/dreampipe?sslmode=disable&application_name=x"
                .parse()
                .unwrap();
        assert_eq!(
            psql_url(&options),
            "postgres://reader:pw@127.0.0.1:5433/dreampipe?sslmode=disable"
        );
    }

    #[test]
    fn redacted_urls_keep_the_user_and_drop_the_password() {
        assert_eq!(
            redact("postgres://reader:secret@127.0.0.1:5432/db"),
            "postgres://reader@127.0.0.1:5432/db"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
