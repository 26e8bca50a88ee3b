//! The status table `dreampipe dev` prints: each role's own `/v1/status`, read over HTTP.

use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::role::Role;

/// GETs `path` on a local port; `None` when the role does not answer (yet).
async fn get(port: u16, path: &str) -> Option<(u16, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}{path}").parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// One line per role: ready, and the figures its status reports.
pub async fn table(roles: &[(Role, &str, u16)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<10} {:<24} {:<6} figures",
        "role", "name", "ready"
    );
    for (kind, name, port) in roles {
        let ready = match get(*port, "/readyz").await {
            Some((200, _)) => "yes",
            Some(_) => "no",
            None => "down",
        };
        let status = get(*port, "/v1/status")
            .await
            .map(|(_, body)| body)
            .unwrap_or(Value::Null);
        let figures = match *kind {
            Role::Receiver => format!(
                "events {}, keys {}, last event {}",
                status["events"],
                status["keys"],
                status["lastEventTime"].as_str().unwrap_or("-")
            ),
            Role::Projector => {
                let live = status["generations"]
                    .as_array()
                    .and_then(|gs| {
                        gs.iter()
                            .find(|g| g["state"] == "live")
                            .or_else(|| gs.first())
                    })
                    .cloned()
                    .unwrap_or(Value::Null);
                format!(
                    "view {}, phase {}, lag {}, generation {}, dead letters {}",
                    status["view"].as_str().unwrap_or("-"),
                    live["phase"].as_str().unwrap_or("-"),
                    live["lag"],
                    status["activeGeneration"].as_str().unwrap_or("-"),
                    live["deadLetters"],
                )
            }
            Role::Adapter => format!(
                "read {}, submitted {}, changed {}, unchanged {}, rejected {}",
                status["recordsRead"],
                status["submitted"],
                status["changed"],
                status["unchanged"],
                status["rejected"]
            ),
            Role::Query => String::new(),
        };
        let _ = writeln!(out, "{kind:<10} {name:<24} {ready:<6} {figures}");
    }
    out
}
