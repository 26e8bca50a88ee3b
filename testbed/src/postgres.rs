//! Throwaway Postgres: one cluster per test process (made with `initdb`, started on a free
//! port), and a fresh database per test. With `DATABASE_URL` set, the databases are made on
//! that server instead and dropped when the test ends.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tempfile::TempDir;

use crate::locate::debian_postgres_dirs;
use crate::{TestbedError, locate_binary, log_tail};

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
    External { admin: Box<PgConnectOptions> },
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

/// A Postgres cluster in a temporary directory, run as the `postgres` user when we are root
/// (initdb refuses root). Stopped and removed when the last `Arc` is dropped.
#[derive(Debug)]
struct Cluster {
    server: Child,
    port: u16,
    dir: TempDir,
}

const SUPERUSER: &str = "postgres";

impl Cluster {
    /// This process's cluster, started on first use and shared while any test holds it.
    async fn shared() -> Result<Arc<Cluster>, TestbedError> {
        static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
        static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _starting = STARTING.lock().await;
        if let Some(cluster) = SHARED.lock().expect("cluster lock").upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(
            tokio::task::spawn_blocking(Cluster::start)
                .await
                .expect("cluster start does not panic")?,
        );
        *SHARED.lock().expect("cluster lock") = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    fn start() -> Result<Cluster, TestbedError> {
        let bin_dir = std::env::var_os("POSTGRES_BIN_DIR").map(PathBuf::from);
        let fallbacks = debian_postgres_dirs();
        let initdb = locate_binary("initdb", bin_dir.as_deref(), &fallbacks)?;
        let postgres = locate_binary("postgres", bin_dir.as_deref(), &fallbacks)?;
        let user = ServerUser::for_current_process()?;

        let dir = tempfile::Builder::new()
            .prefix("dreampipe-postgres-")
            .tempdir()
            .map_err(TestbedError::io("create a temp dir for Postgres"))?;
        user.give(dir.path())?;
        let data = dir.path().join("data");
        let init_log = dir.path().join("initdb.log");
        let output = user
            .command(&initdb)
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
            ])
            .args(["--locale", "C", "--no-sync"])
            .output()
            .map_err(TestbedError::io(format!("run {}", initdb.display())))?;
        if !output.status.success() {
            let _ = std::fs::write(&init_log, [output.stdout, output.stderr].concat());
            return Err(TestbedError::StartFailed {
                server: "initdb",
                reason: format!("it exited with {}", output.status),
                log: log_tail(&init_log, 20),
            });
        }

        // A free port can be taken by someone else between our probe and the server's bind;
        // a few attempts make that race harmless.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match start_server(&user, &postgres, dir.path(), &data, port) {
                Ok(server) => return Ok(Cluster { server, port, dir }),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .database("postgres")
    }
}

fn start_server(
    user: &ServerUser,
    postgres: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
) -> Result<Child, TestbedError> {
    let log = dir.join(format!("postgres-{port}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(TestbedError::io("create the Postgres log"))?;
    user.give(&log)?;
    let mut server = user
        .command(postgres)
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // Durability is not what these tests measure; speed is welcome.
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(TestbedError::io(format!("start {}", postgres.display())))?;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("ready to accept connections"))
        {
            return Ok(server);
        }
        let reason = match server.try_wait() {
            Ok(Some(status)) => Some(format!("it exited with {status}")),
            Ok(None) if Instant::now() > deadline => Some("not ready after 30s".to_owned()),
            Ok(None) => None,
            Err(error) => Some(error.to_string()),
        };
        if let Some(reason) = reason {
            stop(&mut server);
            return Err(TestbedError::StartFailed {
                server: "postgres",
                reason,
                log: log_tail(&log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> Result<u16, TestbedError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(TestbedError::io("find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(TestbedError::io("find a free port"))?
        .port();
    Ok(port)
}

/// Asks the postmaster for a fast shutdown (SIGINT) and waits for it; kills it if it lingers.
fn stop(server: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(server.id() as i32);
    if kill(pid, Signal::SIGINT).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(server.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop(&mut self.server);
        // The TempDir field then removes the data directory.
        let _ = &self.dir;
    }
}

/// The user the server runs as: ourselves, or `postgres` when we are root.
#[derive(Debug)]
enum ServerUser {
    Current,
    Switch { uid: u32, gid: u32 },
}

impl ServerUser {
    fn for_current_process() -> Result<Self, TestbedError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Ok(ServerUser::Current);
        }
        match nix::unistd::User::from_name(SUPERUSER) {
            Ok(Some(user)) => Ok(ServerUser::Switch {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            _ => Err(TestbedError::MissingBinary {
                name: "the postgres system user".to_owned(),
                looked: "/etc/passwd".to_owned(),
                hint: "initdb refuses to run as root; run scripts/install-deps, which creates it",
            }),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if let ServerUser::Switch { uid, gid } = self {
            command.uid(*uid).gid(*gid);
        }
        command
    }

    fn give(&self, path: &Path) -> Result<(), TestbedError> {
        if let ServerUser::Switch { uid, gid } = self {
            nix::unistd::chown(path, Some((*uid).into()), Some((*gid).into())).map_err(
                |errno| TestbedError::Io {
                    action: format!("hand {} to the postgres user", path.display()),
                    source: errno.into(),
                },
            )?;
        }
        Ok(())
    }
}
