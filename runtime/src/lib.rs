//! The DreamPipe runtime: one binary whose subcommand picks the role. Each role learns what to
//! do from its mounted config (the same YAML a user applies) and its environment; the runtime
//! never calls the Kubernetes API.

pub mod adapter;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod deadletters;
pub mod dev;
pub mod erase;
pub mod expr;
pub mod heartbeat;
pub mod nats;
pub mod problem;
pub mod projector;
pub mod query;
pub mod reachability;
pub mod receiver;
pub mod role;
pub mod simulator;
pub mod sql;
pub mod store;
pub mod trace;

pub use process::error_chain;
