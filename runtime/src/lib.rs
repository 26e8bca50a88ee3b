//! The DreamPipe runtime: one binary whose subcommand picks the role. Each role learns what to
//! do from its mounted config (the same YAML a user applies) and its environment; the runtime
//! never calls the Kubernetes API.

pub mod adapter;
pub mod auth;
pub mod config;
pub mod dev;
pub mod expr;
pub mod problem;
pub mod projector;
pub mod query;
pub mod receiver;
pub mod simulator;
pub mod store;

/// An error and its sources on one line, `outer: inner: innermost`, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
