//! `dreampipe dev <folder>` as a user runs it: endpoints printed, a write through the receiver
//! read back from the view through the query service and through psql with the printed
//! analysts' URL, a filter edit swapping the generation, SIGTERM, and a second run that finds
//! the state of the first. The state folder lies below a private (0700) folder, as a home
//! folder does, which the `postgres` user cannot enter when we run as root (ADR 0040).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::child::{http, terminate};

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

/// A dev process killed when the test ends, also when it fails halfway.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `dreampipe dev` from `workdir` with the state folder `.dreampipe` relative to it, as
/// users run it; its stdout and stderr go to files in `workdir`.
fn dev(folder: &Path, workdir: &Path, port: u16) -> Running {
    dev_printing_status(folder, workdir, port, 0)
}

/// Like [`dev`], printing the status table every `status_every` seconds (0: never).
fn dev_printing_status(folder: &Path, workdir: &Path, port: u16, status_every: u32) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_dreampipe"))
        .current_dir(workdir)
        .arg("dev")
        .arg(folder)
        .args(["--state-dir", ".dreampipe"])
        .args([
            "--port",
            &port.to_string(),
            "--status-every",
            &status_every.to_string(),
            "--log-format",
            "text",
        ])
        .stdout(std::fs::File::create(workdir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(workdir.join("stderr.txt")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// Waits until `port` answers `/readyz` with 200; fails at once, with dev's log, if dev exits.
fn wait_until_ready(dev: &mut Running, workdir: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let log = || std::fs::read_to_string(workdir.join("stderr.txt")).unwrap_or_default();
    while !http(port, "GET", "/readyz", None).is_ok_and(|(status, _)| status == 200) {
        if let Some(status) = dev.0.try_wait().unwrap() {
            panic!(
                "dev exited with {status} before {port} was ready:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not ready on {port} within 90s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port whose next `count - 1` ports are free too: dev takes consecutive ports from `--port`.
fn free_ports(count: u16) -> u16 {
    loop {
        let base = testbed::child::free_port();
        let all_free = (base..base.saturating_add(count))
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free && base.checked_add(count).is_some() {
            return base;
        }
    }
}

/// The analysts' URL dev printed: `Postgres <writer>  (analysts: <url>)`.
fn analysts_url(printed: &str) -> String {
    let (_, rest) = printed
        .split_once("(analysts: ")
        .unwrap_or_else(|| panic!("no analysts' URL in {printed}"));
    rest.split_once(')').unwrap().0.to_owned()
}

/// What psql prints for `sql` over `url`, unaligned and without headers.
fn psql(url: &str, sql: &str) -> String {
    let psql = testbed::locate_binary("psql", None, &[]).unwrap();
    let output = Command::new(psql)
        .args([url, "--no-psqlrc", "-At", "-c", sql])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "psql {url} refused it: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A private folder (mode 0700) to run in, and the cluster Postgres keeps outside it (when it
/// had to) removed at the end.
struct PrivateState(tempfile::TempDir);

impl PrivateState {
    fn new() -> Self {
        PrivateState(
            tempfile::Builder::new()
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .unwrap(),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn moved_cluster(&self) -> Option<PathBuf> {
        let link = std::fs::read_link(self.path().join(".dreampipe/postgres/data")).ok()?;
        link.parent().map(Path::to_path_buf)
    }
}

impl Drop for PrivateState {
    fn drop(&mut self) {
        if let Some(cluster) = self.moved_cluster() {
            let _ = std::fs::remove_dir_all(cluster);
        }
    }
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
    let state = PrivateState::new();
    let folder = state.path().join("pipeline");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("entity.yaml"), ENTITY).unwrap();
    std::fs::write(folder.join("projection.yaml"), projection("true")).unwrap();
    let port = free_ports(3);
    let (query, receiver) = (port, port + 1);

    let mut first = dev(&folder, state.path(), port);
    wait_until_ready(&mut first, state.path(), query);
    wait_until_ready(&mut first, state.path(), receiver);
    let printed = std::fs::read_to_string(state.path().join("stdout.txt")).unwrap();
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
    let analysts = analysts_url(&printed);
    assert_eq!(
        psql(
            &analysts,
            "select name from dp_default.customers order by name"
        ),
        "Ada\nBo\n",
        "analysts read the view with the printed URL"
    );

    // Editing the filter starts a new generation, which takes over the view.
    std::fs::write(
        folder.join("projection.yaml"),
        projection("state.city == \"Lyon\""),
    )
    .unwrap();
    assert_eq!(view_names(query, 1), ["Bo"]);
    assert!(
        terminate(&mut first.0, Duration::from_secs(30)).success(),
        "dev stops cleanly on SIGTERM"
    );

    // The next run starts from the same NATS and Postgres state.
    let mut second = dev_printing_status(&folder, state.path(), port, 1);
    wait_until_ready(&mut second, state.path(), query);
    assert_eq!(view_names(query, 1), ["Bo"]);
    // The status table: the projector caught up (0 s behind), rates once printed twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let table = loop {
        let printed = std::fs::read_to_string(state.path().join("stdout.txt")).unwrap();
        let lines: Vec<&str> = printed.lines().collect();
        let projector = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("projector  customers"));
        let receiver = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("receiver   customer ") && l.contains("events "));
        if let (Some(p), Some(r)) = (projector, receiver)
            && p.contains("lag 0 events / 0.0 s")
            && p.contains("applied 0.0/s")
            && r.contains("appended 0.0/s")
        {
            break format!("{r}\n{p}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status table with lag seconds and rates in\n{printed}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(table.contains("view customers, phase Live"), "{table}");
    let (status, body) = http(query, "GET", "/v1/entities/customer/c1", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(terminate(&mut second.0, Duration::from_secs(30)).success());
    assert!(
        state
            .path()
            .join(".dreampipe/postgres/data/PG_VERSION")
            .exists(),
        "state lives in the relative folder"
    );
}

#[test]
fn dev_stops_with_the_reason_when_a_role_cannot_start() {
    let state = PrivateState::new();
    let folder = state.path().join("pipeline");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("entity.yaml"), ENTITY).unwrap();
    let port = free_ports(2);
    // The receiver's port is taken, so the receiver cannot listen.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port + 1)).unwrap();

    let mut dev = dev(&folder, state.path(), port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = dev.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("dev kept running with a receiver that could not listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(state.path().join("stderr.txt")).unwrap();
    assert!(
        log.contains("receiver customer stopped, so dev stops too")
            && log.contains("Address already in use"),
        "{log}"
    );
}
