//! Leader election against a mocked API server (`common::lease`): a standby reconciles
//! nothing while another replica keeps its Lease fresh, takes the Lease once the holder stops
//! renewing and its term ends, and only then starts its controllers.

mod common;

use std::time::Duration;

use common::lease::{self, IDENTITY, LEASE};

#[tokio::test]
async fn a_standby_does_not_reconcile_while_the_lease_is_fresh_and_takes_over_when_it_expires() {
    let election = lease::takeover().await;
    let takeover = election
        .takeover()
        .unwrap_or_else(|| panic!("the standby takes the lease over: {:#?}", election.seen));
    let taken_at = election.seen[takeover].at;
    assert!(
        taken_at >= election.other_stopped,
        "taken over at {taken_at:?}, while the holder still renewed (until {:?})",
        election.other_stopped
    );
    for seen in &election.seen[..takeover] {
        assert_eq!(
            seen.call.path, LEASE,
            "a standby only touches the lease: {seen:?}"
        );
        assert!(!seen.leading, "the standby says it stands by");
    }
    let first = election
        .first_reconcile()
        .expect("the new leader starts its controllers");
    assert!(first > takeover);
    assert!(election.seen[first].leading, "the leader says it leads");
    assert_eq!(election.result, Ok(()));
    assert!(!election.leader_after_shutdown);
    let released = election.seen[first..].iter().any(|s| {
        s.call.method == "PATCH"
            && s.call.path == LEASE
            && s.call.body["spec"]
                .as_object()
                .is_some_and(|spec| spec.get("holderIdentity") == Some(&serde_json::Value::Null))
    });
    assert!(released, "on shutdown the leader gives the lease up");
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let election = lease::first_replica().await;
    let created = election
        .seen
        .iter()
        .position(|s| s.call.method == "POST")
        .expect("the lease is created");
    let takeover = election.takeover().expect("and taken");
    let first = election.first_reconcile().expect("then reconciling starts");
    assert!(created < takeover && takeover < first);
    assert!(
        election.seen[first].at < Duration::from_secs(5),
        "a free lease is taken at once"
    );
    let body = &election.seen[takeover].call.body;
    assert_eq!(body["spec"]["holderIdentity"], IDENTITY);
    assert_eq!(body["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(election.result, Ok(()));
}
