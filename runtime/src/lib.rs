//! The DreamPipe runtime: one binary whose subcommand picks the role. Each role learns what to
//! do from its mounted config (the same YAML a user applies) and its environment; the runtime
//! never calls the Kubernetes API.

pub mod config;
pub mod expr;
pub mod projector;
pub mod store;
