//! Heartbeats (ADR 80): every [`EVERY`] each replica of a receiver, adapter or projector
//! publishes on core NATS who it is, whether it is ready, its resource's spec and its
//! `/v1/status` report. The console draws the live pipeline from them. Best effort: one that
//! cannot be sent is dropped (the next follows) and never changes the replica's readiness.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crds::report::{Heartbeat, RoleHeartbeat, heartbeat_subject};
use process::Health;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a replica reports; the console forgets one silent for three of these.
pub const EVERY: Duration = Duration::from_secs(2);

/// Who sends the heartbeats.
#[derive(Clone, Debug)]
pub struct Beacon {
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    pub replica: String,
    /// Sends the next heartbeat at once, rather than at the next period.
    nudge: Arc<Notify>,
}

impl Beacon {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, replica: String) -> Self {
        Beacon {
            namespace: namespace.into(),
            name: name.into(),
            replica,
            nudge: Arc::default(),
        }
    }

    /// Something that makes the next heartbeat go now: called on a change the console should
    /// see before the next period (a replica turning ready, a generation registered).
    pub fn nudger(&self) -> impl Fn() + Send + Sync + 'static {
        let nudge = self.nudge.clone();
        move || nudge.notify_one()
    }
}

/// Publishes a heartbeat now, every [`EVERY`] and when nudged, until `shutdown`; `role` gives
/// its role-specific part each time.
pub fn spawn<F, Fut>(
    client: async_nats::Client,
    beacon: Beacon,
    health: Arc<Health>,
    shutdown: CancellationToken,
    role: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RoleHeartbeat> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = beacon.nudge.notified() => tick.reset(),
            }
            let role = role().await;
            let subject = heartbeat_subject(&beacon.namespace, role.kind(), &beacon.name);
            let heartbeat = Heartbeat {
                namespace: beacon.namespace.clone(),
                name: beacon.name.clone(),
                replica: beacon.replica.clone(),
                ready: health.is_ready(),
                not_ready_because: health.not_ready_because(),
                every_ms: EVERY.as_millis() as u64,
                role,
            };
            let body = serde_json::to_vec(&heartbeat).expect("a heartbeat serialises");
            if let Err(error) = client.publish(subject, body.into()).await {
                tracing::debug!(%error, "heartbeat not sent");
            }
        }
    })
}

/// `report` if it answers within one heartbeat period without an error: a role whose
/// figures are unreadable (its server away) still says it is alive, without them.
pub async fn within_beat<T, E>(report: impl Future<Output = Result<T, E>>) -> Option<T> {
    tokio::time::timeout(EVERY, report).await.ok()?.ok()
}

/// This process's replica name where none is given: the host name (the pod's name on
/// Kubernetes) and the process id.
pub fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "replica".to_owned());
    format!("{host}-{}", std::process::id())
}
