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
    home: PathBuf,
    /// What starting it again takes.
    restart: Restart,
}

#[derive(Debug)]
struct Restart {
    user: ServerUser,
    binary: PathBuf,
    logs: PathBuf,
    data: PathBuf,
    durability: Durability,
}

impl Postgres {
    /// Starts a cluster over `dir`, creating it first if `dir` holds none. When the server
    /// runs as the `postgres` user and that user cannot reach `dir` (a private home or
    /// temporary folder), the cluster lives under [`REACHABLE_ROOT`] and `<dir>/data` links to
    /// it (ADR 0040).
    pub fn start(dir: &Path, durability: Durability) -> Result<Self, ServerError> {
        // The postmaster runs in its data directory, so a relative folder would point elsewhere.
        let dir = &std::path::absolute(dir)
            .map_err(ServerError::io(format!("resolve {}", dir.display())))?;
        let bin_dir = std::env::var_os("POSTGRES_BIN_DIR").map(PathBuf::from);
        let fallbacks = debian_postgres_dirs();
        let postgres = runnable(locate_binary("postgres", bin_dir.as_deref(), &fallbacks)?)?;
        let user = ServerUser::for_current_process()?;
        user.check_can_run(&postgres)?;
        std::fs::create_dir_all(dir)
            .map_err(ServerError::io(format!("create {}", dir.display())))?;
        user.give(dir)?;
        let data = cluster_data(&user, dir, &postgres)?;
        // The socket goes beside the data, where the server can reach it too.
        let home = data.parent().unwrap_or(dir).to_path_buf();
        if !data.join("PG_VERSION").exists() {
            let initdb = runnable(locate_binary("initdb", bin_dir.as_deref(), &fallbacks)?)?;
            init(&user, &initdb, dir, &data)?;
        }
        // A free port can be taken by someone else between our probe and the server's bind;
        // a few attempts make that race harmless.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let folders = Folders {
                logs: dir,
                sockets: &home,
                data: &data,
            };
            match start_server(&user, &postgres, &folders, port, durability) {
                Ok(server) => {
                    let restart = Restart {
                        user,
                        binary: postgres,
                        logs: dir.clone(),
                        data,
                        durability,
                    };
                    return Ok(Postgres {
                        server,
                        port,
                        home,
                        restart,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The folder that holds the cluster's `data` and its socket: the folder it was started
    /// over, or the reachable one under [`REACHABLE_ROOT`] it was moved to.
    pub fn cluster_dir(&self) -> &Path {
        &self.home
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server the way `pg_ctl stop -m immediate` does (SIGQUIT: every backend exits
    /// at once, nothing is checkpointed, the next start replays the WAL), stays away for
    /// `away`, then starts again over the same data on the same port and waits until it
    /// accepts connections.
    pub fn restart_immediately(&mut self, away: Duration) -> Result<(), ServerError> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(self.server.id() as i32);
        let _ = kill(pid, Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.server.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        std::thread::sleep(away);
        let restart = &self.restart;
        let folders = Folders {
            logs: &restart.logs,
            sockets: &self.home,
            data: &restart.data,
        };
        self.server = start_server(
            &restart.user,
            &restart.binary,
            &folders,
            self.port,
            restart.durability,
        )?;
        Ok(())
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

/// Where a cluster's files go: its log (ours), its socket and its data (the server's).
struct Folders<'a> {
    logs: &'a Path,
    sockets: &'a Path,
    data: &'a Path,
}

fn start_server(
    user: &ServerUser,
    postgres: &Path,
    folders: &Folders<'_>,
    port: u16,
    durability: Durability,
) -> Result<Child, ServerError> {
    // The log is opened by us and handed over as stderr, so it may live where the server
    // itself could not reach.
    let log = folders.logs.join(format!("postgres-{port}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(ServerError::io("create the Postgres log"))?;
    user.give(&log)?;
    let mut command = user.command(postgres);
    command
        .arg("-D")
        .arg(folders.data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!(
            "unix_socket_directories={}",
            folders.sockets.display()
        ))
        .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
        // Logical decoding, for the postgres source's change data capture (ADR 79).
        .args(["-c", "wal_level=logical", "-c", "max_replication_slots=32"]);
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

/// Where clusters live whose folder the `postgres` user cannot reach (ADR 0040): a system
/// folder for program state, reachable by every user, one postgres-owned folder per cluster.
pub const REACHABLE_ROOT: &str = "/var/lib/dreampipe/postgres";

/// The data directory of the cluster over `dir`: `<dir>/data` when the server can reach it,
/// else the one `<dir>/data` links to, made under [`REACHABLE_ROOT`] on first use.
fn cluster_data(user: &ServerUser, dir: &Path, postgres: &Path) -> Result<PathBuf, ServerError> {
    let link = dir.join("data");
    if let Ok(target) = std::fs::read_link(&link) {
        // A relative link is relative to the folder it lies in.
        let data = dir.join(target);
        if let Some(home) = data.parent().filter(|home| !home.exists()) {
            make_private_folder(user, home)?;
        }
        return Ok(data);
    }
    if user.can_enter(dir, postgres) {
        return Ok(link);
    }
    if link.exists() {
        return Err(ServerError::UnreachableCluster { data: link });
    }
    let home = Path::new(REACHABLE_ROOT).join(relocated_name(dir));
    // No link points here, so its state folder was removed: its checkpoints would not match
    // the fresh streams beside it, so it must not be reused.
    if home.exists() {
        std::fs::remove_dir_all(&home).map_err(ServerError::io(format!(
            "remove the stale cluster {}",
            home.display()
        )))?;
    }
    make_private_folder(user, &home)?;
    std::os::unix::fs::symlink(home.join("data"), &link).map_err(ServerError::io(format!(
        "link {} to the cluster in {}",
        link.display(),
        home.display()
    )))?;
    Ok(home.join("data"))
}

/// A postgres-owned folder only the server can read, below world-traversable parents.
fn make_private_folder(user: &ServerUser, home: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(home)
        .map_err(ServerError::io(format!("create {}", home.display())))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
        .map_err(ServerError::io(format!("make {} private", home.display())))?;
    user.give(home)
}

/// A readable, stable name for the cluster of `dir`: its last folder names and a hash of the
/// whole path (FNV-1a, stable across builds, unlike Rust's `DefaultHasher`).
fn relocated_name(dir: &Path) -> String {
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let words: String = dir
        .components()
        .rev()
        .take(3)
        .filter_map(|c| c.as_os_str().to_str())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let words = words.trim_matches('-');
    let words = &words[words.len().saturating_sub(40)..];
    format!("{words}-{hash:016x}")
}

/// The binary's real path: links in a private folder (`.tools/bin` of a private checkout)
/// would stop the `postgres` user, the file they point at does not.
fn runnable(binary: PathBuf) -> Result<PathBuf, ServerError> {
    std::fs::canonicalize(&binary).map_err(ServerError::io(format!("resolve {}", binary.display())))
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

    /// Fails with a clear error when the server's user cannot execute `binary`.
    fn check_can_run(&self, binary: &Path) -> Result<(), ServerError> {
        if let ServerUser::Current = self {
            return Ok(());
        }
        self.probe(binary, Path::new("/"))
            .map_err(|source| ServerError::UnreachableBinary {
                binary: binary.to_path_buf(),
                source,
            })
    }

    /// Whether the server's user can enter `dir`: `binary` (one it can run) is started there
    /// as that user, so every folder above, ACLs included, is checked by the kernel itself.
    fn can_enter(&self, dir: &Path, binary: &Path) -> bool {
        match self {
            ServerUser::Current => true,
            ServerUser::Switch { .. } => self.probe(binary, dir).is_ok(),
        }
    }

    fn probe(&self, binary: &Path, dir: &Path) -> std::io::Result<()> {
        // The child changes its user before its folder, so entering `dir` is checked as the
        // server's user.
        let status = self
            .command(binary)
            .arg("--version")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "`--version` exited with {status}"
            )))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocated_names_are_readable_and_differ_by_path() {
        let name = relocated_name(Path::new("/root/work/shop/.dreampipe/postgres"));
        assert!(name.starts_with("shop--dreampipe-postgres-"), "{name}");
        assert_eq!(
            name,
            relocated_name(Path::new("/root/work/shop/.dreampipe/postgres"))
        );
        assert_ne!(
            name,
            relocated_name(Path::new("/home/ada/shop/.dreampipe/postgres"))
        );
    }

    #[test]
    fn a_server_binary_linked_from_a_private_folder_runs_through_its_real_path() {
        use std::os::unix::fs::PermissionsExt;
        let postgres = locate_binary("postgres", None, &debian_postgres_dirs()).unwrap();
        let private = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap();
        let link = private.path().join("postgres");
        std::os::unix::fs::symlink(runnable(postgres).unwrap(), &link).unwrap();
        let user = ServerUser::for_current_process().unwrap();
        if matches!(user, ServerUser::Switch { .. }) {
            let error = user.check_can_run(&link).unwrap_err();
            assert!(
                error.to_string().contains("cannot run"),
                "{error}: the private link is refused with a reason"
            );
        }
        user.check_can_run(&runnable(link).unwrap()).unwrap();
    }
}
