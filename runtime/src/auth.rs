//! Bearer tokens: read from a mounted file (one per line) and/or the environment, compared in
//! constant time. With no token configured an API is open, and its role says so at start.

use std::collections::BTreeMap;
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
        self.is_open() || self.contains(authorization)
    }

    /// Whether an `Authorization` header value carries one of these tokens (never, when there
    /// are none).
    pub fn contains(&self, authorization: Option<&str>) -> bool {
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

/// Bearer tokens of a service that serves several namespaces: some read every namespace it
/// serves, others only the namespace they are scoped to (ADR 63).
#[derive(Clone, Debug, Default)]
pub struct ScopedTokens {
    /// Tokens that read every served namespace.
    every: Tokens,
    /// Tokens by the one namespace they read.
    scoped: BTreeMap<String, Tokens>,
}

/// What a request's token allows for the namespace it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// No token, or one this service does not know: 401.
    Unauthorized,
    /// A known token, scoped to other namespaces: 403.
    Forbidden,
}

/// Why scoped tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScopedTokensError {
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error("cannot list the token folder {path}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not named by a namespace: each file of the token folder holds the tokens of the namespace it is named after"
    )]
    NotANamespace { path: String },
}

impl ScopedTokens {
    /// `every` read all namespaces; each file of `folder` (a mounted Secret whose keys are
    /// namespace names) holds the tokens of the namespace it is named after. Entries starting
    /// with `.` are skipped: Kubernetes keeps its `..data` links there.
    pub fn load(every: Tokens, folder: Option<&Path>) -> Result<Self, ScopedTokensError> {
        let mut scoped = BTreeMap::new();
        if let Some(folder) = folder {
            let entries =
                std::fs::read_dir(folder).map_err(|source| ScopedTokensError::Folder {
                    path: folder.display().to_string(),
                    source,
                })?;
            for entry in entries {
                let entry = entry.map_err(|source| ScopedTokensError::Folder {
                    path: folder.display().to_string(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if name.starts_with('.') || path.is_dir() {
                    continue;
                }
                if !crds::validate::is_dns_label(&name) {
                    return Err(ScopedTokensError::NotANamespace {
                        path: path.display().to_string(),
                    });
                }
                scoped.insert(name, Tokens::load(Some(&path), None)?);
            }
        }
        Ok(ScopedTokens { every, scoped })
    }

    /// Whether anyone may read without a token.
    pub fn is_open(&self) -> bool {
        self.every.is_open() && self.scoped.values().all(Tokens::is_open)
    }

    /// The namespaces that have tokens of their own.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scoped.keys().map(String::as_str)
    }

    /// What `authorization` may do in `namespace`. Every token is compared, so the answer's
    /// timing does not tell which namespace a token belongs to.
    pub fn admit(&self, authorization: Option<&str>, namespace: &str) -> Admission {
        if self.is_open() {
            return Admission::Admitted;
        }
        let mut admitted = self.every.contains(authorization);
        let mut known = admitted;
        for (scope, tokens) in &self.scoped {
            let matches = tokens.contains(authorization);
            known |= matches;
            admitted |= matches && scope == namespace;
        }
        match (admitted, known) {
            (true, _) => Admission::Admitted,
            (false, true) => Admission::Forbidden,
            (false, false) => Admission::Unauthorized,
        }
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

    #[test]
    fn a_scoped_token_reads_its_namespace_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("team-a"), "token-a\n").unwrap();
        std::fs::write(dir.path().join("team-b"), "token-b\n").unwrap();
        std::fs::create_dir(dir.path().join("..2026_12_02")).unwrap();
        std::fs::write(dir.path().join("..data"), "kubelet's own").unwrap();
        let every = Tokens::load(None, Some("admin")).unwrap();
        let tokens = ScopedTokens::load(every, Some(dir.path())).unwrap();
        assert_eq!(tokens.scopes().collect::<Vec<_>>(), ["team-a", "team-b"]);
        let admit = |token: &str, namespace| tokens.admit(Some(token), namespace);
        assert_eq!(admit("Bearer token-a", "team-a"), Admission::Admitted);
        assert_eq!(admit("Bearer token-a", "team-b"), Admission::Forbidden);
        assert_eq!(admit("Bearer token-b", "team-b"), Admission::Admitted);
        assert_eq!(admit("Bearer admin", "team-b"), Admission::Admitted);
        assert_eq!(admit("Bearer admin", "other"), Admission::Admitted);
        assert_eq!(admit("Bearer token-c", "team-a"), Admission::Unauthorized);
        assert_eq!(tokens.admit(None, "team-a"), Admission::Unauthorized);
    }

    #[test]
    fn scoped_tokens_alone_close_the_service() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("team-a"), "token-a\n").unwrap();
        let tokens = ScopedTokens::load(Tokens::default(), Some(dir.path())).unwrap();
        assert!(!tokens.is_open());
        assert_eq!(tokens.admit(None, "team-a"), Admission::Unauthorized);
        let open = ScopedTokens::load(Tokens::default(), None).unwrap();
        assert_eq!(open.admit(None, "team-a"), Admission::Admitted);
    }

    #[test]
    fn a_token_file_not_named_by_a_namespace_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Team_A"), "token-a\n").unwrap();
        let error = ScopedTokens::load(Tokens::default(), Some(dir.path())).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("Team_A is not named by a namespace"),
            "{error}"
        );
    }
}
