//! DreamPipe's custom resources: `Entity`, `Adapter`, `Projection` and `Erasure` (group `dreampipe.io`,
//! version `v1alpha1`), one pure validation function per kind, and the pure contracts the
//! operator and the runtime both compute: stream names, JSON pointers and the partition hash.
//!
//! These types are the source of truth: the CRD YAML in `crds/yaml/` is generated from them
//! (`cargo run -p crds --bin crdgen`) and a test fails when it is stale. This crate does no IO.

pub mod adapter;
pub mod common;
pub mod entity;
pub mod erasure;
pub mod generate;
pub mod hash;
pub mod pointer;
pub mod projection;
pub mod report;
pub mod validate;

pub use adapter::{Adapter, AdapterSpec, AdapterStatus};
pub use common::{Condition, ConditionStatus, PodOverlay, SecretKeyRef};
pub use entity::{Entity, EntitySpec, EntityStatus, stream_name};
pub use erasure::{Erasure, ErasureSpec, ErasureStatus};
pub use projection::{Projection, ProjectionSpec, ProjectionStatus};
pub use validate::{Invalid, Problem};

/// The API group of every DreamPipe resource.
pub const GROUP: &str = "dreampipe.io";
/// The API version of every DreamPipe resource.
pub const VERSION: &str = "v1alpha1";
