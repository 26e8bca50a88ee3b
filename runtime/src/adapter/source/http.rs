//! The `http` source: polls a JSON API page by page every `interval`, asking only for records
//! modified since the durable cursor, with a full read every `resyncInterval` that can delete
//! keys the API no longer returns.

use std::collections::BTreeSet;
use std::time::Duration;
use tracing::Instrument as _;

use bytes::Bytes;
use crds::adapter::HttpSource;
use http_body_util::{BodyExt, Full};
use hyper::header;
use process::Health;
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use super::super::cursor::{Cursor, CursorError, CursorStore};
use super::super::mapping::Item;
use super::super::submit::{HttpClient, SubmitError};
use super::oauth::OAuthTokens;
use super::{ConnectError, Feed, Setup, SetupError, Source};

/// Why polling could not start: the durable cursor is out of reach.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

/// Why one poll failed; the next poll starts again from the durable cursor.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{url:?} is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("cannot reach {url}")]
    Fetch {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("cannot read the answer of {url}")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: hyper::StatusCode,
    },
    #[error("{url} did not answer JSON")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the page of {url} has no records array at {pointer:?}")]
    NoRecords { url: String, pointer: String },
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    OAuth(#[from] super::oauth::OAuthError),
}

/// A polled HTTP API.
#[derive(Debug)]
pub struct HttpPoller {
    source: HttpSource,
    client: HttpClient,
    auth: Auth,
    interval: Duration,
    resync_interval: Option<Duration>,
    /// Where the durable cursor lives: the server, and the adapter it belongs to.
    nats_url: crate::nats::NatsServers,
    namespace: String,
    adapter: String,
}

/// How the API is told who asks.
#[derive(Debug)]
enum Auth {
    None,
    /// `tokenSecretRef`: one token for as long as the adapter runs.
    Static(String),
    /// `oauth2`: tokens from the token endpoint, replaced before they expire.
    OAuth2(Box<OAuthTokens>),
}

impl Source for HttpPoller {
    const KIND: &'static str = "http";
    type Error = HttpError;

    /// Polls every `interval` until `shutdown`. A failed poll is logged and kept as the last
    /// error; the cursor only moves after a poll's records were all submitted.
    async fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), HttpError> {
        let client = super::connect(&self.nats_url).await?;
        let cursors = CursorStore::open(&client, &self.namespace, &self.adapter).await?;
        health.set_ready(true);
        let mut cursor = cursors.load().await?;
        tracing::info!(url = %self.source.url, since = ?cursor.since, "polling");
        loop {
            let span = crate::span!("adapter.poll", adapter = %self.adapter, source = "http");
            let started = std::time::Instant::now();
            let polled = self
                .poll(&cursors, &mut cursor, feed, shutdown)
                .instrument(span)
                .await;
            if !matches!(polled, Err(PollError::Submit(SubmitError::ShutDown))) {
                feed.stats().polled(started.elapsed(), polled.is_ok());
            }
            match polled {
                Ok(()) => feed.stats().synced(),
                Err(PollError::Submit(SubmitError::ShutDown)) => return Ok(()),
                Err(error) => {
                    let message = crate::error_chain(&error);
                    tracing::warn!(error = %message, "poll failed");
                    feed.stats().error(message);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

impl HttpPoller {
    /// The poller `spec` asks for, its token read from its Secret.
    pub fn new(spec: &HttpSource, setup: &Setup<'_>) -> Result<Self, SetupError> {
        Ok(HttpPoller {
            source: spec.clone(),
            client: setup.client.clone(),
            auth: match (&spec.token_secret_ref, &spec.oauth2) {
                (_, Some(oauth2)) => Auth::OAuth2(Box::new(OAuthTokens::new(oauth2, setup)?)),
                (Some(reference), None) => Auth::Static(setup.secret(reference)?),
                (None, None) => Auth::None,
            },
            interval: setup.interval,
            resync_interval: spec
                .resync_interval
                .as_deref()
                .map(|text| super::duration("spec.source.http.resyncInterval", text))
                .transpose()?,
            nats_url: setup.nats_url.clone(),
            namespace: setup.namespace.to_owned(),
            adapter: setup.adapter.to_owned(),
        })
    }

    /// Whether this poll reads everything rather than what changed since the cursor.
    fn is_full_read(&self, cursor: &Cursor) -> bool {
        let now = jiff::Timestamp::now();
        self.resync_interval.is_some_and(|every| {
            cursor
                .last_full_read
                .is_none_or(|last| now.duration_since(last).unsigned_abs() >= every)
        })
    }

    /// One poll: every page, mapped and submitted, then the cursor stored in `cursors`.
    pub async fn poll(
        &self,
        cursors: &CursorStore,
        cursor: &mut Cursor,
        feed: &Feed,
        shutdown: &CancellationToken,
    ) -> Result<(), PollError> {
        let full = self.is_full_read(cursor);
        let delete_missing = self.source.delete_missing;
        let mut next = cursor.clone();
        let first = match (&self.source.incremental, &cursor.since) {
            (Some(incremental), Some(since)) if !full => {
                with_param(&self.source.url, &incremental.param, &param_text(since))
            }
            _ => encode_uri(&self.source.url),
        };
        let mut url = first.clone();
        let mut seen = BTreeSet::new();
        let mut failed = 0;
        loop {
            let page = self.fetch(&url).await?;
            let records = page
                .pointer(&self.source.records)
                .and_then(Json::as_array)
                .ok_or_else(|| PollError::NoRecords {
                    url: url.clone(),
                    pointer: self.source.records.clone(),
                })?;
            let items = feed.map(records);
            failed += records.len() - items.len();
            if let Some(incremental) = &self.source.incremental {
                for value in records.iter().filter_map(|r| r.pointer(&incremental.field)) {
                    if next
                        .since
                        .as_ref()
                        .is_none_or(|since| is_later(value, since))
                    {
                        next.since = Some(value.clone());
                    }
                }
            }
            if delete_missing {
                for item in &items {
                    match item {
                        Item::Upsert { key, .. } => {
                            seen.insert(key.clone());
                            next.keys.insert(key.clone());
                        }
                        Item::Delete { key } => {
                            next.keys.remove(key);
                        }
                    }
                }
            }
            feed.submit(&items, shutdown).await?;
            match next_page(&self.source, &page, &first) {
                Some(page_url) => url = page_url,
                None => break,
            }
        }
        if full {
            if delete_missing && failed == 0 {
                let missing: Vec<Item> = next
                    .keys
                    .difference(&seen)
                    .map(|key| Item::Delete { key: key.clone() })
                    .collect();
                if !missing.is_empty() {
                    tracing::info!(
                        keys = missing.len(),
                        "deleting keys the source no longer returns"
                    );
                    feed.submit(&missing, shutdown).await?;
                }
                next.keys = seen;
            } else if delete_missing {
                tracing::warn!(
                    failed,
                    "some records failed mapping: missing keys are not deleted on this resync"
                );
            }
            next.last_full_read = Some(jiff::Timestamp::now());
        }
        if !delete_missing {
            next.keys.clear();
        }
        if next != *cursor {
            cursors.save(&next).await?;
            *cursor = next;
        }
        Ok(())
    }

    /// One page. With OAuth2, a 401 drops the token and the page is asked for once more with
    /// a new one (a token revoked before its expiry).
    async fn fetch(&self, url: &str) -> Result<Json, PollError> {
        let fetched = self.fetch_once(url).await;
        if let Err(PollError::Status { status, .. }) = &fetched
            && *status == hyper::StatusCode::UNAUTHORIZED
            && let Auth::OAuth2(tokens) = &self.auth
        {
            tracing::info!(
                url,
                "the API refused the OAuth2 token; asking for a new one"
            );
            tokens.expire().await;
            return self.fetch_once(url).await;
        }
        fetched
    }

    async fn fetch_once(&self, url: &str) -> Result<Json, PollError> {
        let uri: hyper::Uri = url.parse().map_err(|source| PollError::Url {
            url: url.to_owned(),
            source,
        })?;
        let mut request = hyper::Request::get(uri).header(header::ACCEPT, "application/json");
        let token = match &self.auth {
            Auth::None => None,
            Auth::Static(token) => Some(token.clone()),
            Auth::OAuth2(tokens) => Some(tokens.bearer().await?),
        };
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = self
            .client
            .request(request)
            .await
            .map_err(|source| PollError::Fetch {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(PollError::Status {
                url: url.to_owned(),
                status,
            });
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| PollError::Body {
                url: url.to_owned(),
                source,
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|source| PollError::Json {
            url: url.to_owned(),
            source,
        })
    }
}

/// The next page's URL after `page` of `source` (whose first page was `first`), or `None`
/// after the last page.
fn next_page(source: &HttpSource, page: &Json, first: &str) -> Option<String> {
    let next = source.next_page.as_ref()?;
    if let Some(pointer) = &next.url_field {
        let url = page.pointer(pointer)?.as_str().filter(|u| !u.is_empty())?;
        return Some(resolve(&source.url, url));
    }
    let cursor = match page.pointer(next.cursor_field.as_deref()?)? {
        Json::String(text) if !text.is_empty() => text.clone(),
        Json::Number(number) => number.to_string(),
        _ => return None,
    };
    Some(with_param(first, next.cursor_param.as_deref()?, &cursor))
}

/// Whether incremental value `a` comes after `b`: numbers by value, anything else as text
/// (RFC 3339 times in one format sort as text).
fn is_later(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a > b,
        _ => param_text(a) > param_text(b),
    }
}

fn param_text(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `url` with `name=value` added to its query.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let url = encode_uri(url);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}{}={}",
        encode_component(name),
        encode_component(value)
    )
}

/// Percent-encodes what a URI may not hold as is (spaces in a SOQL query, say), leaving
/// reserved characters and existing escapes alone.
fn encode_uri(url: &str) -> String {
    encode(url, |b| {
        b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
    })
}

/// Percent-encodes everything but unreserved characters.
fn encode_component(text: &str) -> String {
    encode(text, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if keep(byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `next` resolved against `base`: absolute, origin-relative (`/path`) or path-relative.
fn resolve(base: &str, next: &str) -> String {
    if next.starts_with("http://") || next.starts_with("https://") {
        return encode_uri(next);
    }
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    if next.starts_with('/') {
        return encode_uri(&format!("{}{next}", &base[..origin_end]));
    }
    let path = base[..base.find('?').unwrap_or(base.len())].to_owned();
    let directory_end = path
        .rfind('/')
        .filter(|i| *i >= origin_end)
        .map_or(path.len(), |i| i);
    encode_uri(&format!("{}/{next}", &path[..directory_end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_page_urls_resolve_against_the_source() {
        let base = "http://crm:8090/services/data/v59.0/queryAll?q=SELECT Id FROM Account";
        assert_eq!(
            resolve(base, "/services/data/v59.0/query/01g-2"),
            "http://crm:8090/services/data/v59.0/query/01g-2"
        );
        assert_eq!(
            resolve(base, "page2"),
            "http://crm:8090/services/data/v59.0/page2"
        );
        assert_eq!(resolve(base, "http://other/x"), "http://other/x");
    }

    #[test]
    fn the_incremental_value_is_added_encoded_to_the_query() {
        assert_eq!(
            with_param(
                "http://crm/q?q=SELECT Id FROM Account",
                "modifiedSince",
                "2027-01-15T08:00:00.000+01:00"
            ),
            "http://crm/q?q=SELECT%20Id%20FROM%20Account&modifiedSince=2027-01-15T08%3A00%3A00.000%2B01%3A00"
        );
    }

    #[test]
    fn pages_follow_a_next_url_or_a_cursor_until_there_is_none() {
        let by_url: HttpSource = serde_json::from_value(json!({
            "url": "http://api/v1/items?limit=2",
            "nextPage": {"urlField": "/next"}
        }))
        .unwrap();
        let first = "http://api/v1/items?limit=2";
        assert_eq!(
            next_page(&by_url, &json!({"next": "/v1/items?page=2"}), first).as_deref(),
            Some("http://api/v1/items?page=2")
        );
        assert_eq!(next_page(&by_url, &json!({"next": null}), first), None);

        let by_cursor: HttpSource = serde_json::from_value(json!({
            "url": "http://api/v1/items?limit=2",
            "nextPage": {"cursorField": "/meta/cursor", "cursorParam": "after"}
        }))
        .unwrap();
        assert_eq!(
            next_page(&by_cursor, &json!({"meta": {"cursor": "k 9"}}), first).as_deref(),
            Some("http://api/v1/items?limit=2&after=k%209")
        );
        assert_eq!(next_page(&by_cursor, &json!({"meta": {}}), first), None);
    }

    #[test]
    fn numbers_compare_by_value_and_times_as_text() {
        assert!(is_later(&json!(10), &json!(9)));
        assert!(is_later(
            &json!("2027-01-15T08:00:01.000Z"),
            &json!("2027-01-15T08:00:00.000Z")
        ));
    }
}
