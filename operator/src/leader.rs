//! Leader election on a `coordination.k8s.io` Lease (ADR 51), so two operator replicas can run
//! and only one reconciles. Each round reads the Lease, [`decide`]s (pure), and writes with the
//! resourceVersion it read, so of two replicas racing for a free lease one write wins and the
//! other gets a conflict. As client-go does, a holder's term is measured on the standby's own
//! clock, from when it first saw the holder's current record, never from the timestamps in it:
//! a skewed clock on either side cannot steal a live lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;
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
    /// How long a holder's term lasts without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How often the holder renews and a standby looks again.
    pub retry: Duration,
}

/// What a replica does with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (no holder, or the holder's term ran out): take it.
    Acquire,
    /// This replica holds it: renew it.
    Renew,
    /// Another replica holds it and its term is running.
    Standby { holder: String },
}

/// The decision for `spec`, read by `identity`, whose holder's record has not changed for
/// `unchanged_for` as this replica has seen it.
pub fn decide(spec: &LeaseSpec, identity: &str, unchanged_for: Duration) -> Decision {
    let term =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) if unchanged_for >= term => Decision::Acquire,
        Some(holder) => Decision::Standby {
            holder: holder.to_owned(),
        },
    }
}

/// Why a round of the election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("read Lease {lease}")]
    Read {
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("create Lease {lease}")]
    Create {
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("update Lease {lease}")]
    Update {
        lease: String,
        #[source]
        source: kube::Error,
    },
    /// The leader could not renew in time, or saw another holder: it must stop reconciling.
    #[error("lost Lease {lease}: {why}")]
    Lost { lease: String, why: String },
}

/// One replica's side of the election.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The holder's record (holder, renew time) as last seen, and since when it is unchanged.
    seen: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            seen: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn term_seconds(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// How long the holder's record in `spec` has been the same, as this replica saw it.
    fn unchanged_for(&mut self, spec: &LeaseSpec) -> Duration {
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        match &self.seen {
            Some((holder, renewed, since)) if (holder, renewed) == (&record.0, &record.1) => {
                since.elapsed()
            }
            _ => {
                self.seen = Some((record.0, record.1, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One round: read the Lease, decide, and write it when taking or renewing it. Returns
    /// whether this replica holds the Lease now; a lost race (a conflict) is `Ok(false)`.
    pub async fn round(&mut self) -> Result<bool, LeaderError> {
        let lease = self.lease_name();
        let stored = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|source| LeaderError::Read {
                lease: lease.clone(),
                source,
            })?;
        let Some(mut stored) = stored else {
            let created = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(0)),
            };
            return match self.api.create(&PostParams::default(), &created).await {
                Ok(_) => Ok(true),
                Err(source) if is_conflict(&source) => Ok(false),
                Err(source) => Err(LeaderError::Create { lease, source }),
            };
        };
        let spec = stored.spec.clone().unwrap_or_default();
        let unchanged_for = self.unchanged_for(&spec);
        let next = match decide(&spec, &self.config.identity, unchanged_for) {
            Decision::Standby { .. } => return Ok(false),
            Decision::Renew => LeaseSpec {
                renew_time: Some(now()),
                lease_duration_seconds: Some(self.term_seconds()),
                ..spec
            },
            Decision::Acquire => self.held_spec(spec.lease_transitions.unwrap_or(0) + 1),
        };
        stored.spec = Some(next);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &stored)
            .await
        {
            Ok(_) => Ok(true),
            Err(source) if is_conflict(&source) => Ok(false),
            Err(source) => Err(LeaderError::Update { lease, source }),
        }
    }

    /// The spec of a Lease this replica has just taken.
    fn held_spec(&self, transitions: i32) -> LeaseSpec {
        let at = now();
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            acquire_time: Some(at.clone()),
            renew_time: Some(at),
            lease_duration_seconds: Some(self.term_seconds()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up on shutdown, so the standby takes over at once instead of waiting
    /// out the term. Best effort: a failure only means the standby waits.
    async fn release(&mut self) {
        let Ok(Some(mut stored)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let mut spec = stored.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        stored.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &stored)
            .await
        {
            Ok(_) => tracing::info!(lease = self.lease_name(), "released the lease"),
            Err(error) => tracing::warn!(
                lease = self.lease_name(),
                error = process::error_chain(&error),
                "could not release the lease; the standby waits out its term"
            ),
        }
    }
}

/// Runs `work` only while this replica leads: stands by (serving its probes, reconciling
/// nothing) until it wins the Lease, then starts `work` with a token of its own and keeps
/// renewing. Losing the Lease stops `work` and returns [`LeaderError::Lost`], so the process
/// exits and comes back as a standby (client-go's fail-stop): a replica that may no longer
/// lead never writes again. `shutdown` stops both and releases the Lease.
pub async fn while_leading<F>(
    mut elector: Elector,
    metrics: &Metrics,
    shutdown: CancellationToken,
    work: impl FnOnce(CancellationToken) -> F,
) -> Result<(), LeaderError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let lease = elector.lease_name();
    let retry = elector.config.retry;
    metrics.set_leader(false);
    let mut announced: Option<String> = None;
    // Standing by.
    loop {
        match elector.round().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(
                error = process::error_chain(&error),
                "leader election round failed; standing by"
            ),
        }
        if let Some((Some(holder), _, _)) = &elector.seen
            && announced.as_ref() != Some(holder)
        {
            tracing::info!(lease, holder, "standing by: another replica leads");
            announced = Some(holder.clone());
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(retry) => {}
        }
    }
    tracing::info!(
        lease,
        identity = elector.config.identity,
        "leading: reconciling starts"
    );
    metrics.set_leader(true);
    let stop_work = shutdown.child_token();
    let working = tokio::spawn(work(stop_work.clone()));
    let mut renewed = Instant::now();
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(retry) => {}
        }
        match elector.round().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                break Err(LeaderError::Lost {
                    lease: lease.clone(),
                    why: "another replica holds it".to_owned(),
                });
            }
            Err(error) if renewed.elapsed() < elector.config.duration => tracing::warn!(
                error = process::error_chain(&error),
                "could not renew the lease; retrying within its term"
            ),
            Err(error) => {
                break Err(LeaderError::Lost {
                    lease: lease.clone(),
                    why: format!(
                        "not renewed for {:?}: {}",
                        renewed.elapsed(),
                        process::error_chain(&error)
                    ),
                });
            }
        }
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
        Ok(()) => elector.release().await,
        Err(error) => tracing::error!(error = process::error_chain(error), "stepping down"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_holder_means_standby() {
        assert_eq!(
            decide(&held_by(Some("b"), 15), "a", Duration::from_secs(14)),
            Decision::Standby {
                holder: "b".to_owned()
            }
        );
    }

    #[test]
    fn a_lease_unchanged_for_its_whole_term_is_taken() {
        let spec = held_by(Some("b"), 15);
        assert_eq!(
            decide(&spec, "a", Duration::from_secs(15)),
            Decision::Acquire
        );
    }

    #[test]
    fn an_own_lease_is_renewed_and_a_released_one_taken() {
        let spec = held_by(Some("a"), 15);
        assert_eq!(decide(&spec, "a", Duration::from_secs(60)), Decision::Renew);
        let released = held_by(None, 1);
        assert_eq!(decide(&released, "a", Duration::ZERO), Decision::Acquire);
        let emptied = held_by(Some(""), 15);
        assert_eq!(decide(&emptied, "a", Duration::ZERO), Decision::Acquire);
    }
}
