//! A throwaway `nats-server` with JetStream, and a throwaway JetStream cluster.

use servers::{Nats, NatsCluster as Nodes};
use tempfile::TempDir;

use crate::TestbedError;

/// A running `nats-server` with JetStream, on a free port, storing into a temporary directory.
/// Dropping it kills the server and removes the directory.
#[derive(Debug)]
pub struct NatsServer {
    server: Nats,
    // Declared last so the directory is removed after the server is stopped.
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients.
    pub async fn start() -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("dreampipe-nats-")
            .tempdir()
            .map_err(TestbedError::io("create a temp dir for nats-server"))?;
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || Nats::start(&path))
            .await
            .expect("starting nats-server does not panic")?;
        Ok(NatsServer { server, _dir: dir })
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client, TestbedError> {
        async_nats::connect(self.url())
            .await
            .map_err(|source| TestbedError::NatsConnect {
                url: self.url().to_owned(),
                source,
            })
    }

    /// A JetStream context over a new client connection.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, TestbedError> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// Kills the server with SIGKILL (a crash: nothing flushed, no client told).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again over the same store and port (killing it first if it runs) and
    /// waits until it is healthy. Blocks for the moment that takes.
    pub fn restart(&mut self) -> Result<(), TestbedError> {
        self.server.restart()?;
        self.server.wait_until_healthy()?;
        Ok(())
    }
}

/// A JetStream cluster of `size` nodes on loopback, each on free ports with a store in one
/// temporary directory. Any node can be stopped, killed and restarted; dropping the cluster
/// kills every node and removes the directory.
#[derive(Debug)]
pub struct NatsCluster {
    cluster: Nodes,
    // Declared last so the directory is removed after the servers are stopped.
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts the nodes and waits until each is healthy (a meta leader elected, all current).
    pub async fn start(size: usize) -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("dreampipe-nats-cluster-")
            .tempdir()
            .map_err(TestbedError::io("create a temp dir for a nats cluster"))?;
        let path = dir.path().to_path_buf();
        let cluster = tokio::task::spawn_blocking(move || Nodes::start(&path, size))
            .await
            .expect("starting a nats cluster does not panic")?;
        Ok(NatsCluster { cluster, _dir: dir })
    }

    /// Every node's client URL, comma-separated (what `--nats-url` takes).
    pub fn urls(&self) -> String {
        self.cluster.urls()
    }

    /// A new client connection that knows every node, so it fails over when one goes.
    pub async fn client(&self) -> Result<async_nats::Client, TestbedError> {
        let urls = self.urls();
        let addresses: Vec<async_nats::ServerAddr> = urls
            .split(',')
            .map(|url| url.parse().expect("the cluster's own URLs parse"))
            .collect();
        async_nats::ConnectOptions::new()
            .connect(addresses)
            .await
            .map_err(|source| TestbedError::NatsConnect { url: urls, source })
    }

    /// A new client connection to node `index` first (it learns the others from it), so
    /// requests it sends are served where that node prefers: by itself, when it can.
    pub async fn client_of(&self, index: usize) -> Result<async_nats::Client, TestbedError> {
        let url = self.cluster.url_of(index).to_owned();
        async_nats::ConnectOptions::new()
            .connect(url.as_str())
            .await
            .map_err(|source| TestbedError::NatsConnect { url, source })
    }

    /// A JetStream context over a new client connection to the cluster.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, TestbedError> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// The index of the node that leads `stream` now, as the stream's info reports it.
    pub async fn leader_of(
        &self,
        jetstream: &async_nats::jetstream::Context,
        stream: &str,
    ) -> Option<usize> {
        let mut stream = jetstream.get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        let leader = info.cluster.as_ref()?.leader.as_deref()?;
        self.cluster.index_of(leader)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.cluster.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.cluster.is_empty()
    }

    /// Kills node `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        self.cluster.node(index).kill();
    }

    /// Stops node `index` with SIGTERM.
    pub fn stop(&mut self, index: usize) {
        self.cluster.node(index).stop();
    }

    /// Starts node `index` again over its store and ports and waits until it has caught up.
    /// Blocks for the moment that takes.
    pub fn restart(&mut self, index: usize) -> Result<(), TestbedError> {
        let node = self.cluster.node(index);
        node.restart()?;
        node.wait_until_healthy()?;
        Ok(())
    }
}
