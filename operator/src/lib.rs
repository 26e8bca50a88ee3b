//! The DreamPipe operator: Entity, Adapter and Projection reconciled into Deployments of the
//! runtime image. A reconcile is a pipeline: [`validate`] (pure: a [`validate::Valid`] value
//! or a rejection) -> [`build`] (pure, accepts only valid values) -> [`apply`] (server-side
//! apply, one field manager) -> [`status`] (pure, from the children, their pods and the
//! runtime's `/v1/status`). [`controller::driver`] runs the steps every kind shares, and
//! [`leader`] lets only one replica run them. Only [`apply`], [`controller`], [`events`],
//! [`leader`], [`probe`] and [`streams`] do IO.

pub mod apply;
pub mod autoscale;
pub mod build;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod erasures;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod probe;
pub mod settings;
pub mod status;
pub mod streams;
pub mod validate;
