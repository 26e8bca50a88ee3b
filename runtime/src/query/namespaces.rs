//! Which namespaces the query service serves, and the readers of each (ADR 63): entity streams
//! `dp_<namespace>_<entity>`, views and dead letters in schema `dp_<namespace>` (ADR 60).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use super::QueryError;
use super::deadletters::DeadLetters;
use super::entities::{Entities, truncate};
use super::views::Views;

/// Namespaces whose readers are kept open at most; beyond it (only possible when every
/// namespace is served) the cache starts again rather than growing without bound.
const OPEN_NAMESPACES: usize = 1024;

/// The namespaces a query service serves besides its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServedNamespaces {
    /// These, and the service's own.
    Listed(BTreeSet<String>),
    /// Any namespace: its entities, views and dead letters are found by name.
    Every,
}

impl Default for ServedNamespaces {
    fn default() -> Self {
        ServedNamespaces::Listed(BTreeSet::new())
    }
}

impl std::str::FromStr for ServedNamespaces {
    type Err = String;

    /// `*` for every namespace, or a comma-separated list of namespace names.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(ServedNamespaces::Every);
        }
        let mut listed = BTreeSet::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !crds::validate::is_dns_label(name) {
                return Err(format!(
                    "{name:?} is not a namespace name (a DNS label); list namespaces separated by commas, or give * for every namespace"
                ));
            }
            listed.insert(name.to_owned());
        }
        Ok(ServedNamespaces::Listed(listed))
    }
}

/// What the query handlers of one namespace read from.
#[derive(Debug)]
pub struct NamespaceReaders {
    pub entities: Entities,
    pub views: Option<Views>,
    /// Dead letters, when the service was given a database URL for them.
    pub dead_letters: Option<DeadLetters>,
}

/// The readers of every namespace the service serves, opened on first use.
#[derive(Debug)]
pub struct Readers {
    client: async_nats::Client,
    views: Option<PgPool>,
    dead_letters: Option<PgPool>,
    own: String,
    served: ServedNamespaces,
    open: Mutex<HashMap<String, Arc<NamespaceReaders>>>,
    /// The live pipeline from the replicas' heartbeats, when followed.
    pipeline: Option<Arc<crate::console::Console>>,
}

impl Readers {
    /// Readers of `own` namespace only: entities through `client`; no views, no dead letters.
    pub fn new(client: async_nats::Client, own: impl Into<String>) -> Self {
        Readers {
            client,
            views: None,
            dead_letters: None,
            own: own.into(),
            served: ServedNamespaces::default(),
            open: Mutex::new(HashMap::new()),
            pipeline: None,
        }
    }

    /// `/v1/pipeline` answers from `console`.
    pub fn with_pipeline(mut self, console: Arc<crate::console::Console>) -> Self {
        self.pipeline = Some(console);
        self
    }

    /// The namespace's live pipeline, when followed here.
    pub fn pipeline(
        &self,
        namespace: &str,
    ) -> Result<crate::console::pipeline::PipelineView, QueryError> {
        if !self.serves(namespace) {
            return Err(QueryError::UnknownNamespace(truncate(namespace)));
        }
        match &self.pipeline {
            Some(console) => Ok(console.view(namespace)),
            None => Err(QueryError::NotFound(
                "this query service does not follow the pipeline".to_owned(),
            )),
        }
    }

    /// Views read through `pool` (best the analysts' role: it reads views and nothing else).
    pub fn with_views(mut self, pool: PgPool) -> Self {
        self.views = Some(pool);
        self
    }

    /// Dead letters read through `pool`, a role that may read `dp_dead_letters`.
    pub fn with_dead_letters(mut self, pool: PgPool) -> Self {
        self.dead_letters = Some(pool);
        self
    }

    /// Serves `served` besides the service's own namespace.
    pub fn serving(mut self, served: ServedNamespaces) -> Self {
        self.served = served;
        self
    }

    /// The namespace paths without one name.
    pub fn own_namespace(&self) -> &str {
        &self.own
    }

    pub fn views_pool(&self) -> Option<&PgPool> {
        self.views.as_ref()
    }

    /// Whether `namespace` is served here.
    pub fn serves(&self, namespace: &str) -> bool {
        namespace == self.own
            || match &self.served {
                ServedNamespaces::Every => crds::validate::is_dns_label(namespace),
                ServedNamespaces::Listed(listed) => listed.contains(namespace),
            }
    }

    /// The readers of `namespace`, or `UnknownNamespace` when it is not served here.
    pub fn of(&self, namespace: &str) -> Result<Arc<NamespaceReaders>, QueryError> {
        if !self.serves(namespace) {
            return Err(QueryError::UnknownNamespace(truncate(namespace)));
        }
        let mut open = self.open.lock().expect("namespace readers lock");
        if let Some(readers) = open.get(namespace) {
            return Ok(readers.clone());
        }
        if open.len() >= OPEN_NAMESPACES {
            open.clear();
        }
        let readers = Arc::new(NamespaceReaders {
            entities: Entities::new(self.client.clone(), namespace.to_owned()),
            views: self
                .views
                .clone()
                .map(|pool| Views::new(pool, crate::sql::Schema::of_namespace(namespace))),
            dead_letters: self
                .dead_letters
                .clone()
                .map(|pool| DeadLetters::new(pool, namespace.to_owned())),
        });
        open.insert(namespace.to_owned(), readers.clone());
        Ok(readers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_namespaces_are_a_list_or_every_one() {
        assert_eq!("*".parse(), Ok(ServedNamespaces::Every));
        assert_eq!(
            " team-a, team-b ,".parse(),
            Ok(ServedNamespaces::Listed(BTreeSet::from([
                "team-a".to_owned(),
                "team-b".to_owned()
            ])))
        );
        let error = "team-a,Team_B".parse::<ServedNamespaces>().unwrap_err();
        assert!(
            error.contains("\"Team_B\" is not a namespace name"),
            "{error}"
        );
    }
}
