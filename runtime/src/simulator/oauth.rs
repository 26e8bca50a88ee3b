//! The simulated CRM's OAuth2 token endpoint, shaped like Salesforce's
//! `POST /services/oauth2/token` (form-encoded): the client credentials and refresh token
//! grants, the client authenticated by HTTP Basic or by `client_id`/`client_secret` in the
//! body, answers `{access_token, token_type: Bearer, instance_url, issued_at, expires_in}` or
//! RFC 6749's `{error, error_description}` with 400 (401 for a bad client). Access tokens
//! expire after the configured lifetime. `POST /simulator/revoke` revokes every token and the
//! refresh token, for tests; `GET /simulator/oauth` says what was issued and refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use super::http::Simulator;

/// The one connected app the simulator knows.
#[derive(Clone, Debug)]
pub struct ConnectedApp {
    pub client_id: String,
    pub client_secret: String,
    /// A refresh token the app was granted, if the refresh token grant is offered.
    pub refresh_token: Option<String>,
    /// How long an access token is good for.
    pub lifetime: Duration,
}

/// Tokens issued and what was refused.
#[derive(Debug, Default)]
pub struct Issued {
    tokens: HashMap<String, Instant>,
    next: u64,
    refresh_revoked: bool,
    pub requests: u64,
    pub unauthorized: u64,
}

impl Issued {
    /// Whether `token` was issued and has not expired or been revoked.
    pub fn valid(&mut self, token: &str) -> bool {
        let now = Instant::now();
        self.tokens.retain(|_, expires| *expires > now);
        self.tokens.contains_key(token)
    }
}

/// The OAuth2 side of the simulator's state.
#[derive(Debug)]
pub struct OAuth {
    pub app: ConnectedApp,
    pub issued: Mutex<Issued>,
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

fn refused(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The client's id and secret, from HTTP Basic or the body.
fn client(headers: &HeaderMap, request: &TokenRequest) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            let (id, secret) = v.split_once(':')?;
            // RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
            Some((form_urlencoded_decode(id), form_urlencoded_decode(secret)))
        });
    basic.or_else(|| Some((request.client_id.clone()?, request.client_secret.clone()?)))
}

/// `text` with form-urlencoding undone (RFC 6749 §2.3.1 encodes Basic credentials).
fn form_urlencoded_decode(text: &str) -> String {
    form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// `POST /services/oauth2/token`.
pub async fn token(
    State(simulator): State<std::sync::Arc<Simulator>>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    let Some(oauth) = simulator.oauth.as_ref() else {
        return refused(StatusCode::NOT_FOUND, "unsupported", "no connected app");
    };
    let mut issued = oauth.issued.lock().expect("oauth lock");
    issued.requests += 1;
    match client(&headers, &request) {
        Some((id, secret)) if id == oauth.app.client_id && secret == oauth.app.client_secret => {}
        _ => {
            return refused(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "invalid client credentials",
            );
        }
    }
    match request.grant_type.as_str() {
        "client_credentials" => {}
        "refresh_token" => {
            let known = oauth.app.refresh_token.as_deref();
            if issued.refresh_revoked
                || known.is_none()
                || request.refresh_token.as_deref() != known
            {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "expired access/refresh token",
                );
            }
        }
        other => {
            return refused(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant type {other} not supported"),
            );
        }
    }
    issued.next += 1;
    let token = format!("00DSIM!{:016}", issued.next);
    issued
        .tokens
        .insert(token.clone(), Instant::now() + oauth.app.lifetime);
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "instance_url": "http://crm-simulator:8090",
        "issued_at": jiff::Timestamp::now().as_millisecond().to_string(),
        "expires_in": oauth.app.lifetime.as_secs().max(1),
    }))
    .into_response()
}

/// `POST /simulator/revoke`: every access token and the refresh token stop working.
pub async fn revoke(State(simulator): State<std::sync::Arc<Simulator>>) -> Response {
    if let Some(oauth) = simulator.oauth.as_ref() {
        let mut issued = oauth.issued.lock().expect("oauth lock");
        issued.tokens.clear();
        issued.refresh_revoked = true;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /simulator/oauth`: tokens issued, token requests, and API calls refused with 401.
pub async fn figures(State(simulator): State<std::sync::Arc<Simulator>>) -> Response {
    let issued = simulator
        .oauth
        .as_ref()
        .map(|o| o.issued.lock().expect("oauth lock"));
    match issued {
        Some(issued) => axum::Json(json!({
            "issued": issued.next,
            "requests": issued.requests,
            "unauthorized": issued.unauthorized,
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
