//! The operator binary as a user or the kubelet meets it.

use std::process::{Command, Stdio};
use std::time::Duration;

use testbed::child::{free_port, terminate, wait_for_port};

const BINARY: &str = env!("CARGO_BIN_EXE_dreampipe-operator");

#[test]
fn help_lists_the_subcommands() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for word in ["run", "crds", "--log-format"] {
        assert!(help.contains(word), "--help should mention {word}:\n{help}");
    }
}

#[test]
fn crds_prints_the_committed_definitions() {
    let output = Command::new(BINARY).arg("crds").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/yaml");
    for file in ["entities", "adapters", "projections"] {
        let committed =
            std::fs::read_to_string(dir.join(format!("{file}.dreampipe.io.yaml"))).unwrap();
        assert!(printed.contains(&committed), "crds output lacks {file}");
    }
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    // An API server and a NATS server that are not there: the operator still serves its
    // probes, retries its watches, and stops on SIGTERM.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: none\n\
             clusters: [{{name: none, cluster: {{server: \"http://127.0.0.1:{}\"}}}}]\n\
             users: [{{name: none, user: {{}}}}]\n\
             contexts: [{{name: none, context: {{cluster: none, user: none}}}}]\n",
            free_port()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(BINARY)
        .args(["run", "--probe-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env("NATS_URL", format!("nats://127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&mut child, port, Duration::from_secs(20));
    let status = terminate(&mut child, Duration::from_secs(10));
    assert!(status.success(), "operator exited with {status} on SIGTERM");
}
