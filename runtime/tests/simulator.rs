//! The simulated CRM answers like Salesforce's query API: pages behind nextRecordsUrl, deleted
//! records only in queryAll, incremental reads, bearer auth.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use runtime::simulator::crm::{Crm, stamp};
use runtime::simulator::http::{Simulator, routes};
use serde_json::Value;
use tower::ServiceExt;

fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn simulator(accounts: u64) -> (Arc<Simulator>, Router) {
    let simulator = Arc::new(Simulator::new(
        Crm::new(accounts, 3, at(0)),
        "crm-token".to_owned(),
        100,
    ));
    (simulator.clone(), routes(simulator))
}

async fn get(router: &Router, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

const QUERY: &str = "/services/data/v59.0/query?q=SELECT+Id,+Name,+BillingCity+FROM+Account";

#[tokio::test]
async fn records_come_in_pages_linked_by_next_records_url() {
    let (_, router) = simulator(250);
    let mut uri = QUERY.to_owned();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = get(&router, &uri, Some("crm-token")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["totalSize"].as_u64().unwrap(), 250 - 100 * pages);
        pages += 1;
        for record in page["records"].as_array().unwrap() {
            assert_eq!(record["attributes"]["type"], "Account");
            assert!(
                record.get("AnnualRevenue").is_none(),
                "only selected fields: {record}"
            );
            ids.push(record["Id"].as_str().unwrap().to_owned());
        }
        match page["nextRecordsUrl"].as_str() {
            Some(next) => {
                assert_eq!(page["done"], false);
                uri = next.to_owned();
            }
            None => {
                assert_eq!(page["done"], true);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    ids.dedup();
    assert_eq!(ids.len(), 250);
}

#[tokio::test]
async fn deleted_records_show_only_in_query_all_and_changes_only_since_the_cursor() {
    let (simulator, router) = simulator(30);
    for tick in 0..10 {
        simulator
            .crm
            .lock()
            .unwrap()
            .tick(tick, 2, at(10 + tick as i64));
    }
    let all_uri = "/services/data/v59.0/queryAll?q=SELECT+Id,+IsDeleted+FROM+Account";
    let (_, all) = get(&router, all_uri, Some("crm-token")).await;
    let deleted = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["IsDeleted"] == true)
        .count();
    assert_eq!(deleted, 1);
    assert_eq!(all["totalSize"], 31);
    let (_, live) = get(
        &router,
        "/services/data/v59.0/query?q=SELECT+Id,+IsDeleted+FROM+Account",
        Some("crm-token"),
    )
    .await;
    assert_eq!(live["totalSize"], 30);

    let since = stamp(at(15));
    let (_, recent) = get(
        &router,
        &format!("{all_uri}&modifiedSince={since}"),
        Some("crm-token"),
    )
    .await;
    let recent_count = recent["totalSize"].as_u64().unwrap();
    assert!(
        (1..31).contains(&recent_count),
        "{recent_count} changed since tick 5"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_an_invalid_session() {
    let (_, router) = simulator(5);
    for token in [None, Some("nope")] {
        let (status, body) = get(&router, QUERY, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
    }
}

#[tokio::test]
async fn malformed_queries_are_refused_like_salesforce_does() {
    let (_, router) = simulator(5);
    let cases = [
        (
            "/services/data/v59.0/query?q=SELECT+Id+FROM+Contact",
            "INVALID_TYPE",
        ),
        (
            "/services/data/v59.0/query?q=DELETE+FROM+Account",
            "MALFORMED_QUERY",
        ),
        (
            "/services/data/v59.0/query?q=SELECT+Id+FROM+Account+WHERE+Id+=+1",
            "MALFORMED_QUERY",
        ),
        ("/services/data/v59.0/query", "MALFORMED_QUERY"),
        (
            "/services/data/v59.0/query/01gnothing-100",
            "INVALID_QUERY_LOCATOR",
        ),
    ];
    for (uri, code) in cases {
        let (status, body) = get(&router, uri, Some("crm-token")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body[0]["errorCode"], code, "{uri}: {body}");
    }
}

/// The simulator's flags with nothing given but the token: its default history.
#[derive(Debug, clap::Parser)]
struct Defaults {
    #[command(flatten)]
    args: runtime::simulator::Args,
}

#[test]
fn every_account_the_readme_reads_outlives_two_hours_of_the_default_history() {
    use clap::Parser;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README is beside the runtime crate");
    let mut keys: Vec<String> = readme
        .split("/v1/entities/customer/")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .filter(|key: &String| key.starts_with("001"))
        .collect();
    keys.sort();
    keys.dedup();
    assert!(
        !keys.is_empty(),
        "the README reads a CRM account by its key"
    );

    let defaults = Defaults::parse_from(["crm-simulator", "--token", "t"]).args;
    let mut crm = Crm::new(defaults.accounts, defaults.seed, at(0));
    let two_hours = 2 * 3600 / defaults.tick.as_secs().max(1);
    for tick in 0..two_hours {
        crm.tick(tick, defaults.changes_per_tick, at(tick as i64 + 1));
    }
    for key in &keys {
        assert!(
            crm.live().any(|account| &account.id == key),
            "the README reads account {key}, which the default history deletes within two hours"
        );
    }
}
