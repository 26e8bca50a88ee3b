//! The images build: the Dockerfile's Rust toolchain is at least the workspace's
//! `rust-version`, and that is at least what every locked dependency needs. (No Docker here, so
//! the build itself is not run; a too-old toolchain is the failure this can see.)

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `1.94` or `1.94.0` as comparable numbers.
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text
        .split('.')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("not a version: {text}"))
        })
        .collect();
    parts.resize(3, 0);
    parts
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_dockerfile_toolchain_builds_every_locked_dependency() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let docker_rust = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("FROM rust:"))
        .and_then(|image| image.split(['-', ' ']).next())
        .expect("the Dockerfile builds FROM rust:<version>-...");

    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let workspace_rust = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|quoted| quoted.trim_matches('"'))
        .expect("the workspace declares rust-version");

    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("a resolve graph")
        .iter()
        .filter_map(|node| node["id"].as_str())
        .collect();
    let (needed, package) = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| resolved.contains(&p["id"].as_str().unwrap_or_default()))
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .max()
        .expect("dependencies declaring a rust-version");

    assert!(
        version(workspace_rust) >= needed,
        "the workspace's rust-version {workspace_rust} is older than {package} needs ({})",
        needed
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    );
    assert!(
        version(docker_rust) >= version(workspace_rust),
        "the Dockerfile builds with Rust {docker_rust}, older than the workspace's rust-version \
         {workspace_rust}"
    );
}
