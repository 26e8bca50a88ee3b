//! Dead letters you can act on, against real NATS JetStream and Postgres: a real projector
//! dead-letters values Postgres refuses; the built `dreampipe deadletters` lists, shows and
//! marks them handled; the projector's report counts the unhandled ones; and the query
//! service serves them behind its tokens.

mod projector_support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use projector_support::*;
use runtime::auth::{ScopedTokens, Tokens};
use runtime::query::http::routes;
use runtime::query::namespaces::Readers;
use serde_json::{Value, json};
use testbed::TestDatabase;
use tower::ServiceExt;

const BINARY: &str = env!("CARGO_BIN_EXE_dreampipe");

/// What a run of the binary printed, and whether it succeeded.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn dreampipe(database_url: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(BINARY)
        .arg("deadletters")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("DREAMPIPE_NAMESPACE")
        .env("USER", "on-call")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn json_of(database_url: &str, args: &[&str]) -> Value {
    let run = dreampipe(database_url, args).await;
    assert!(run.success, "{args:?}: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", run.stdout))
}

/// A projector of `customers` (spend is an integer column) that dead-letters three events
/// whose spend does not fit, between good ones. Returns the bed and the running replica.
async fn three_dead_letters() -> (Bed, Replica) {
    let mut bed = Bed::start(2).await;
    let projection = projection(
        "customers",
        "  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: spend, type: integer}]\n",
    );
    let good = |i: u32| {
        (
            format!("k{i}"),
            Some(json!({"id": format!("k{i}"), "name": format!("c{i}"), "spend": i})),
        )
    };
    bed.producer.publish((0..5).map(good)).await;
    bed.producer
        .publish((0..3).map(|i| {
            (
                format!("big{i}"),
                Some(json!({"id": format!("big{i}"), "spend": 12_345_678_901_i64 + i64::from(i)})),
            )
        }))
        .await;
    bed.producer.publish((5..10).map(good)).await;
    let replica = bed.replica(&projection, "r1", fast_options()).await;
    bed.caught_up(&bed.pool, &projection, Duration::from_secs(30))
        .await;
    let pool = bed.pool.clone();
    wait_until(Duration::from_secs(10), "three dead letters", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from dp_dead_letters")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 3
        }
    })
    .await;
    (bed, replica)
}

#[tokio::test]
async fn the_binary_lists_shows_and_marks_handled_what_the_projector_dead_lettered() {
    let (bed, replica) = three_dead_letters().await;
    let url = bed.database.url();

    let table = dreampipe(&url, &["list", "customers"]).await;
    assert!(table.success, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows:\n{}", table.stdout);
    assert!(lines[0].starts_with("ID  "), "{}", table.stdout);
    for key in ["big0", "big1", "big2"] {
        let line = lines[1..]
            .iter()
            .find(|l| l.contains(&format!(" {key} ")))
            .unwrap_or_else(|| panic!("{key} in\n{}", table.stdout));
        assert!(
            line.contains("rejected the row (SQLSTATE 22003)"),
            "{line:?}"
        );
        assert!(line.contains(" no "), "unhandled: {line:?}");
    }

    let listed = json_of(&url, &["list", "customers", "--output", "json"]).await;
    assert_eq!(listed["projection"], "default/customers");
    let letters = listed["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 3);
    let ids: Vec<i64> = letters.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
    let mut sequences: Vec<u64> = letters
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    sequences.sort();
    assert_eq!(
        sequences,
        [6, 7, 8],
        "the stream sequences of the refused events"
    );
    for letter in letters {
        assert!(letter["partition"].as_u64().unwrap() < 2);
        assert_eq!(letter["version"], 1);
        assert!(letter["recordedAt"].as_str().unwrap().starts_with("20"));
        assert_eq!(letter["handledAt"], Value::Null);
    }
    let generation = letters[0]["generation"].as_str().unwrap().to_owned();
    let (sequence, key) = (&letters[0]["sequence"], letters[0]["key"].as_str().unwrap());
    let spend = 12_345_678_901_i64 + key["big".len()..].parse::<i64>().unwrap();

    let first = ids[0].to_string();
    let shown = dreampipe(&url, &["show", "customers", &first]).await;
    assert!(shown.success, "{}", shown.stderr);
    for expected in [
        format!("id          {first}\n"),
        format!("generation  {generation}\n"),
        format!("sequence    {sequence}\n"),
        format!("key         {key}\n"),
        "handled     no\n".to_owned(),
        format!("\"spend\": {spend}"),
    ] {
        assert!(
            shown.stdout.contains(&expected),
            "{expected:?} in\n{}",
            shown.stdout
        );
    }
    let record = json_of(&url, &["show", "customers", &first, "--output", "json"]).await;
    assert_eq!(record["event"]["state"]["spend"], spend);
    assert_eq!(record["key"], key);
    assert_eq!(record["reason"], letters[0]["reason"]);
    assert!(
        record["messageBase64"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let handled = dreampipe(&url, &["handle", "customers", &first, "--by", "ada"]).await;
    assert!(handled.success, "{}", handled.stderr);
    assert!(
        handled
            .stdout
            .starts_with(&format!("dead letter {first} marked handled at "))
            && handled.stdout.trim_end().ends_with("by ada"),
        "{}",
        handled.stdout
    );
    let again = dreampipe(&url, &["handle", "customers", &first]).await;
    assert!(again.success, "{}", again.stderr);
    assert!(
        again.stdout.contains("was already handled") && again.stdout.contains("by ada"),
        "the first mark stays: {}",
        again.stdout
    );

    let unhandled = json_of(
        &url,
        &["list", "customers", "--unhandled", "--output", "json"],
    )
    .await;
    let left: Vec<i64> = unhandled["deadLetters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left, ids[1..]);
    let report = replica.status.report().await.unwrap();
    let live = &report.generations[0];
    assert_eq!(
        (live.dead_letters, live.unhandled_dead_letters),
        (3, 2),
        "the report counts the unhandled ones"
    );

    let page = json_of(
        &url,
        &["list", "customers", "--limit", "2", "--output", "json"],
    )
    .await;
    assert_eq!(page["deadLetters"].as_array().unwrap().len(), 2);
    assert_eq!(page["nextAfterId"], ids[1]);
    let after = ids[1].to_string();
    let rest = json_of(
        &url,
        &[
            "list",
            "customers",
            "--limit",
            "2",
            "--after-id",
            &after,
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(rest["deadLetters"][0]["id"], ids[2]);
    assert_eq!(rest["nextAfterId"], Value::Null);
    let other = json_of(
        &url,
        &[
            "list",
            "customers",
            "--generation",
            "0000000000000000",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(
        other["deadLetters"],
        json!([]),
        "no dead letters of another generation"
    );
    // Each namespace keeps its dead letters in its own schema (ADR 60): one where no
    // projector ran has none to list, and the command says why.
    let elsewhere = dreampipe(&url, &["list", "customers", "--namespace", "other"]).await;
    assert!(!elsewhere.success);
    assert!(
        elsewhere
            .stderr
            .contains("no projector of that namespace has run against it"),
        "{}",
        elsewhere.stderr
    );

    // A typo among the ids marks nothing.
    let typo = dreampipe(
        &url,
        &["handle", "customers", &ids[1].to_string(), "999999"],
    )
    .await;
    assert!(!typo.success);
    assert!(
        typo.stderr
            .contains("projection default/customers has no dead letter 999999"),
        "{}",
        typo.stderr
    );
    let still = json_of(
        &url,
        &["list", "customers", "--unhandled", "--output", "json"],
    )
    .await;
    assert_eq!(still["deadLetters"].as_array().unwrap().len(), 2);
    let unknown = dreampipe(&url, &["show", "customers", "999999"]).await;
    assert!(!unknown.success);
    assert!(
        unknown.stderr.contains("has no dead letter 999999"),
        "{}",
        unknown.stderr
    );
    replica.stop().await;
}

#[tokio::test]
async fn the_binary_says_when_the_database_is_away_or_holds_no_dead_letters() {
    let port = testbed::child::free_port();
    let away = dreampipe(
        &format!("postgres://dreampipe@127.0.0.1:{port}/nothing"),
        &["list", "customers"],
    )
    .await;
    assert!(!away.success);
    assert!(
        away.stderr
            .contains("cannot reach the database at --database-url"),
        "{}",
        away.stderr
    );

    let empty = TestDatabase::create().await.unwrap();
    let none = dreampipe(&empty.url(), &["list", "customers"]).await;
    assert!(!none.success);
    assert!(
        none.stderr.contains("has no dp_dead_letters table"),
        "{}",
        none.stderr
    );

    let bad = dreampipe("postgres://localhost:notaport/x", &["list", "customers"]).await;
    assert!(!bad.success);
    assert!(
        bad.stderr.contains("invalid --database-url"),
        "{}",
        bad.stderr
    );
}

async fn get(router: &axum::Router, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().uri(uri);
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
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_query_service_serves_dead_letters_behind_its_tokens() {
    let (bed, replica) = three_dead_letters().await;
    let tokens = Tokens::load(None, Some("s3cret")).unwrap();
    let readers = Readers::new(bed.client.clone(), "default").with_dead_letters(bed.pool.clone());
    let query = routes(Arc::new(readers), ScopedTokens::load(tokens, None).unwrap());
    let list = "/v1/projections/customers/deadletters";

    let (status, _) = get(&query, list, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, page) = get(&query, list, Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["projection"], "customers");
    let letters = page["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 3);
    let first = letters[0]["id"].as_i64().unwrap();

    let (status, one) = get(&query, &format!("{list}/{first}"), Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        (&one["sequence"], &one["key"]),
        (&letters[0]["sequence"], &letters[0]["key"])
    );
    assert!(
        one["reason"]
            .as_str()
            .unwrap()
            .contains("out of range for type integer")
    );
    assert_eq!(one["event"]["state"]["id"], letters[0]["key"]);

    runtime::projector::database::mark_handled(
        &bed.pool,
        &runtime::sql::Schema::of_namespace("default"),
        "default/customers",
        first,
        "ada",
    )
    .await
    .unwrap();
    let (_, unhandled) = get(
        &query,
        &format!("{list}?unhandled=true&limit=1"),
        Some("s3cret"),
    )
    .await;
    assert_eq!(unhandled["deadLetters"].as_array().unwrap().len(), 1);
    assert_eq!(unhandled["deadLetters"][0]["id"], letters[1]["id"]);
    assert_eq!(unhandled["nextAfterId"], letters[1]["id"]);
    let (_, handled) = get(&query, &format!("{list}/{first}"), Some("s3cret")).await;
    assert_eq!(handled["handledBy"], "ada");

    for (uri, expected, detail) in [
        (
            format!("{list}/999999"),
            StatusCode::NOT_FOUND,
            "has no dead letter 999999",
        ),
        (
            format!("{list}/0"),
            StatusCode::BAD_REQUEST,
            "id must be a dead letter id",
        ),
        (
            format!("{list}/x"),
            StatusCode::BAD_REQUEST,
            "id must be a dead letter id",
        ),
        (
            format!("{list}?limit=0"),
            StatusCode::BAD_REQUEST,
            "limit must be",
        ),
        (
            format!("{list}?unhandled=yes"),
            StatusCode::BAD_REQUEST,
            "unhandled must be true or false",
        ),
        (
            format!("{list}?generation=G1"),
            StatusCode::BAD_REQUEST,
            "generation must be",
        ),
        (
            "/v1/projections/Bad_Name/deadletters".to_owned(),
            StatusCode::BAD_REQUEST,
            "is not a Projection name",
        ),
    ] {
        let (status, problem) = get(&query, &uri, Some("s3cret")).await;
        assert_eq!(status, expected, "{uri}: {problem}");
        let said = problem["detail"].as_str().unwrap_or_default();
        assert!(said.contains(detail), "{uri}: {problem}");
    }

    // Without a database URL for them, dead letters are not served, and it says why.
    let without = routes(
        Arc::new(Readers::new(bed.client.clone(), "default")),
        ScopedTokens::default(),
    );
    let (status, problem) = get(&without, list, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("DEAD_LETTERS_DATABASE_URL")
    );
    replica.stop().await;
}
