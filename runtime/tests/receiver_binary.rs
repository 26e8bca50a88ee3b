//! `dreampipe receiver` started as the operator's pod spec will start it: from a config file
//! and environment, probed over HTTP, stopped with SIGTERM.

mod receiver_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use testbed::NatsServer;
use testbed::child::{free_port, http, terminate, wait_for_port, wait_until_ready};

const BINARY: &str = env!("CARGO_BIN_EXE_dreampipe");

fn start(
    config: &std::path::Path,
    nats_url: &str,
    port: u16,
    log: &std::path::Path,
) -> std::process::Child {
    Command::new(BINARY)
        .arg("receiver")
        .env("DREAMPIPE_CONFIG", config)
        .env("NATS_URL", nats_url)
        .env("DREAMPIPE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DREAMPIPE_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn help_lists_the_roles_and_flags() {
    let output = Command::new(BINARY)
        .args(["receiver", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--config",
        "--nats-url",
        "--listen",
        "--tokens-file",
        "[env: NATS_URL=",
    ] {
        assert!(
            help.contains(flag),
            "receiver --help should mention {flag}:\n{help}"
        );
    }
}

#[tokio::test]
async fn receiver_is_ready_once_its_stream_exists_and_stops_cleanly_on_sigterm() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entity.yaml");
    std::fs::write(&config, receiver_support::ENTITY).unwrap();
    let log = dir.path().join("receiver.log");
    let port = free_port();
    let url = nats.url().to_owned();

    let (status, body, log_text) = tokio::task::spawn_blocking(move || {
        let mut child = start(&config, &url, port, &log);
        wait_for_port(&mut child, port, Duration::from_secs(20));
        assert_eq!(http(port, "GET", "/healthz", None).unwrap().0, 200);
        wait_until_ready(port, Duration::from_secs(20));
        let answer = http(
            port,
            "PUT",
            "/v1/entities/customer/c1",
            Some(r#"{"id":"c1","name":"Ada"}"#),
        )
        .unwrap();
        let status = terminate(&mut child, Duration::from_secs(10));
        assert!(status.success(), "exit on SIGTERM: {status}");
        (answer.0, answer.1, std::fs::read_to_string(&log).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(receiver_support::stream_messages(&nats).await, 1);
    assert!(
        log_text.contains("no bearer tokens configured"),
        "the start-up log says the receiver is open:\n{log_text}"
    );
    assert!(
        log_text.contains("\"level\":\"INFO\""),
        "logs are structured JSON:\n{log_text}"
    );
}

#[test]
fn receiver_is_not_ready_while_nats_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entity.yaml");
    std::fs::write(&config, receiver_support::ENTITY).unwrap();
    let port = free_port();
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let mut child = start(&config, &nowhere, port, &dir.path().join("log"));
    wait_for_port(&mut child, port, Duration::from_secs(20));
    assert_eq!(
        http(port, "GET", "/healthz", None).unwrap().0,
        200,
        "alive while waiting for NATS"
    );
    assert_eq!(http(port, "GET", "/readyz", None).unwrap().0, 503);
    let (status, body) = http(
        port,
        "PUT",
        "/v1/entities/customer/c1",
        Some(r#"{"id":"c1","name":"Ada"}"#),
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stream is not ensured yet"), "{body}");
    assert!(terminate(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn an_invalid_config_stops_the_receiver_with_every_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entity.yaml");
    std::fs::write(
        &config,
        receiver_support::ENTITY.replace("key: /id", "key: /nope"),
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["receiver", "--config"])
        .arg(&config)
        .args(["--log-format", "text"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("spec.key: /nope is not defined in spec.schema's properties"),
        "{stderr}"
    );
}
