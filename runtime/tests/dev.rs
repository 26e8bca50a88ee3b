//! `dreampipe dev <folder>` as a user runs it: endpoints printed, a write through the receiver
//! read back from the view through the query service, a filter edit swapping the generation,
//! SIGTERM, and a second run that finds the state of the first.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::child::{free_port, http, terminate, wait_until_ready};

const ENTITY: &str = "apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer}
spec:
  key: /id
  partitions: 2
  schema: {type: object, required: [id, name], properties: {id: {type: string}, name: {type: string}, city: {type: string}}}
";

fn projection(filter: &str) -> String {
    format!(
        "apiVersion: dreampipe.io/v1alpha1
kind: Projection
metadata: {{name: customers}}
spec:
  entity: customer
  filters:
    - where: '{filter}'
  sink:
    postgres:
      view: customers
      columns:
        - {{name: name, type: text}}
        - {{name: city, type: text}}
"
    )
}

/// Runs `dreampipe dev` from `workdir` with the state folder `.dreampipe` relative to it, as
/// users run it.
fn dev(folder: &Path, workdir: &Path, port: u16, stdout: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dreampipe"))
        .current_dir(workdir)
        .arg("dev")
        .arg(folder)
        .args(["--state-dir", ".dreampipe"])
        .args([
            "--port",
            &port.to_string(),
            "--status-every",
            "0",
            "--log-format",
            "text",
        ])
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The names in the `customers` view, once it answers `expected` rows (or panics after 90 s).
fn view_names(query_port: u16, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok((200, body)) = http(query_port, "GET", "/v1/views/customers", None) {
            let page: Value = serde_json::from_str(&body).unwrap();
            let rows = page["rows"].as_array().unwrap();
            if rows.len() == expected {
                let mut names: Vec<String> = rows
                    .iter()
                    .map(|r| r["name"].as_str().unwrap().to_owned())
                    .collect();
                names.sort();
                return names;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the view never held {expected} rows"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dev_runs_a_folder_end_to_end_and_keeps_its_state_between_runs() {
    let folder = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("entity.yaml"), ENTITY).unwrap();
    std::fs::write(folder.path().join("projection.yaml"), projection("true")).unwrap();
    let port = free_port();
    let (query, receiver) = (port, port + 1);
    let stdout = state.path().join("stdout.txt");

    let mut first = dev(folder.path(), state.path(), port, &stdout);
    wait_until_ready(query, Duration::from_secs(90));
    wait_until_ready(receiver, Duration::from_secs(90));
    let printed = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        printed.contains(&format!(
            "receiver   customer                 http://127.0.0.1:{receiver}"
        )),
        "{printed}"
    );
    assert!(printed.contains("projector  customers"), "{printed}");

    for (id, name, city) in [("c1", "Ada", "Oslo"), ("c2", "Bo", "Lyon")] {
        let body = format!(r#"{{"id":"{id}","name":"{name}","city":"{city}"}}"#);
        let (status, answer) = http(
            receiver,
            "PUT",
            &format!("/v1/entities/customer/{id}"),
            Some(&body),
        )
        .unwrap();
        assert_eq!(status, 201, "{answer}");
    }
    assert_eq!(view_names(query, 2), ["Ada", "Bo"]);

    // Editing the filter starts a new generation, which takes over the view.
    std::fs::write(
        folder.path().join("projection.yaml"),
        projection("state.city == \"Lyon\""),
    )
    .unwrap();
    assert_eq!(view_names(query, 1), ["Bo"]);
    assert!(
        terminate(&mut first, Duration::from_secs(30)).success(),
        "dev stops cleanly on SIGTERM"
    );

    // The next run starts from the same NATS and Postgres state.
    let mut second = dev(folder.path(), state.path(), port, &stdout);
    wait_until_ready(query, Duration::from_secs(90));
    assert_eq!(view_names(query, 1), ["Bo"]);
    let (status, body) = http(query, "GET", "/v1/entities/customer/c1", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(terminate(&mut second, Duration::from_secs(30)).success());
    assert!(
        state
            .path()
            .join(".dreampipe/postgres/data/PG_VERSION")
            .exists(),
        "state lives in the relative folder"
    );
}
