//! Roles of the `dreampipe` binary started as processes, as their pods would run them: the
//! config mounted from a folder, the settings in the environment, the log in a file beside it.

#![allow(dead_code, reason = "each test binary uses the part it needs")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testbed::child::{free_port, wait_for_port};

pub const BINARY: &str = env!("CARGO_BIN_EXE_dreampipe");

/// Starts `role` over `dir/config.yaml`, listening on a free port (returned), with `env`
/// added; its log goes to `dir/<role>-<port>.log`.
pub fn start(role: &str, dir: &Path, env: &[(&str, String)]) -> (Child, u16) {
    let port = free_port();
    let mut command = Command::new(BINARY);
    command
        .arg(role)
        .env("DREAMPIPE_CONFIG", dir.join("config.yaml"))
        .env("DREAMPIPE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DREAMPIPE_LOG_FORMAT", "json")
        .env("POD_NAME", format!("{role}-0"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{role}-{port}.log"))).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    wait_for_port(&mut child, port, Duration::from_secs(20));
    (child, port)
}
