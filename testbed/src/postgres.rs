//! Throwaway Postgres: one cluster per test process (made with `initdb`, started on a free
//! port), and a fresh database per test. With `DATABASE_URL` set, the databases are made on
//! that server instead and dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tempfile::TempDir;

use servers::{Durability, Postgres, SUPERUSER};

use crate::TestbedError;

/// A fresh, empty database for one test. Dropping it drops the database (on a `DATABASE_URL`
/// server) or releases the throwaway cluster, which stops when its last database is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    options: PgConnectOptions,
    name: String,
    owner: Owner,
}

#[derive(Debug)]
enum Owner {
    Cluster(#[allow(dead_code)] Arc<Cluster>),
    /// A cluster of this database's own, which a test may restart.
    Private(Box<Cluster>),
    External {
        admin: Box<PgConnectOptions>,
    },
}

impl TestDatabase {
    /// Creates a new database on the `DATABASE_URL` server, or on this process's throwaway cluster.
    pub async fn create() -> Result<Self, TestbedError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (admin, owner) = match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let admin: PgConnectOptions =
                    url.parse().map_err(|source| TestbedError::Postgres {
                        action: "parse DATABASE_URL".to_owned(),
                        source,
                    })?;
                (
                    admin.clone(),
                    Owner::External {
                        admin: Box::new(admin),
                    },
                )
            }
            Err(_) => {
                let cluster = Cluster::shared().await?;
                (cluster.admin_options(), Owner::Cluster(cluster))
            }
        };
        TestDatabase::create_on(admin, name, owner).await
    }

    /// A database on a throwaway cluster of its own, for a test that restarts the server
    /// ([`TestDatabase::restart_server_immediately`]) without disturbing any other test.
    pub async fn on_private_server() -> Result<Self, TestbedError> {
        let cluster = Cluster::start().await?;
        let admin = cluster.admin_options();
        let owner = Owner::Private(Box::new(cluster));
        TestDatabase::create_on(admin, "private".to_owned(), owner).await
    }

    /// Creates database `name` through `admin`, on the server `owner` keeps.
    async fn create_on(
        admin: PgConnectOptions,
        name: String,
        owner: Owner,
    ) -> Result<Self, TestbedError> {
        let mut connection = connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut connection)
            .await
            .map_err(|source| TestbedError::Postgres {
                action: format!("create database {name}"),
                source,
            })?;
        let _ = connection.close().await;
        Ok(TestDatabase {
            options: admin.database(&name),
            name,
            owner,
        })
    }

    /// Restarts this database's private server as `pg_ctl restart -m immediate` would (every
    /// connection cut, crash recovery on start, same port), after staying away for `away`.
    /// Blocks until it accepts connections again.
    ///
    /// # Panics
    /// When the database is not on a private server (see [`TestDatabase::on_private_server`]).
    pub fn restart_server_immediately(
        &mut self,
        away: std::time::Duration,
    ) -> Result<(), TestbedError> {
        let Owner::Private(cluster) = &mut self.owner else {
            panic!("only a database on a private server can have its server restarted");
        };
        cluster.server.restart_immediately(away)?;
        Ok(())
    }

    /// Connection options of this database (as the superuser).
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A `postgres://` URL of this database, for code that takes a URL.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small pool whose sessions resolve unqualified names in `schema` first (a
    /// namespace's `dp_<namespace>`), for tests that read what a projector wrote there.
    pub async fn pool_in_schema(&self, schema: &str) -> Result<PgPool, TestbedError> {
        PgPoolOptions::new()
            .max_connections(8)
            .connect_with(self.options.clone().options([("search_path", schema)]))
            .await
            .map_err(|source| TestbedError::Postgres {
                action: format!("connect to database {} in schema {schema}", self.name),
                source,
            })
    }

    /// A small connection pool to this database.
    pub async fn pool(&self) -> Result<PgPool, TestbedError> {
        PgPoolOptions::new()
            .max_connections(8)
            .connect_with(self.options.clone())
            .await
            .map_err(|source| TestbedError::Postgres {
                action: format!("connect to database {}", self.name),
                source,
            })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Owner::External { admin } = &self.owner else {
            return; // the throwaway cluster goes away with its last database
        };
        // Drop may run inside an async test, so the clean-up gets a thread and runtime of its own.
        let admin = (**admin).clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = connect(&admin).await.map_err(std::io::Error::other)?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "drop database if exists {name} with (force)"
                )))
                .execute(&mut connection)
                .await
                .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        });
        if let Ok(Err(error)) = cleanup.join() {
            tracing::warn!(database = %self.name, %error, "could not drop test database");
        }
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, TestbedError> {
    options
        .connect()
        .await
        .map_err(|source| TestbedError::Postgres {
            action: "connect as the admin user".to_owned(),
            source,
        })
}

/// A throwaway Postgres cluster in a temporary directory, stopped and removed when the last
/// `Arc` is dropped.
#[derive(Debug)]
struct Cluster {
    server: Postgres,
    // Declared after the server so both folders are removed once it has stopped.
    _moved: Option<RemoveOnDrop>,
    _dir: TempDir,
}

/// A cluster folder outside the temporary one (moved there because the `postgres` user cannot
/// reach a private `TMPDIR`, ADR 0040), removed with the cluster.
#[derive(Debug)]
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(folder = %self.0.display(), %error, "could not remove the test cluster");
        }
    }
}

impl Cluster {
    /// This process's cluster, started on first use and shared while any test holds it.
    async fn shared() -> Result<Arc<Cluster>, TestbedError> {
        static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
        static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _starting = STARTING.lock().await;
        if let Some(cluster) = SHARED.lock().expect("cluster lock").upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(Cluster::start().await?);
        *SHARED.lock().expect("cluster lock") = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// A new cluster in a temporary directory of its own.
    async fn start() -> Result<Cluster, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("dreampipe-postgres-")
            .tempdir()
            .map_err(TestbedError::io("create a temp dir for Postgres"))?;
        let path = dir.path().to_path_buf();
        let server =
            tokio::task::spawn_blocking(move || Postgres::start(&path, Durability::Throwaway))
                .await
                .expect("starting Postgres does not panic")?;
        let moved = (!server.cluster_dir().starts_with(dir.path()))
            .then(|| RemoveOnDrop(server.cluster_dir().to_path_buf()));
        Ok(Cluster {
            server,
            _moved: moved,
            _dir: dir,
        })
    }

    fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.server.port())
            .username(SUPERUSER)
            .database("postgres")
    }
}
