//! Why a role's pods do not run, in the pods' own words: the kubelet's waiting reason of a
//! container (a missing Secret, an image that cannot be pulled, a crash loop), the scheduler's
//! reason for a pod it cannot place, or the reason a pod failed. Pure: pods in, one problem out.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The first problem found among a role's pods, for the Ready condition and an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// The pod's name.
    pub pod: String,
    /// The kubelet's or scheduler's reason, e.g. `CreateContainerConfigError`.
    pub reason: String,
    /// What it says, e.g. `secret "dreampipe-database" not found`.
    pub message: String,
}

impl std::fmt::Display for PodProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}: {}", self.pod, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl PodProblem {
    /// When the pod cannot start because the Secret `secret` is missing, says so by name with
    /// the command that creates it (`key` holding a value of the form `example`).
    pub fn explain_missing_secret(
        &mut self,
        namespace: &str,
        secret: &str,
        key: &str,
        example: &str,
    ) {
        let missing = format!("secret \"{secret}\" not found");
        if self.reason == "CreateContainerConfigError" && self.message.contains(&missing) {
            self.message = format!(
                "the Secret {secret:?} does not exist in namespace {namespace}; create it: \
                 kubectl create secret generic {secret} -n {namespace} --from-literal={key}='{example}'"
            );
        }
    }
}

/// Waiting reasons that are steps of a normal start, not problems.
const STARTING: &[&str] = &["ContainerCreating", "PodInitializing"];

/// The problem of the first pod (by name) that has one; `None` while pods are only starting.
/// Pods being deleted are left out: they are on their way out of a rollout.
pub fn problem(pods: &[Pod]) -> Option<PodProblem> {
    let mut pods: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|pod| pod.metadata.name.clone());
    pods.into_iter().find_map(problem_of)
}

fn problem_of(pod: &Pod) -> Option<PodProblem> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let found = |reason: &str, message: String| PodProblem {
        pod: name.clone(),
        reason: reason.to_owned(),
        message,
    };
    if status.phase.as_deref() == Some("Failed") {
        let reason = status.reason.as_deref().unwrap_or("Failed");
        return Some(found(reason, status.message.clone().unwrap_or_default()));
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.is_some());
    if let Some(condition) = unschedulable {
        return Some(found(
            condition.reason.as_deref().unwrap_or_default(),
            condition.message.clone().unwrap_or_default(),
        ));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    containers
        .filter_map(container_problem)
        .map(|(reason, message)| found(&reason, message))
        .next()
}

/// A container's waiting reason and message, with the last exit when it is crash looping.
fn container_problem(container: &ContainerStatus) -> Option<(String, String)> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.clone()?;
    if STARTING.contains(&reason.as_str()) {
        return None;
    }
    let mut message = waiting.message.clone().unwrap_or_default();
    let last_exit = container
        .last_state
        .as_ref()
        .and_then(|last| last.terminated.as_ref());
    if let Some(exit) = last_exit {
        let how = exit.reason.as_deref().unwrap_or("exited");
        let said = exit
            .message
            .as_deref()
            .map(|m| format!(": {}", m.trim()))
            .unwrap_or_default();
        let exit = format!(
            "container {} last {how} with code {}{said}",
            container.name, exit.exit_code
        );
        message = if message.is_empty() {
            exit
        } else {
            format!("{message}; {exit}")
        };
    }
    Some((reason, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": status})).unwrap()
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({"phase": "Pending", "containerStatuses": [{"name": "receiver", "image": "i",
               "imageID": "", "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": reason, "message": message}}}]})
    }

    #[test]
    fn a_missing_database_secret_is_named_with_the_command_that_creates_it() {
        let mut problem = problem(&[pod(
            "customers-projector-1",
            waiting("CreateContainerConfigError", "secret \"team-db\" not found"),
        )])
        .expect("a problem");
        problem.explain_missing_secret("team-b", "team-db", "writer-url", "postgres://u:p@h/db");
        assert_eq!(
            problem.message,
            "the Secret \"team-db\" does not exist in namespace team-b; create it: kubectl create \
             secret generic team-db -n team-b --from-literal=writer-url='postgres://u:p@h/db'"
        );
        let mut other = problem.clone();
        other.message = "secret \"ingest\" not found".to_owned();
        other.explain_missing_secret("team-b", "team-db", "writer-url", "x");
        assert_eq!(
            other.message, "secret \"ingest\" not found",
            "another Secret is left as is"
        );
    }

    #[test]
    fn a_missing_secret_is_reported_in_the_kubelets_words() {
        let pods = [pod(
            "customer-receiver-1",
            waiting(
                "CreateContainerConfigError",
                "secret \"dreampipe-database\" not found",
            ),
        )];
        let problem = problem(&pods).expect("a problem");
        assert_eq!(problem.reason, "CreateContainerConfigError");
        assert_eq!(
            problem.to_string(),
            "pod customer-receiver-1: CreateContainerConfigError: secret \"dreampipe-database\" not found"
        );
    }

    #[test]
    fn containers_that_are_only_starting_are_no_problem() {
        let pods = [pod("a", waiting("ContainerCreating", ""))];
        assert_eq!(problem(&pods), None);
    }

    #[test]
    fn a_crash_loop_says_how_the_container_last_exited() {
        let mut status = waiting(
            "CrashLoopBackOff",
            "back-off 40s restarting failed container",
        );
        status["containerStatuses"][0]["lastState"] =
            json!({"terminated": {"exitCode": 2, "reason": "Error", "message": "no NATS_URL\n"}});
        let problem = problem(&[pod("a", status)]).unwrap();
        assert_eq!(problem.reason, "CrashLoopBackOff");
        assert!(
            problem
                .message
                .ends_with("container receiver last Error with code 2: no NATS_URL"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn an_unschedulable_pod_gives_the_schedulers_reason() {
        let status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory."}]});
        let problem = problem(&[pod("a", status)]).unwrap();
        assert_eq!(problem.reason, "Unschedulable");
        assert!(problem.message.contains("Insufficient memory"));
    }

    #[test]
    fn the_first_pod_by_name_with_a_problem_is_reported() {
        let pods = [
            pod(
                "b",
                waiting("ImagePullBackOff", "Back-off pulling image \"x\""),
            ),
            pod("a", waiting("ContainerCreating", "")),
            pod("c", waiting("ErrImagePull", "")),
        ];
        assert_eq!(problem(&pods).unwrap().pod, "b");
    }
}
