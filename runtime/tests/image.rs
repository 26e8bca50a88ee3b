//! The images build: the Dockerfile's Rust toolchain is at least the workspace's
//! `rust-version`, and that is at least what every locked dependency needs. (No Docker here, so
//! the build itself is not run; a too-old toolchain is the failure this can see.)
//!
//! The images are Linux builds, so the dependencies that count are those of the Linux targets
//! the images are built on. Filtering by platform also keeps the check working on a machine
//! whose cargo registry holds only what `cargo test` downloaded: an unfiltered, offline
//! `cargo metadata` wants the crates of every platform (Android, Windows, ...), which no build
//! here fetches.

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

/// The hosts `docker build` runs the Dockerfile on (a Linux builder, amd64 or arm64), whose
/// dependency sets are the ones the images need.
const IMAGE_PLATFORMS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

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

    // Not `--offline`: on a fresh machine the crates only the other image platform needs are not
    // downloaded yet, and cargo fetches them (from the lock file, so nothing else changes).
    let mut metadata = Command::new(env!("CARGO"));
    metadata.args(["metadata", "--format-version", "1", "--locked"]);
    for platform in IMAGE_PLATFORMS {
        metadata.args(["--filter-platform", platform]);
    }
    let output = metadata
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
