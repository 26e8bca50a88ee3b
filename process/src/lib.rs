//! What every long-running DreamPipe process has: structured logs (`tracing`), one
//! cancellation token that SIGTERM or Ctrl-C cancels, and the `/healthz`, `/readyz` and
//! `/metrics` endpoints. The operator and every runtime role build on it; it knows nothing of
//! Kubernetes, NATS or Postgres.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod telemetry;
pub use telemetry::Telemetry;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// The delay before the next attempt after `failures` failures in a row: `base`, doubling per
/// failure, never more than `cap`.
pub fn backoff_delay(base: Duration, cap: Duration, failures: u32) -> Duration {
    base.saturating_mul(2_u32.saturating_pow(failures)).min(cap)
}

/// Exponential backoff for a retry loop: [`Backoff::wait`] after each failure, and
/// [`Backoff::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// The delay the next [`Backoff::wait`] sleeps.
    pub fn delay(&self) -> Duration {
        backoff_delay(self.base, self.cap, self.failures)
    }

    /// Sleeps the next delay and counts a failure; `false` (at once) when `shutdown` is
    /// cancelled first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.delay();
        self.failures = self.failures.saturating_add(1);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// An error and its sources on one line, `outer: inner: innermost`, for logs and statuses.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Installs the global `tracing` subscriber: logs to stderr, `RUST_LOG` filtering (default
/// `info`), and spans exported as traces of `service` when the OTLP variables ask for it
/// ([`telemetry`]). Keep the returned [`Telemetry`] until the process ends: it flushes the
/// last spans.
pub fn init_tracing(format: LogFormat, service: &str) -> Telemetry {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (provider, problem) = match telemetry::provider(service) {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let traces = provider.as_ref().map(telemetry::layer);
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    if result.is_err() {
        tracing::debug!("tracing subscriber already installed");
    }
    if let Some(error) = problem {
        tracing::error!(error = %error_chain(&error), "traces are not exported");
    } else if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    Telemetry::new(provider)
}

/// A token cancelled on the first SIGTERM or SIGINT: the one shutdown signal of the process.
/// The handlers are installed before this returns, so a signal arriving at any later instant
/// shuts down cleanly instead of killing the process. Call it within a tokio runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let cancel = token.clone();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                let signal = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal, "shutting down");
                cancel.cancel();
            });
        }
        // Without handlers the process can still be stopped by a kill; say so.
        _ => tracing::warn!("could not install signal handlers"),
    }
    token
}

/// Liveness, readiness and metrics of a process.
///
/// Ready means two things at once: the process said it is ([`Health::set_ready`]: started,
/// configured, serving) and every server it depends on is reachable now
/// ([`Health::set_reachable`]: NATS, Postgres). A dependency that is down makes `/readyz`
/// answer 503 naming it, so a load balancer stops sending requests that could only fail.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    /// The dependencies that are unreachable now, by name.
    unreachable: std::sync::Mutex<std::collections::BTreeSet<&'static str>>,
    registry: Registry,
}

impl Health {
    /// Health over a filled metrics registry; not ready until [`Health::set_ready`].
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Health {
            ready: AtomicBool::new(false),
            unreachable: std::sync::Mutex::default(),
            registry,
        })
    }

    /// Marks the process ready (or not) to serve traffic.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Records whether the server the process calls `dependency` (e.g. "nats") answers now.
    pub fn set_reachable(&self, dependency: &'static str, reachable: bool) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        if reachable {
            unreachable.remove(dependency);
        } else {
            unreachable.insert(dependency);
        }
    }

    /// Why the process is not ready, or `None` when it is.
    pub fn not_ready_because(&self) -> Option<String> {
        let unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        if !unreachable.is_empty() {
            let names: Vec<&str> = unreachable.iter().copied().collect();
            return Some(format!("unreachable: {}", names.join(", ")));
        }
        (!self.ready.load(Ordering::Acquire)).then(|| "starting".to_owned())
    }

    /// Whether the process said it is ready and every dependency is reachable.
    pub fn is_ready(&self) -> bool {
        self.not_ready_because().is_none()
    }
}

/// `/healthz` (the process answers), `/readyz` (503 until ready) and `/metrics` (Prometheus text).
pub fn probe_routes(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    match health.not_ready_because() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &health.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Binds `address`, naming it in the error when that fails.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot listen on {address}: {error}"))
    })
}

/// How long a client may take to send what it started: a connection that stalls is closed
/// instead of holding a task and a socket forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadTimeouts {
    /// From the first byte of a request to the end of its headers.
    pub headers: Duration,
    /// Between two chunks of a request body (a handler reading it sees an error).
    pub body_idle: Duration,
}

impl Default for ReadTimeouts {
    fn default() -> Self {
        ReadTimeouts {
            headers: Duration::from_secs(10),
            body_idle: Duration::from_secs(30),
        }
    }
}

/// Serves `router` until `shutdown` is cancelled, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ReadTimeouts::default()).await
}

/// [`serve`] with chosen read timeouts. HTTP/1.1 only, as the probes and clients speak.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    timeouts: ReadTimeouts,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "listening");
    }
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.headers);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let body_idle = timeouts.body_idle;
        let service = hyper::service::service_fn(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let request = request.map(|body| {
                    axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_idle, body))
                });
                tower::ServiceExt::oneshot(router.clone(), request)
            },
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let delays: Vec<u128> = (0..6)
            .map(|n| {
                backoff_delay(Duration::from_millis(100), Duration::from_secs(1), n).as_millis()
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn a_backoff_wait_grows_resets_and_stops_at_shutdown() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(10));
        let shutdown = CancellationToken::new();
        assert!(backoff.wait(&shutdown).await);
        assert_eq!(backoff.delay(), Duration::from_millis(2));
        backoff.reset();
        assert_eq!(backoff.delay(), Duration::from_millis(1));
        shutdown.cancel();
        assert!(!backoff.wait(&shutdown).await, "a cancelled wait says so");
    }

    #[tokio::test]
    async fn readyz_answers_503_until_the_process_is_ready() {
        let health = Health::new(Registry::default());
        assert_eq!(
            get_path(probe_routes(health.clone()), "/healthz").await.0,
            StatusCode::OK
        );
        assert_eq!(
            get_path(probe_routes(health.clone()), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_ready(true);
        assert_eq!(
            get_path(probe_routes(health), "/readyz").await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn readyz_answers_503_naming_the_servers_that_are_away() {
        let health = Health::new(Registry::default());
        health.set_ready(true);
        health.set_reachable("nats", false);
        health.set_reachable("postgres", false);
        assert_eq!(
            get_path(probe_routes(health.clone()), "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: unreachable: nats, postgres".to_owned()
            )
        );
        health.set_reachable("nats", true);
        assert_eq!(
            get_path(probe_routes(health.clone()), "/readyz").await.1,
            "not ready: unreachable: postgres"
        );
        health.set_reachable("postgres", true);
        assert_eq!(
            get_path(probe_routes(health), "/readyz").await.0,
            StatusCode::OK,
            "ready again once every server is back"
        );
    }

    /// Serves `router` with short read timeouts; returns its address and its stop token.
    async fn impatient_server(router: Router) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let timeouts = ReadTimeouts {
            headers: Duration::from_millis(300),
            body_idle: Duration::from_millis(300),
        };
        tokio::spawn(serve_with(listener, router, shutdown.clone(), timeouts));
        (address, shutdown)
    }

    /// Sends `start` and reads until the server closes; `None` if it is still open after 10 s.
    async fn answer_after_stalling(address: std::net::SocketAddr, start: &[u8]) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(start).await.unwrap();
        let mut answer = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await {
            Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn a_connection_that_stalls_mid_headers_is_closed() {
        let (address, shutdown) =
            impatient_server(probe_routes(Health::new(Registry::default()))).await;
        let answer = answer_after_stalling(address, b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await;
        assert!(answer.is_some(), "the connection is still open");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_connection_that_stalls_mid_body_is_answered_and_closed() {
        let router = Router::new().route(
            "/upload",
            axum::routing::post(|body: Body| async move {
                match axum::body::to_bytes(body, 1024).await {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }),
        );
        let (address, shutdown) = impatient_server(router).await;
        let answer = answer_after_stalling(
            address,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b",
        )
        .await
        .expect("the connection is still open");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn metrics_shows_registered_counters() {
        let mut registry = Registry::default();
        let submissions = Counter::<u64>::default();
        registry.register("submissions", "Submissions received", submissions.clone());
        submissions.inc_by(3);
        let (status, text) = get_path(probe_routes(Health::new(registry)), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("submissions_total 3"), "{text}");
    }
}
