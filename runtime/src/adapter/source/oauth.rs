//! OAuth2 access tokens for the `http` source (issue 18, ADR 78), with the `oauth2` crate over
//! the adapter's own HTTP client: a client credentials or refresh token grant against the
//! token endpoint, the token kept until `refreshBefore` ahead of its expiry and then replaced,
//! and dropped at once when the API answers 401 (a token revoked early).

use std::time::{Duration, Instant};

use crds::adapter::{OAuth2, OAuth2Grant};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use oauth2::basic::{BasicClient, BasicErrorResponse};
use oauth2::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};
use tokio::sync::Mutex;

use super::super::submit::HttpClient;
use super::{Setup, SetupError};

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("the OAuth2 token endpoint {url} refused the {grant} grant: {reason}")]
    Refused {
        url: String,
        grant: &'static str,
        reason: String,
    },
    #[error("asking the OAuth2 token endpoint {url} for a token failed")]
    Request {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The transport failure of one token request.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the token endpoint")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("cannot read the token endpoint's answer")]
    Body(#[source] hyper::Error),
}

/// A token and when it stops being good.
#[derive(Clone, Debug)]
struct Held {
    token: String,
    expires: Option<Instant>,
}

/// Where the `http` source gets its bearer tokens.
#[derive(Debug)]
pub struct OAuthTokens {
    client: Client,
    token_url: String,
    grant: OAuth2Grant,
    scopes: Vec<String>,
    refresh_before: Duration,
    http: HttpClient,
    /// The refresh token in use: the Secret's, or a newer one the endpoint rotated to.
    refresh_token: Mutex<Option<String>>,
    current: Mutex<Option<Held>>,
}

impl OAuthTokens {
    /// The token source `spec` asks for, its credentials read from their Secrets.
    pub fn new(spec: &OAuth2, setup: &Setup<'_>) -> Result<Self, SetupError> {
        let token_url =
            TokenUrl::new(spec.token_url.clone()).map_err(|error| SetupError::TokenUrl {
                url: spec.token_url.clone(),
                reason: error.to_string(),
            })?;
        let client = BasicClient::new(ClientId::new(setup.secret(&spec.client_id_ref)?))
            .set_client_secret(ClientSecret::new(setup.secret(&spec.client_secret_ref)?))
            .set_token_uri(token_url);
        let refresh_token = match (&spec.grant, &spec.refresh_token_ref) {
            (OAuth2Grant::RefreshToken, Some(reference)) => Some(setup.secret(reference)?),
            _ => None,
        };
        Ok(OAuthTokens {
            client,
            token_url: spec.token_url.clone(),
            grant: spec.grant,
            scopes: spec.scopes.clone(),
            refresh_before: super::duration(
                "spec.source.http.oauth2.refreshBefore",
                &spec.refresh_before,
            )?,
            http: setup.client.clone(),
            refresh_token: Mutex::new(refresh_token),
            current: Mutex::new(None),
        })
    }

    /// A token good for at least `refreshBefore` more, asked for when the one held is not.
    pub async fn bearer(&self) -> Result<String, OAuthError> {
        let mut current = self.current.lock().await;
        if let Some(held) = current.as_ref()
            && held
                .expires
                .is_none_or(|expires| Instant::now() + self.refresh_before < expires)
        {
            return Ok(held.token.clone());
        }
        let held = self.request().await?;
        tracing::info!(
            url = %self.token_url,
            expires_in = ?held.expires.map(|e| e.saturating_duration_since(Instant::now())),
            "OAuth2 access token obtained"
        );
        *current = Some(held.clone());
        Ok(held.token)
    }

    /// Forgets the token held: the API refused it (revoked, or expired early).
    pub async fn expire(&self) {
        *self.current.lock().await = None;
    }

    async fn request(&self) -> Result<Held, OAuthError> {
        let http = self.http.clone();
        let call = move |request: oauth2::HttpRequest| {
            let http = http.clone();
            async move { send(&http, request).await }
        };
        let scopes = self.scopes.iter().cloned().map(Scope::new);
        let (grant, answer) = match self.grant {
            OAuth2Grant::ClientCredentials => (
                "client_credentials",
                self.client
                    .exchange_client_credentials()
                    .add_scopes(scopes)
                    .request_async(&call)
                    .await,
            ),
            OAuth2Grant::RefreshToken => {
                let refresh = self.refresh_token.lock().await.clone().unwrap_or_default();
                (
                    "refresh_token",
                    self.client
                        .exchange_refresh_token(&RefreshToken::new(refresh))
                        .add_scopes(scopes)
                        .request_async(&call)
                        .await,
                )
            }
        };
        let answer = answer.map_err(|error| self.failed(grant, error))?;
        if let Some(rotated) = answer.refresh_token() {
            *self.refresh_token.lock().await = Some(rotated.secret().clone());
        }
        Ok(Held {
            token: answer.access_token().secret().clone(),
            expires: answer
                .expires_in()
                .map(|lifetime| Instant::now() + lifetime),
        })
    }

    fn failed(
        &self,
        grant: &'static str,
        error: RequestTokenError<TransportError, BasicErrorResponse>,
    ) -> OAuthError {
        let url = self.token_url.clone();
        match error {
            RequestTokenError::ServerResponse(response) => OAuthError::Refused {
                url,
                grant,
                reason: match response.error_description() {
                    Some(description) => format!("{}: {description}", response.error()),
                    None => response.error().to_string(),
                },
            },
            RequestTokenError::Parse(error, _) => OAuthError::Refused {
                url,
                grant,
                reason: format!("its answer is not a token response: {error}"),
            },
            RequestTokenError::Other(reason) => OAuthError::Refused { url, grant, reason },
            RequestTokenError::Request(source) => OAuthError::Request {
                url,
                source: Box::new(source),
            },
        }
    }
}

/// One token request over the adapter's HTTP client.
async fn send(
    http: &HttpClient,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TransportError> {
    let (parts, body) = request.into_parts();
    let request = hyper::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let response = http
        .request(request)
        .await
        .map_err(TransportError::Connect)?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(TransportError::Body)?
        .to_bytes();
    Ok(oauth2::HttpResponse::from_parts(parts, body.to_vec()))
}
