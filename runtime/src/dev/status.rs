//! The status table `dreampipe dev` prints: each role's own `/v1/status`, read over HTTP.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

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

/// The status table between prints: each role's last count, so throughput is the change
/// since the previous print over the time between them.
#[derive(Debug, Default)]
pub struct Table {
    previous: HashMap<String, Sample>,
}

/// A count (events stored, events applied, records read), what it counts (a projector's
/// generation: a swap starts another count), and when it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub count: u64,
    pub of: String,
    pub at: Instant,
}

impl Table {
    /// One line per role: ready, and the figures its status reports.
    pub async fn render(&mut self, roles: &[(Role, &str, u16)]) -> String {
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
            let id = format!("{kind}/{name}");
            let (figures, sample) = figures(*kind, &status, self.previous.get(&id), Instant::now());
            match sample {
                Some(sample) => self.previous.insert(id, sample),
                None => self.previous.remove(&id),
            };
            let _ = writeln!(out, "{kind:<10} {name:<24} {ready:<6} {figures}");
        }
        out
    }
}

/// Events (or records) per second from `previous` to `now`; `-` before a second sample, or
/// when the count went back (the role restarted).
fn throughput(previous: Option<&Sample>, now: &Sample) -> String {
    match previous {
        Some(before) if before.of == now.of && now.count >= before.count && now.at > before.at => {
            let seconds = (now.at - before.at).as_secs_f64();
            format!("{:.1}/s", (now.count - before.count) as f64 / seconds)
        }
        _ => "-".to_owned(),
    }
}

/// A role's figures from its `/v1/status` answer, and the count throughput is measured on.
/// Pure.
pub fn figures(
    kind: Role,
    status: &Value,
    previous: Option<&Sample>,
    now: Instant,
) -> (String, Option<Sample>) {
    let sample = |count: &Value, of: &Value| {
        count.as_u64().map(|count| Sample {
            count,
            of: of.as_str().unwrap_or_default().to_owned(),
            at: now,
        })
    };
    let rate = |sample: &Option<Sample>| {
        sample
            .as_ref()
            .map_or("-".to_owned(), |s| throughput(previous, s))
    };
    match kind {
        Role::Receiver => {
            let sample = sample(&status["events"], &Value::Null);
            let figures = format!(
                "events {}, keys {}, appended {}, last event {}",
                status["events"],
                status["keys"],
                rate(&sample),
                status["lastEventTime"].as_str().unwrap_or("-")
            );
            (figures, sample)
        }
        Role::Projector => {
            let serving = status["generations"]
                .as_array()
                .and_then(|gs| {
                    let named = |field: &str| {
                        status[field]
                            .as_str()
                            .and_then(|name| gs.iter().find(|g| g["generation"] == name))
                    };
                    named("activeGeneration")
                        .or_else(|| named("buildingGeneration"))
                        .or_else(|| gs.first())
                })
                .cloned()
                .unwrap_or(Value::Null);
            let sample = sample(&serving["events"], &serving["generation"]);
            let lag_seconds = status["lagSeconds"]
                .as_f64()
                .map_or("-".to_owned(), |s| format!("{s:.1} s"));
            let figures = format!(
                "view {}, phase {}, lag {} events / {}, applied {}, generation {}, dead letters {}",
                status["view"].as_str().unwrap_or("-"),
                serving["phase"].as_str().unwrap_or("-"),
                serving["lag"],
                lag_seconds,
                rate(&sample),
                status["activeGeneration"].as_str().unwrap_or("-"),
                serving["deadLetters"],
            );
            (figures, sample)
        }
        Role::Adapter => {
            let sample = sample(&status["recordsRead"], &Value::Null);
            let figures = format!(
                "read {} ({}), submitted {}, changed {}, unchanged {}, rejected {}",
                status["recordsRead"],
                rate(&sample),
                status["submitted"],
                status["changed"],
                status["unchanged"],
                status["rejected"]
            );
            (figures, sample)
        }
        Role::Query => (String::new(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn projector(events: u64, lag: u64, lag_seconds: f64) -> Value {
        json!({
            "view": "customers",
            "activeGeneration": "g1",
            "lagSeconds": lag_seconds,
            "generations": [
                {"generation": "g0", "state": "retired", "phase": "Live", "lag": 0, "events": 5, "deadLetters": 0},
                {"generation": "g1", "state": "live", "phase": "Live", "lag": lag, "events": events, "deadLetters": 2}
            ]
        })
    }

    #[test]
    fn a_projector_shows_its_lag_in_seconds_and_events_applied_per_second() {
        let start = Instant::now();
        let (first, sample) = figures(Role::Projector, &projector(100, 40, 12.34), None, start);
        assert_eq!(
            first,
            "view customers, phase Live, lag 40 events / 12.3 s, applied -, generation g1, dead letters 2"
        );
        let (second, _) = figures(
            Role::Projector,
            &projector(150, 0, 0.0),
            sample.as_ref(),
            start + Duration::from_secs(2),
        );
        assert_eq!(
            second,
            "view customers, phase Live, lag 0 events / 0.0 s, applied 25.0/s, generation g1, dead letters 2"
        );
    }

    #[test]
    fn a_swap_to_another_generation_shows_no_rate_until_it_is_sampled_twice() {
        let start = Instant::now();
        let (_, sample) = figures(Role::Projector, &projector(100, 0, 0.0), None, start);
        let mut swapped = projector(30, 0, 0.0);
        swapped["activeGeneration"] = json!("g2");
        swapped["generations"][1]["generation"] = json!("g2");
        let (line, _) = figures(
            Role::Projector,
            &swapped,
            sample.as_ref(),
            start + Duration::from_secs(1),
        );
        assert!(line.contains("applied -"), "{line}");
    }

    #[test]
    fn a_receiver_shows_events_appended_per_second_and_a_restart_shows_no_rate() {
        let start = Instant::now();
        let status = |events: u64| json!({"events": events, "keys": 3, "lastEventTime": "t"});
        let (_, sample) = figures(Role::Receiver, &status(10), None, start);
        let later = start + Duration::from_millis(500);
        let (line, sample) = figures(Role::Receiver, &status(60), sample.as_ref(), later);
        assert_eq!(line, "events 60, keys 3, appended 100.0/s, last event t");
        let (line, _) = figures(
            Role::Receiver,
            &status(5),
            sample.as_ref(),
            later + Duration::from_secs(1),
        );
        assert!(line.contains("appended -"), "{line}");
    }

    #[test]
    fn a_role_that_does_not_answer_shows_dashes() {
        let (line, sample) = figures(Role::Projector, &Value::Null, None, Instant::now());
        assert_eq!(
            line,
            "view -, phase -, lag null events / -, applied -, generation -, dead letters null"
        );
        assert_eq!(sample, None);
        let (line, _) = figures(
            Role::Adapter,
            &json!({"recordsRead": 4}),
            None,
            Instant::now(),
        );
        assert!(line.starts_with("read 4 (-)"), "{line}");
    }
}
