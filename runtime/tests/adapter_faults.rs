//! An adapter whose receiver goes away for 30 s retries with backoff and loses no record
//! (DESIGN §11).

#![allow(
    clippy::print_stdout,
    reason = "figures for docs/failure-model.md, shown with --nocapture"
)]

mod adapter_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adapter_support::{events_of, receiver_on, start_adapter};
use runtime::adapter::source::generator::Records;
use runtime::auth::Tokens;
use testbed::NatsServer;
use tokio_util::sync::CancellationToken;

const RECORDS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_whose_receiver_is_gone_for_30_s_loses_no_record() {
    let nats = NatsServer::start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let first = CancellationToken::new();
    let receiver_url = receiver_on(&nats, listener, Tokens::default(), first.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // 300 records over 300 keys at 30 a second: most of them are read while the receiver is away.
    let yaml = format!(
        r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {{name: feed, namespace: shop}}
spec:
  entity: customer
  batchSize: 10
  source: {{generator: {{rate: 30, count: {RECORDS}, keys: {RECORDS}, seed: 14}}}}
  mapping:
    id: record.id
    name: record.name
"#
    );
    let adapter = start_adapter(dir.path(), &yaml, &receiver_url, nats.url()).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    first.cancel();
    let gone_at = Instant::now();
    let submitted_before = adapter.status().submitted;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let while_gone = adapter.status();

    // The receiver comes back on the same address.
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let second = CancellationToken::new();
    receiver_on(&nats, listener, Tokens::default(), second.clone()).await;
    let back_at = Instant::now();
    let deadline = back_at + Duration::from_secs(60);
    let status = loop {
        let status = adapter.status();
        if status.submitted == RECORDS {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {RECORDS} records submitted 60 s after the receiver returned: {status:?}",
            status.submitted
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let caught_up_in = back_at.elapsed();
    let figures = format!(
        "{submitted_before} submitted before the receiver went, {} while it was gone for {:?}, \
         all {RECORDS} {caught_up_in:?} after it returned; last error while gone: {:?}",
        while_gone.submitted - submitted_before,
        back_at - gone_at,
        while_gone.last_error
    );
    println!("{figures}");
    assert!(
        while_gone.records_read > submitted_before && while_gone.submitted < RECORDS,
        "the outage did not fall while records were being read ({figures})"
    );

    let expected: BTreeMap<String, String> = Records::new(14, RECORDS)
        .take(RECORDS as usize)
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        status.created + status.updated + status.unchanged,
        RECORDS,
        "{figures}"
    );
    for (id, name) in &expected {
        let events = events_of(&nats, id).await;
        let state = events
            .last()
            .and_then(|event| event.state.clone())
            .unwrap_or_else(|| panic!("record {id} was lost ({figures})"));
        assert_eq!(state["name"], name.as_str(), "{id} ({figures})");
    }
    adapter.stop().await;
    second.cancel();
}
