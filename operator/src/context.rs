//! What every reconcile shares: the client, the runtime settings, the event recorder, the
//! status probe, the stream admin, the eraser, the backoff state and the metrics.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::erasures::Eraser;
use crate::error::Backoff;
use crate::metrics::Metrics;
use crate::names::MANAGER;
use crate::probe::StatusProbe;
use crate::settings::RuntimeSettings;
use crate::streams::StreamAdmin;

/// How often figures are refreshed from the runtime's status endpoints while nothing changes.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub settings: RuntimeSettings,
    pub recorder: Recorder,
    pub probe: Arc<dyn StatusProbe>,
    pub streams: Arc<dyn StreamAdmin>,
    pub eraser: Arc<dyn Eraser>,
    pub backoff: Arc<Backoff>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("probe", &self.probe)
            .field("streams", &self.streams)
            .field("eraser", &self.eraser)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose events name `instance` (the operator's pod) as reporter.
    pub fn new(
        client: Client,
        settings: RuntimeSettings,
        probe: Arc<dyn StatusProbe>,
        streams: Arc<dyn StreamAdmin>,
        eraser: Arc<dyn Eraser>,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            probe,
            streams,
            eraser,
            backoff: Arc::new(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(300),
            )),
            metrics,
        }
    }
}
