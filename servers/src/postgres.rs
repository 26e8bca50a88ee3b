//! A Postgres cluster in a folder: created with `initdb` on first use, started on a free port,
//! run as the `postgres` user when we are root (initdb refuses root).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::locate::debian_postgres_dirs;
use crate::{ServerError, locate_binary, log_tail};

/// The cluster's superuser (trust authentication on 127.0.0.1 only).
pub const SUPERUSER: &str = "postgres";

/// Whether the cluster syncs its writes to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync, synchronous commit and full page writes on: a folder that outlives the process.
    Durable,
    /// All three off: a throwaway cluster for tests, several times faster.
    Throwaway,
}

/// A running Postgres over `<dir>/data`. Dropping it asks for a fast shutdown; the folder
/// stays (it is the caller's), and the next start reuses it.
#[derive(Debug)]
pub struct Postgres {
    server: Child,
    port: u16,
}

impl Postgres {
    /// Starts a cluster over `dir`, creating it first if `dir` holds none.
    pub fn start(dir: &Path, durability: Durability) -> Result<Self, ServerError> {
        // The postmaster runs in its data directory, so a relative folder would point elsewhere.
        let dir = &std::path::absolute(dir)
            .map_err(ServerError::io(format!("resolve {}", dir.display())))?;
        let bin_dir = std::env::var_os("POSTGRES_BIN_DIR").map(PathBuf::from);
        let fallbacks = debian_postgres_dirs();
        let postgres = locate_binary("postgres", bin_dir.as_deref(), &fallbacks)?;
        let user = ServerUser::for_current_process()?;
        std::fs::create_dir_all(dir)
            .map_err(ServerError::io(format!("create {}", dir.display())))?;
        user.give(dir)?;
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            let initdb = locate_binary("initdb", bin_dir.as_deref(), &fallbacks)?;
            init(&user, &initdb, dir, &data)?;
        }
        // A free port can be taken by someone else between our probe and the server's bind;
        // a few attempts make that race harmless.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match start_server(&user, &postgres, dir, &data, port, durability) {
                Ok(server) => return Ok(Postgres { server, port }),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn init(user: &ServerUser, initdb: &Path, dir: &Path, data: &Path) -> Result<(), ServerError> {
    let init_log = dir.join("initdb.log");
    let output = user
        .command(initdb)
        .arg("--pgdata")
        .arg(data)
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
        .map_err(ServerError::io(format!("run {}", initdb.display())))?;
    if output.status.success() {
        return Ok(());
    }
    let _ = std::fs::write(&init_log, [output.stdout, output.stderr].concat());
    Err(ServerError::StartFailed {
        server: "initdb",
        reason: format!("it exited with {}", output.status),
        log: log_tail(&init_log, 20),
    })
}

fn start_server(
    user: &ServerUser,
    postgres: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    durability: Durability,
) -> Result<Child, ServerError> {
    let log = dir.join(format!("postgres-{port}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(ServerError::io("create the Postgres log"))?;
    user.give(&log)?;
    let mut command = user.command(postgres);
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"]);
    if durability == Durability::Throwaway {
        command.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    let mut server = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(ServerError::io(format!("start {}", postgres.display())))?;

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
            return Err(ServerError::StartFailed {
                server: "postgres",
                reason,
                log: log_tail(&log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ServerError::io("find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(ServerError::io("find a free port"))?
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

impl Drop for Postgres {
    fn drop(&mut self) {
        stop(&mut self.server);
    }
}

/// The user the server runs as: ourselves, or `postgres` when we are root.
#[derive(Debug)]
enum ServerUser {
    Current,
    Switch { uid: u32, gid: u32 },
}

impl ServerUser {
    fn for_current_process() -> Result<Self, ServerError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Ok(ServerUser::Current);
        }
        match nix::unistd::User::from_name(SUPERUSER) {
            Ok(Some(user)) => Ok(ServerUser::Switch {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            _ => Err(ServerError::MissingBinary {
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

    fn give(&self, path: &Path) -> Result<(), ServerError> {
        if let ServerUser::Switch { uid, gid } = self {
            nix::unistd::chown(path, Some((*uid).into()), Some((*gid).into())).map_err(
                |errno| ServerError::Io {
                    action: format!("hand {} to the postgres user", path.display()),
                    source: errno.into(),
                },
            )?;
        }
        Ok(())
    }
}
