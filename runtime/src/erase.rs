//! `dreampipe erase`: asks an Entity's receiver to erase one key (ADR 75), the same request
//! as `POST /v1/entities/{entity}/{key}/erasure`, for on-call and for `dreampipe dev`. Prints
//! the receiver's answer once the key's events are purged. `-f erasure.yaml` takes the key
//! from an `Erasure` resource, the file the operator carries out on Kubernetes (ADR 76).

#![allow(
    clippy::print_stdout,
    reason = "a command line tool: the receiver's answer is its output"
)]

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header;
use tokio_util::sync::CancellationToken;

use crds::Erasure;
use crds::erasure::{ErasureSpec, validate_erasure};

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
    /// An `Erasure` resource (YAML) to carry out: the same file `kubectl apply` takes, in
    /// place of the four flags below.
    #[arg(long, short = 'f', conflicts_with_all = ["entity", "key", "requested_by", "reason"])]
    pub file: Option<PathBuf>,
    /// The Entity.
    #[arg(long, required_unless_present = "file")]
    pub entity: Option<String>,
    /// The key to erase.
    #[arg(long, required_unless_present = "file")]
    pub key: Option<String>,
    /// Who asks (recorded in the tombstone).
    #[arg(long, required_unless_present = "file")]
    pub requested_by: Option<String>,
    /// Why (recorded in the tombstone).
    #[arg(long, required_unless_present = "file")]
    pub reason: Option<String>,
}

/// What is erased: from the flags or from an `Erasure` file.
fn request(args: &Args) -> Result<ErasureSpec, EraseError> {
    let Some(path) = &args.file else {
        let flag = |value: &Option<String>| value.clone().unwrap_or_default();
        return Ok(ErasureSpec {
            entity: flag(&args.entity),
            key: flag(&args.key),
            requested_by: flag(&args.requested_by),
            reason: flag(&args.reason),
        });
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EraseError::File {
        file: file.clone(),
        source,
    })?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|error| EraseError::NotAnErasure {
            file: file.clone(),
            reason: error.to_string(),
        })?;
    let api_version = format!("{}/{}", crds::GROUP, crds::VERSION);
    if value.get("kind").and_then(|k| k.as_str()) != Some("Erasure")
        || value.get("apiVersion").and_then(|v| v.as_str()) != Some(api_version.as_str())
    {
        return Err(EraseError::NotAnErasure {
            file,
            reason: format!("its apiVersion and kind are not {api_version} and Erasure"),
        });
    }
    let erasure: Erasure =
        serde_yaml::from_value(value).map_err(|error| EraseError::NotAnErasure {
            file: file.clone(),
            reason: error.to_string(),
        })?;
    validate_erasure(&erasure).map_err(|invalid| EraseError::Invalid { file, invalid })?;
    Ok(erasure.spec)
}

/// Why an erasure could not be asked for or was refused.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("invalid key")]
    Key(#[source] KeyError),
    #[error("cannot read {file}")]
    File {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is not an Erasure resource: {reason}")]
    NotAnErasure { file: String, reason: String },
    #[error("{file}")]
    Invalid {
        file: String,
        #[source]
        invalid: crds::Invalid,
    },
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
    let ErasureSpec {
        entity,
        key,
        requested_by,
        reason,
    } = request(&args)?;
    let Args {
        receiver_url,
        receiver_token_file,
        ..
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
