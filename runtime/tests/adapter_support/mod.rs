//! Shared pieces of the adapter tests: a receiver served on a real port over a real
//! nats-server, adapters started from YAML, and waiting on their figures.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use runtime::adapter::status::{AdapterReport, Stats};
use runtime::adapter::{Adapter, Args};
use runtime::auth::Tokens;
use runtime::receiver::metrics::Metrics;
use runtime::receiver::model::EntityModel;
use runtime::receiver::submit::Receiver;
use runtime::role::{ResourceArgs, ServiceArgs};
use runtime::store::jetstream::ensure_stream;
use runtime::store::{Event, Key, StreamNames};
use testbed::NatsServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ENTITY: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer, namespace: shop}
spec:
  key: /id
  partitions: 4
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string, minLength: 1}
"#;

pub fn names() -> StreamNames {
    StreamNames::new("shop", "customer", 4)
}

/// Serves `router` on a free local port until `shutdown`; answers its base URL.
pub async fn serve(router: axum::Router, shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(process::serve(listener, router, shutdown));
    url
}

/// The customer Entity's receiver over `nats`, served on a real port.
pub async fn receiver(nats: &NatsServer, shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    receiver_on(nats, listener, Tokens::default(), shutdown).await
}

/// The customer Entity's receiver over `nats`, served on `listener`.
pub async fn receiver_on(
    nats: &NatsServer,
    listener: tokio::net::TcpListener,
    tokens: Tokens,
    shutdown: CancellationToken,
) -> String {
    let entity: crds::Entity = serde_yaml::from_str(ENTITY).unwrap();
    let client = nats.client().await.unwrap();
    ensure_stream(&client, &names(), &entity.spec.stream)
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let receiver = Receiver::open(&client, EntityModel::new(&entity).unwrap(), metrics)
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let routes = runtime::receiver::http::routes(Arc::new(receiver), tokens);
    tokio::spawn(process::serve(listener, routes, shutdown));
    url
}

/// A running adapter: its figures, its address and a way to stop it.
pub struct Running {
    pub stats: Arc<Stats>,
    pub listen: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), runtime::adapter::AdapterError>>,
}

impl Running {
    pub fn status(&self) -> AdapterReport {
        self.stats.status()
    }

    /// Stops the adapter and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

impl Running {
    /// The adapter's `/metrics`, as Prometheus scrapes it.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.listen).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// The value of the sample `series` (name and labels exactly as scraped) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Writes the Entity and `adapter_yaml` into `dir` and starts the adapter.
pub async fn start_adapter(
    dir: &Path,
    adapter_yaml: &str,
    receiver_url: &str,
    nats_url: &str,
) -> Running {
    start_adapter_with_token(dir, adapter_yaml, receiver_url, nats_url, None).await
}

/// Like [`start_adapter`], with the receiver's token read from `token_file`.
pub async fn start_adapter_with_token(
    dir: &Path,
    adapter_yaml: &str,
    receiver_url: &str,
    nats_url: &str,
    token_file: Option<&Path>,
) -> Running {
    std::fs::write(dir.join("entity.yaml"), ENTITY).unwrap();
    std::fs::write(dir.join("adapter.yaml"), adapter_yaml).unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", testbed::child::free_port())
        .parse()
        .unwrap();
    let adapter = Adapter::prepare(Args {
        resource: ResourceArgs {
            config: vec![dir.join("entity.yaml"), dir.join("adapter.yaml")],
            service: ServiceArgs {
                namespace: "shop".to_owned(),
                nats_url: nats_url.parse().unwrap(),
                listen,
            },
        },
        adapter: None,
        receiver_url: receiver_url.to_owned(),
        receiver_token_file: token_file.map(Path::to_path_buf),
        secrets_dir: dir.join("secrets"),
    })
    .unwrap();
    let stats = adapter.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(adapter.run(shutdown.clone()));
    Running {
        stats,
        listen,
        shutdown,
        task,
    }
}

/// Waits until `done` holds of the adapter's status, failing after 20 s.
pub async fn wait_for(
    running: &Running,
    what: &str,
    done: impl Fn(&AdapterReport) -> bool,
) -> AdapterReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = running.status();
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event stored for `key`, in stream order.
pub async fn events_of(nats: &NatsServer, key: &str) -> Vec<Event> {
    let js = nats.jetstream().await.unwrap();
    let stream = js.get_stream(names().stream()).await.unwrap();
    let subject = names().subject(&Key::new(key).unwrap());
    let mut events = Vec::new();
    let mut sequence = 1;
    while let Ok(message) = stream
        .direct_get_next_for_subject(subject.as_str(), Some(sequence))
        .await
    {
        events.push(serde_json::from_slice(&message.payload).unwrap());
        sequence = message.sequence + 1;
    }
    events
}

/// Messages in the Entity's stream.
pub async fn stream_messages(nats: &NatsServer) -> u64 {
    let js = nats.jetstream().await.unwrap();
    let mut stream = js.get_stream(names().stream()).await.unwrap();
    stream.info().await.unwrap().state.messages
}
