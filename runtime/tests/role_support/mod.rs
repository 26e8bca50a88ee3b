//! Roles of the `dreampipe` binary started as processes, as their pods would run them: the
//! config mounted from a folder, the settings in the environment, the log in a file beside it.

#![allow(dead_code, reason = "each test binary uses the part it needs")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testbed::child::{free_port, wait_for_port};

pub const BINARY: &str = env!("CARGO_BIN_EXE_dreampipe");

/// The `customer` Entity and its `customers` Projection, the `config.yaml` the process tests
/// mount for a receiver, a projector and the query service.
pub const CONFIG: &str = r#"apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer}
spec:
  key: /id
  partitions: 2
  schema: {type: object, required: [id], properties: {id: {type: string}, name: {type: string}}}
---
apiVersion: dreampipe.io/v1alpha1
kind: Projection
metadata: {name: customers}
spec:
  entity: customer
  sink:
    postgres:
      view: customers
      columns: [{name: name, type: text}]
"#;

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
