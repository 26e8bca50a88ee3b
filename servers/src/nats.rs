//! `nats-server` with JetStream, storing into a folder: one server, or a cluster of several on
//! loopback. Either can be stopped, killed and started again over the same store and ports,
//! which is what the fault tests do to it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ServerError, locate_binary, log_tail};

/// How long a server may take to accept clients (and, in a cluster, to have JetStream current).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `nats-server` with JetStream, storing its streams in `<dir>/jetstream`. Dropping
/// it kills the server; the folder stays (it is the caller's).
///
/// The first start of a single server lets it pick a free port itself (`-p -1`, no race with
/// other processes); every later start ([`Nats::restart`]) reuses that port, so clients
/// reconnect to the address they know.
#[derive(Debug)]
pub struct Nats {
    binary: PathBuf,
    dir: PathBuf,
    /// Flags besides the ports, the store and the log: empty for a single server, the cluster
    /// settings for a node.
    extra: Vec<String>,
    client_port: Option<u16>,
    monitor_port: Option<u16>,
    url: String,
    child: Option<Child>,
}

impl Nats {
    /// Starts a single server over `dir` and waits until it accepts clients.
    pub fn start(dir: &Path) -> Result<Self, ServerError> {
        let mut server = Nats::prepare(dir, Vec::new(), None, None)?;
        server.spawn()?;
        Ok(server)
    }

    fn prepare(
        dir: &Path,
        extra: Vec<String>,
        client_port: Option<u16>,
        monitor_port: Option<u16>,
    ) -> Result<Self, ServerError> {
        let dir = std::path::absolute(dir)
            .map_err(ServerError::io(format!("resolve {}", dir.display())))?;
        let override_dir = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .and_then(|bin| bin.parent().map(PathBuf::from));
        let binary = locate_binary("nats-server", override_dir.as_deref(), &[])?;
        std::fs::create_dir_all(&dir)
            .map_err(ServerError::io(format!("create {}", dir.display())))?;
        Ok(Nats {
            binary,
            dir,
            extra,
            client_port,
            monitor_port,
            url: String::new(),
            child: None,
        })
    }

    fn log(&self) -> PathBuf {
        self.dir.join("nats.log")
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let port = |port: Option<u16>| port.map_or("-1".to_owned(), |port| port.to_string());
        let child = Command::new(&self.binary)
            .args(["--jetstream", "--addr", "127.0.0.1"])
            .args(["--port", &port(self.client_port)])
            .args(["--http_port", &port(self.monitor_port)])
            .args(&self.extra)
            .arg("--store_dir")
            .arg(self.dir.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .arg("--log")
            .arg(self.log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(ServerError::io(format!("start {}", self.binary.display())))?;
        let pid = child.id();
        self.child = Some(child);
        let ports = self.wait_for_ports(pid)?;
        self.client_port = Some(ports.client);
        self.monitor_port = Some(ports.monitor);
        self.url = format!("nats://127.0.0.1:{}", ports.client);
        Ok(())
    }

    /// Waits for the ports file the server writes once it listens, named after its pid.
    fn wait_for_ports(&mut self, pid: u32) -> Result<Ports, ServerError> {
        let ports_file = self.dir.join(format!("nats-server_{pid}.ports"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Some(ports) = Ports::parse(&text)
            {
                return Ok(ports);
            }
            self.check_alive(deadline, "no client port")?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An error when the server exited or `deadline` passed, naming `waiting_for`.
    fn check_alive(&mut self, deadline: Instant, waiting_for: &str) -> Result<(), ServerError> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.failed("it is not running".to_owned()));
        };
        let reason = match child.try_wait() {
            Ok(Some(status)) => format!("it exited with {status}"),
            Ok(None) if Instant::now() > deadline => {
                format!("{waiting_for} after {}s", START_TIMEOUT.as_secs())
            }
            Ok(None) => return Ok(()),
            Err(error) => error.to_string(),
        };
        Err(self.failed(reason))
    }

    fn failed(&self, reason: String) -> ServerError {
        ServerError::StartFailed {
            server: "nats-server",
            reason,
            log: log_tail(&self.log(), 20),
        }
    }

    /// Waits until the server's `/healthz` answers 200: it accepts clients and, in a cluster,
    /// its JetStream has caught up with the meta leader and every stream it holds.
    pub fn wait_until_healthy(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self
            .monitor_port
            .expect("a started server has a monitoring port");
        while http_status(port, "/healthz") != Some(200) {
            self.check_alive(deadline, "/healthz not 200")?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server process runs (it may have been stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server with SIGKILL, as a crashed node or a lost machine would go: nothing is
    /// flushed, no client is told. The store stays for [`Nats::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit (after 10 s, kills it).
    pub fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again over the same store, on the same ports, and waits until it
    /// accepts clients. A running server is killed first.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        // JetStream's file store survives a kill; a graceful stop buys nothing here.
        self.kill();
    }
}

/// A JetStream cluster of several `nats-server`s on loopback, each with its own store folder
/// (`<dir>/n<i>`), client port, cluster port and monitoring port, routed to one another.
/// Nodes can be stopped, killed and restarted one at a time; dropping the cluster kills all.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Nats>,
}

impl NatsCluster {
    /// The cluster's name, as servers report it.
    pub const NAME: &'static str = "dreampipe";

    /// Starts `size` nodes over `dir` and waits until every node is healthy (JetStream has a
    /// meta leader and each node is current with it). The 3×`size` ports are picked free
    /// before any node binds them, so another process can take one in between: a start that
    /// fails is tried again, twice, on fresh ports and empty store folders.
    pub fn start(dir: &Path, size: usize) -> Result<Self, ServerError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir, size) {
                Err(error) if attempt < 3 => {
                    attempt += 1;
                    for index in 0..size {
                        let _ = std::fs::remove_dir_all(dir.join(Self::node_name(index)));
                    }
                    eprintln!("nats cluster start failed, trying again on new ports: {error}");
                }
                done => return done,
            }
        }
    }

    fn start_once(dir: &Path, size: usize) -> Result<Self, ServerError> {
        let mut taken = std::collections::BTreeSet::new();
        let mut port = || loop {
            let port = free_port()?;
            if taken.insert(port) {
                return Ok::<u16, ServerError>(port);
            }
        };
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| Ok((port()?, port()?, port()?)))
            .collect::<Result<_, ServerError>>()?;
        let routes = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(size);
        for (index, &(client, cluster, monitor)) in ports.iter().enumerate() {
            let extra = vec![
                "--server_name".to_owned(),
                Self::node_name(index),
                "--cluster_name".to_owned(),
                Self::NAME.to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{cluster}"),
                "--routes".to_owned(),
                routes.clone(),
            ];
            let mut node = Nats::prepare(
                &dir.join(Self::node_name(index)),
                extra,
                Some(client),
                Some(monitor),
            )?;
            node.spawn()?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_until_healthy()?;
        }
        Ok(NatsCluster { nodes })
    }

    /// The server name of node `index` (`n0`, `n1`, ...), as stream infos name their leader.
    pub fn node_name(index: usize) -> String {
        format!("n{index}")
    }

    /// The index of the node with server name `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&index| Self::node_name(index) == name)
    }

    /// Every node's client URL, comma-separated, as clients take a server list.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Nats::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `index` alone.
    pub fn url_of(&self, index: usize) -> &str {
        self.nodes[index].url()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`, to stop, kill or restart.
    pub fn node(&mut self, index: usize) -> &mut Nats {
        &mut self.nodes[index]
    }
}

/// The ports a server reports in its ports file
/// (`{"nats": ["nats://127.0.0.1:port"], "monitoring": ["http://127.0.0.1:port"], ...}`).
struct Ports {
    client: u16,
    monitor: u16,
}

impl Ports {
    fn parse(ports_file: &str) -> Option<Ports> {
        let ports: serde_json::Value = serde_json::from_str(ports_file).ok()?;
        let port = |list: &str| -> Option<u16> {
            let url = ports.get(list)?.get(0)?.as_str()?;
            url.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
        };
        Some(Ports {
            client: port("nats")?,
            monitor: port("monitoring")?,
        })
    }
}

/// A port nothing listens on right now. Cluster nodes need their route ports before any of
/// them starts, so these cannot be left to the servers to pick.
fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(ServerError::io("find a free port on loopback"))
}

/// The status code of `GET path` on a monitoring port, or `None` when it does not answer.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::Ports;

    #[test]
    fn the_ports_file_gives_the_client_and_monitoring_ports() {
        let ports = Ports::parse(
            r#"{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"],"cluster":"nats://127.0.0.1:6222"}"#,
        )
        .expect("a ports file with both ports");
        assert_eq!((ports.client, ports.monitor), (4222, 8222));
        assert!(Ports::parse(r#"{"nats":["nats://127.0.0.1:4222"]}"#).is_none());
    }
}
