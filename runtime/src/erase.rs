//! `dreampipe erase`: asks an Entity's receiver to erase one key (ADR 75), the same request
//! as `POST /v1/entities/{entity}/{key}/erasure`, for on-call and for `dreampipe dev`. Prints
//! the receiver's answer once the key's events are purged.

#![allow(
    clippy::print_stdout,
    reason = "a command line tool: the receiver's answer is its output"
)]

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header;
use tokio_util::sync::CancellationToken;

use crate::adapter::submit::http_client;
use crate::store::{Key, KeyError};

/// Flags of `dreampipe erase`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// Base URL of the Entity's receiver, e.g. `http://customer-receiver:8080`.
    #[arg(long, env = "DREAMPIPE_RECEIVER_URL")]
    pub receiver_url: String,
    /// File holding a bearer token the receiver accepts.
    #[arg(long, env = "DREAMPIPE_RECEIVER_TOKEN_FILE")]
    pub receiver_token_file: Option<PathBuf>,
    /// The Entity.
    #[arg(long)]
    pub entity: String,
    /// The key to erase.
    #[arg(long)]
    pub key: String,
    /// Who asks (recorded in the tombstone).
    #[arg(long)]
    pub requested_by: String,
    /// Why (recorded in the tombstone).
    #[arg(long)]
    pub reason: String,
}

/// Why an erasure could not be asked for or was refused.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("invalid key")]
    Key(#[source] KeyError),
    #[error("cannot read the token file {path}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid receiver URL {0:?}")]
    Url(String, #[source] hyper::http::uri::InvalidUri),
    #[error("cannot reach the receiver")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("cannot read the receiver's answer")]
    Body(#[source] hyper::Error),
    #[error("the receiver answered {status}: {body}")]
    Refused {
        status: hyper::StatusCode,
        body: String,
    },
}

/// Sends the erasure and prints the receiver's answer.
pub async fn run(args: Args, _shutdown: CancellationToken) -> Result<(), EraseError> {
    let Args {
        receiver_url,
        receiver_token_file,
        entity,
        key,
        requested_by,
        reason,
    } = args;
    let key = Key::new(key).map_err(EraseError::Key)?;
    let token = match receiver_token_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|source| EraseError::Token {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let text = format!(
        "{}/v1/entities/{}/{}/erasure",
        receiver_url.trim_end_matches('/'),
        path_segment(&entity),
        path_segment(&key.to_string()),
    );
    let url: hyper::Uri = text.parse().map_err(|e| EraseError::Url(text, e))?;
    let body = serde_json::json!({"requestedBy": requested_by, "reason": reason}).to_string();
    let mut request = hyper::Request::post(url).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let response = http_client()
        .request(request)
        .await
        .map_err(EraseError::Connect)?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(EraseError::Body)?
        .to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        return Err(EraseError::Refused { status, body });
    }
    println!("{body}");
    Ok(())
}

/// `text` as one URL path segment: unreserved characters as they are, every other byte
/// percent-encoded.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_becomes_one_percent_encoded_path_segment() {
        assert_eq!(path_segment("c-1"), "c-1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
