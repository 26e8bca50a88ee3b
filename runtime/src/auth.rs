//! Bearer tokens: read from a mounted file (one per line) and/or the environment, compared in
//! constant time. With no token configured an API is open, and its role says so at start.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

/// Middleware: lets a request through when it carries an accepted token, else answers 401.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if tokens.admits(authorization) {
        next.run(request).await
    } else {
        crate::problem::respond(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required".to_owned(),
            Vec::new(),
        )
    }
}

/// Where a service's accepted bearer tokens come from (flattened into its flags).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct TokenArgs {
    /// File of accepted bearer tokens, one per line (a mounted Secret).
    #[arg(long, env = "DREAMPIPE_TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Accepted bearer tokens, comma-separated.
    #[arg(long, env = "DREAMPIPE_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,
}

impl TokenArgs {
    /// The tokens these flags name.
    pub fn load(&self) -> Result<Tokens, TokensError> {
        Tokens::load(self.tokens_file.as_deref(), self.tokens.as_deref())
    }
}

/// The accepted bearer tokens; empty means open.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

/// Why the tokens could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read bearer tokens from {path}")]
pub struct TokensError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Tokens {
    /// Tokens from `file` (one per line; blank lines and `#` comments skipped) and from
    /// `inline` (comma-separated).
    pub fn load(file: Option<&Path>, inline: Option<&str>) -> Result<Self, TokensError> {
        let mut tokens = Vec::new();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|source| TokensError {
                path: file.display().to_string(),
                source,
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if let Some(inline) = inline {
            tokens.extend(
                inline
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(Tokens(tokens.into_iter().map(String::into_bytes).collect()))
    }

    /// Whether anyone may submit without a token.
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an `Authorization` header value carries an accepted token. Every configured
    /// token is compared, in constant time, so timing does not reveal which one nearly matched.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(presented) = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return false;
        };
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |any, token| {
                any | token.as_slice().ct_eq(presented.as_bytes())
            })
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_file_lines_and_inline_lists() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "# ingest tokens\nalpha\n\n beta \n").unwrap();
        let tokens = Tokens::load(Some(&file), Some("gamma, ")).unwrap();
        for ok in ["Bearer alpha", "Bearer beta", "Bearer gamma"] {
            assert!(tokens.admits(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some("Bearer alph"),
            Some("alpha"),
            Some("Basic alpha"),
            Some("Bearer "),
        ] {
            assert!(!tokens.admits(bad), "{bad:?}");
        }
    }

    #[test]
    fn no_tokens_means_open() {
        let tokens = Tokens::load(None, None).unwrap();
        assert!(tokens.is_open());
        assert!(tokens.admits(None));
    }

    #[test]
    fn an_unreadable_token_file_is_an_error_naming_it() {
        let error = Tokens::load(Some(Path::new("/nonexistent/token")), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read bearer tokens from /nonexistent/token"
        );
    }
}
