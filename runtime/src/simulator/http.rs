//! The simulated CRM's API, shaped like Salesforce's REST query API:
//!
//! - `GET /services/data/v59.0/query?q=SELECT Id, Name FROM Account` (live records) and
//!   `.../queryAll?q=...` (deleted ones too, with `IsDeleted: true`), optionally with
//!   `&modifiedSince=<RFC 3339>` for incremental syncs;
//! - answers `{totalSize, done, nextRecordsUrl?, records}`, pages of `page_size` records from
//!   a snapshot taken when the query ran, the next page at `nextRecordsUrl`;
//! - bearer auth, answering 401 `INVALID_SESSION_ID` like Salesforce: a fixed token, or the
//!   access tokens its OAuth2 token endpoint issued (`oauth.rs`);
//! - `GET /simulator/accounts`: every account, for tests to compare with (no auth).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::crm::{Account, Crm};
use super::oauth::{self, ConnectedApp, OAuth};

const API: &str = "/services/data/v59.0";
/// Query locators kept for paging; older ones expire, as Salesforce's do.
const LOCATORS_KEPT: usize = 64;

/// The simulator's shared state.
#[derive(Debug)]
pub struct Simulator {
    pub crm: Mutex<Crm>,
    /// A fixed token the API accepts, if any.
    token: Option<String>,
    /// The connected app whose issued tokens the API accepts, if any.
    pub(super) oauth: Option<OAuth>,
    page_size: usize,
    locators: Mutex<Locators>,
}

#[derive(Debug, Default)]
struct Locators {
    next: u64,
    pages: HashMap<String, (Vec<Value>, Vec<String>)>,
    order: VecDeque<String>,
}

impl Simulator {
    pub fn new(crm: Crm, token: String, page_size: usize) -> Self {
        Simulator {
            crm: Mutex::new(crm),
            token: Some(token).filter(|t| !t.is_empty()),
            oauth: None,
            page_size: page_size.max(1),
            locators: Mutex::new(Locators::default()),
        }
    }
}

impl Simulator {
    /// The simulator with an OAuth2 token endpoint for `app`.
    pub fn with_oauth(mut self, app: ConnectedApp) -> Self {
        self.oauth = Some(OAuth {
            app,
            issued: Mutex::default(),
        });
        self
    }
}

/// The simulator's routes.
pub fn routes(simulator: Arc<Simulator>) -> Router {
    Router::new()
        .route(&format!("{API}/query"), get(query))
        .route(&format!("{API}/queryAll"), get(query_all))
        .route(&format!("{API}/query/{{locator}}"), get(next_page))
        .route("/services/oauth2/token", post(oauth::token))
        .route("/simulator/accounts", get(accounts))
        .route("/simulator/revoke", post(oauth::revoke))
        .route("/simulator/oauth", get(oauth::figures))
        .with_state(simulator)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{"message": message, "errorCode": code}])),
    )
        .into_response()
}

fn authorised(simulator: &Simulator, headers: &HeaderMap) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    if simulator.token.as_deref() == Some(presented) {
        return true;
    }
    let Some(oauth) = &simulator.oauth else {
        return false;
    };
    let mut issued = oauth.issued.lock().expect("oauth lock");
    let valid = issued.valid(presented);
    if !valid {
        issued.unauthorized += 1;
    }
    valid
}

/// The fields and object of a `SELECT <fields> FROM <object>` statement.
pub fn parse_soql(soql: &str) -> Result<(Vec<String>, String), String> {
    let words: Vec<&str> = soql.split_whitespace().collect();
    let from = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("from"))
        .ok_or("expected FROM")?;
    if !words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("select"))
        || from < 2
    {
        return Err("expected SELECT <fields> FROM <object>".to_owned());
    }
    let fields: Vec<String> = words[1..from]
        .join(" ")
        .split(',')
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    let object = words.get(from + 1).ok_or("expected an object after FROM")?;
    if words.len() > from + 2 {
        return Err(format!(
            "unsupported clause {:?}: filter with modifiedSince",
            words[from + 2]
        ));
    }
    Ok((fields, (*object).to_owned()))
}

async fn query(
    State(simulator): State<Arc<Simulator>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    run_query(&simulator, &headers, &params, false)
}

async fn query_all(
    State(simulator): State<Arc<Simulator>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    run_query(&simulator, &headers, &params, true)
}

fn run_query(
    simulator: &Simulator,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    all: bool,
) -> Response {
    if !authorised(simulator, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        );
    }
    let Some(soql) = params.get("q") else {
        return error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "missing q");
    };
    let (fields, object) = match parse_soql(soql) {
        Ok(parsed) => parsed,
        Err(why) => return error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &why),
    };
    if !object.eq_ignore_ascii_case("Account") {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!("sObject type '{object}' is not supported"),
        );
    }
    let since = params.get("modifiedSince").map(String::as_str);
    let records: Vec<Value> = {
        let crm = simulator.crm.lock().expect("crm lock");
        crm.query(all, since)
            .into_iter()
            .map(|a| project(a, &fields))
            .collect()
    };
    page(simulator, records, fields)
}

/// The record with only the selected fields (and Salesforce's `attributes`).
fn project(account: &Account, fields: &[String]) -> Value {
    let record = account.record();
    let mut out = serde_json::Map::new();
    out.insert("attributes".to_owned(), record["attributes"].clone());
    for field in fields {
        if let Some((name, value)) = record
            .as_object()
            .and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)))
        {
            out.insert(name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// Answers the first `page_size` records, keeping the rest under a locator for the next page.
fn page(simulator: &Simulator, mut records: Vec<Value>, fields: Vec<String>) -> Response {
    let total = records.len();
    let rest = if records.len() > simulator.page_size {
        records.split_off(simulator.page_size)
    } else {
        Vec::new()
    };
    let mut body = json!({"totalSize": total, "done": rest.is_empty(), "records": records});
    if !rest.is_empty() {
        let mut locators = simulator.locators.lock().expect("locator lock");
        locators.next += 1;
        let locator = format!("01g{:015}-{}", locators.next, simulator.page_size);
        locators.pages.insert(locator.clone(), (rest, fields));
        locators.order.push_back(locator.clone());
        while locators.order.len() > LOCATORS_KEPT {
            if let Some(old) = locators.order.pop_front() {
                locators.pages.remove(&old);
            }
        }
        body["nextRecordsUrl"] = Value::String(format!("{API}/query/{locator}"));
    }
    axum::Json(body).into_response()
}

async fn next_page(
    State(simulator): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(locator): Path<String>,
) -> Response {
    if !authorised(&simulator, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        );
    }
    let taken = simulator
        .locators
        .lock()
        .expect("locator lock")
        .pages
        .remove(&locator);
    match taken {
        Some((records, fields)) => page(&simulator, records, fields),
        None => error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        ),
    }
}

async fn accounts(State(simulator): State<Arc<Simulator>>) -> Response {
    let crm = simulator.crm.lock().expect("crm lock");
    let all: Vec<Value> = crm
        .query(true, None)
        .into_iter()
        .map(Account::record)
        .collect();
    axum::Json(all).into_response()
}
