//! The reconcilers' error type and the per-object backoff of `error_policy`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::build::BuildError;
use crate::streams::StreamError;
use crate::validate::Rejection;

/// Why a reconcile failed; every variant but [`Error::Rejected`] is transient.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid: not a failure to retry. The driver reports it in status and an
    /// Event, and the object waits for a change.
    #[error("rejected spec")]
    Rejected(#[from] Rejection),
    #[error("Kubernetes API: {action}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Not a failure: a step (a deletion, a Job) has to finish before the next; retried soon.
    #[error("waiting: {0}")]
    Waiting(String),
    #[error("finalizer {finalizer}")]
    Finalizer {
        finalizer: &'static str,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
}

impl Error {
    /// Whether this is [`Error::Waiting`], directly or from a finalizer's cleanup.
    pub fn is_waiting(&self) -> bool {
        use kube::runtime::finalizer::Error as FinalizerError;
        match self {
            Error::Waiting(_) => true,
            Error::Finalizer { source, .. } => matches!(
                &**source,
                FinalizerError::CleanupFailed(inner) | FinalizerError::ApplyFailed(inner)
                    if inner.is_waiting()
            ),
            _ => false,
        }
    }

    /// What failed, as the `category` label of the error metric.
    pub fn category(&self) -> &'static str {
        use kube::runtime::finalizer::Error as FinalizerError;
        match self {
            Error::Rejected(_) => "invalid_spec",
            Error::Kube { .. } => "kube_api",
            Error::Build(_) => "build",
            Error::Stream(_) => "stream",
            Error::Waiting(_) => "waiting",
            Error::Finalizer { source, .. } => match &**source {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.category()
                }
                _ => "finalizer",
            },
        }
    }

    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … capped, reset by a successful reconcile.
#[derive(Debug)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            failures: Mutex::new(HashMap::new()),
            base,
            cap,
        }
    }

    /// Counts a failure of `object` and returns how long to wait before the next attempt.
    pub fn fail(&self, object: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(object.to_owned()).or_insert(0);
        let delay = process::backoff_delay(self.base, self.cap, *count);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets the failures of `object`.
    pub fn reset(&self, object: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_object_up_to_the_cap_and_resets_on_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| backoff.fail("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(
            backoff.fail("b"),
            Duration::from_secs(1),
            "objects back off separately"
        );
        backoff.reset("a");
        assert_eq!(backoff.fail("a"), Duration::from_secs(1));
    }
}
