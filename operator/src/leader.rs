//! Leader election on a `coordination.k8s.io` Lease (ADR 51), so two operator replicas can run
//! and only one reconciles. The Lease protocol is `kube-lease-manager`'s (a maintained crate
//! on kube 5): the holder renews `grace` before its term ends; a standby sleeps until the
//! holder's term ends, and takes the Lease only if it was not renewed. Conflicting writes are
//! refused by the API server, so two replicas never both hold it. This module only decides
//! what runs while this replica leads.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Where the Lease is and how it is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease: the operator's own.
    pub namespace: String,
    /// Name of the Lease, one per operator installation.
    pub name: String,
    /// This replica's identity in `holderIdentity` (its pod name).
    pub identity: String,
    /// How long a holder's term lasts without renewal (`leaseDurationSeconds`), whole seconds.
    pub duration: Duration,
    /// How long before its term ends the holder renews; shorter than `duration`. It is also the
    /// clock skew between nodes the election tolerates.
    pub grace: Duration,
}

/// Why the election stopped this replica.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lease duration {duration:?} must be at least 2s and longer than the grace {grace:?} (at least 1s)"
    )]
    Timing { duration: Duration, grace: Duration },
    /// The leader saw another holder, or could not renew: it must stop reconciling.
    #[error("lost Lease {lease}")]
    Lost {
        lease: String,
        #[source]
        source: Option<LeaseManagerError>,
    },
}

impl LeaseConfig {
    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The term and grace in whole seconds, as the Lease API counts them.
    fn seconds(&self) -> Result<(u64, u64), LeaderError> {
        let (duration, grace) = (self.duration.as_secs(), self.grace.as_secs());
        if grace == 0 || duration <= grace {
            return Err(LeaderError::Timing {
                duration: self.duration,
                grace: self.grace,
            });
        }
        Ok((duration, grace))
    }
}

/// How long a standby waits before trying again after the API server failed it.
const RETRY: Duration = Duration::from_secs(2);

/// The Lease's manager, built (the Lease created when missing) once the API server answers.
async fn manager(
    client: Client,
    config: &LeaseConfig,
    shutdown: &CancellationToken,
) -> Result<Option<LeaseManager>, LeaderError> {
    let (duration, grace) = config.seconds()?;
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(duration)
            .with_grace(grace)
            // The crate's field manager names the identity: two replicas applying the same
            // holder field conflict, which is what keeps them from both taking the Lease.
            .build();
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            built = built => match built {
                Ok(manager) => return Ok(Some(manager)),
                Err(error) => tracing::warn!(
                    lease = config.lease(),
                    error = process::error_chain(&error),
                    "cannot read the leader lease yet; standing by"
                ),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Runs `work` only while this replica leads: stands by (serving its probes, reconciling
/// nothing) until it holds the Lease, then starts `work` with a token of its own while the
/// manager keeps renewing. Losing the Lease, or failing to renew it, stops `work` and returns
/// [`LeaderError::Lost`], so the process exits and comes back as a standby (client-go's
/// fail-stop): a replica that may no longer lead never writes again. `shutdown` stops both
/// and releases the Lease, so the standby takes over at once.
pub async fn while_leading<F>(
    client: Client,
    config: LeaseConfig,
    metrics: &Metrics,
    shutdown: CancellationToken,
    work: impl FnOnce(CancellationToken) -> F,
) -> Result<(), LeaderError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let lease = config.lease();
    metrics.set_leader(false);
    let Some(manager) = manager(client, &config, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(
        lease,
        identity = config.identity,
        "standing by until the lease is free"
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = manager.changed() => match changed {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(
                        lease,
                        error = process::error_chain(&error),
                        "leader election failed; standing by"
                    );
                    tokio::time::sleep(RETRY).await;
                }
            },
        }
    }
    tracing::info!(
        lease,
        identity = config.identity,
        "leading: reconciling starts"
    );
    metrics.set_leader(true);
    let stop_work = shutdown.child_token();
    let working = tokio::spawn(work(stop_work.clone()));
    let outcome = tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        changed = manager.changed() => Err(LeaderError::Lost {
            lease: lease.clone(),
            source: changed.err(),
        }),
    };
    stop_work.cancel();
    metrics.set_leader(false);
    if tokio::time::timeout(Duration::from_secs(5), working)
        .await
        .is_err()
    {
        tracing::warn!("reconciles did not stop within 5s after leadership ended");
    }
    match &outcome {
        Ok(()) => match manager.release().await {
            Ok(()) => tracing::info!(lease, "released the lease"),
            Err(error) => tracing::warn!(
                lease,
                error = process::error_chain(&error),
                "could not release the lease; the standby waits out its term"
            ),
        },
        Err(error) => tracing::error!(error = process::error_chain(error), "stepping down"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration: u64, grace: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "dreampipe".to_owned(),
            name: "dreampipe-operator".to_owned(),
            identity: "a".to_owned(),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }
    }

    #[test]
    fn the_grace_must_be_shorter_than_the_term() {
        assert_eq!(config(15, 5).seconds().unwrap(), (15, 5));
        assert!(config(5, 5).seconds().is_err());
        assert!(config(5, 0).seconds().is_err());
    }
}
