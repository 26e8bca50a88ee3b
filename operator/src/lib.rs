//! The DreamPipe operator: Entity, Adapter and Projection reconciled into Deployments of the
//! runtime image. A reconcile is a pipeline: `validate` (pure, `crds::*::validate_*`) ->
//! [`build`] (pure) -> [`apply`] (server-side apply, one field manager) -> [`status`].

pub mod build;
pub mod names;
pub mod settings;
