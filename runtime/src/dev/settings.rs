//! Each role's settings (its `Args`) as `dev` starts it. They hold what the operator's builders
//! (operator/src/build/) put in a role's pod, from the same inputs; `tests/roles.rs` parses the
//! pods the operator builds for the examples and checks that they give these very values.

use std::path::PathBuf;

use crate::auth::TokenArgs;
use crate::config::name_of;
use crate::role::{ResourceArgs, ServiceArgs};

/// The query service of `service.namespace`, reading views from `database_url`.
pub fn query(
    service: ServiceArgs,
    database_url: Option<String>,
    dead_letters_database_url: Option<String>,
) -> crate::query::Args {
    crate::query::Args {
        service,
        // dev runs one namespace's folder: the paths under /v1/namespaces/{ns} serve it too.
        served: Default::default(),
        database_url,
        dead_letters_database_url,
        auth: TokenArgs::default(),
        scoped_tokens_dir: None,
        // The console is dev's window on the pipeline (ADR 80).
        console: true,
    }
}

/// The receiver of `entity`, accepting the tokens `auth` names.
pub fn receiver(
    entity: &crds::Entity,
    resource: ResourceArgs,
    auth: TokenArgs,
) -> crate::receiver::Args {
    crate::receiver::Args {
        resource,
        entity: Some(name_of(&entity.metadata).to_owned()),
        auth,
    }
}

/// Where a projector keeps its view and who it is among the Projection's replicas.
#[derive(Clone, Debug)]
pub struct ProjectorPlace {
    pub database_url: String,
    pub replica_id: Option<String>,
    pub reader_role: Option<String>,
    /// Login roles made members of the reader role.
    pub reader_members: Vec<String>,
}

/// A projector of `projection`.
pub fn projector(
    projection: &crds::Projection,
    resource: ResourceArgs,
    place: ProjectorPlace,
) -> crate::projector::command::ProjectorArgs {
    let ProjectorPlace {
        database_url,
        replica_id,
        reader_role,
        reader_members,
    } = place;
    crate::projector::command::ProjectorArgs {
        resource,
        projection: Some(name_of(&projection.metadata).to_owned()),
        database_url,
        replica_id,
        reader_role,
        reader_members,
        drop: false,
    }
}

/// Where an adapter submits and finds its Secrets.
#[derive(Clone, Debug)]
pub struct AdapterPlace {
    pub receiver_url: String,
    pub receiver_token_file: Option<PathBuf>,
    pub secrets_dir: PathBuf,
}

/// The adapter `adapter`.
pub fn adapter(
    adapter: &crds::Adapter,
    resource: ResourceArgs,
    place: AdapterPlace,
) -> crate::adapter::Args {
    let AdapterPlace {
        receiver_url,
        receiver_token_file,
        secrets_dir,
    } = place;
    crate::adapter::Args {
        resource,
        adapter: Some(name_of(&adapter.metadata).to_owned()),
        receiver_url,
        receiver_token_file,
        secrets_dir,
    }
}
