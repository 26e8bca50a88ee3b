//! The README's story end to end: `dreampipe dev examples/salesforce` against the simulated
//! CRM. The adapter pulls accounts through the receiver into the stream; the projectors keep
//! `customers` and `customers_by_city` equal to the CRM's live accounts, through changes and
//! deletions; the query service serves them.

mod adapter_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_support::serve;
use runtime::simulator::crm::Crm;
use runtime::simulator::http::{Simulator, routes};
use serde_json::Value;
use testbed::child::{http, terminate};
use tokio_util::sync::CancellationToken;

/// The example's connected app (examples/salesforce/crm-simulator.yaml).
const CLIENT_ID: &str = "3MVG9demoConsumerKey";
const CLIENT_SECRET: &str = "demo-consumer-secret";

/// Live accounts as the `customers` view should show them: key -> (name, city, revenue).
fn expected_customers(simulator: &Simulator) -> BTreeMap<String, (String, String, f64)> {
    let crm = simulator.crm.lock().unwrap();
    crm.live()
        .map(|a| {
            (
                a.id.clone(),
                (
                    a.name.clone(),
                    a.billing_city.clone(),
                    a.annual_revenue as f64,
                ),
            )
        })
        .collect()
}

fn expected_by_city(simulator: &Simulator) -> BTreeMap<String, (i64, f64)> {
    let mut cities = BTreeMap::new();
    for (_, (_, city, revenue)) in expected_customers(simulator) {
        let entry = cities.entry(city).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += revenue;
    }
    cities
}

fn rows(port: u16, view: &str) -> Option<Vec<Value>> {
    let (status, body) = http(port, "GET", &format!("/v1/views/{view}?limit=1000"), None).ok()?;
    (status == 200).then(|| {
        serde_json::from_str::<Value>(&body).ok()?["rows"]
            .as_array()
            .cloned()
    })?
}

fn customers_view(port: u16) -> Option<BTreeMap<String, (String, String, f64)>> {
    let rows = rows(port, "customers")?;
    Some(
        rows.iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap_or_default().to_owned();
                let city = r["city"].as_str().unwrap_or_default().to_owned();
                (
                    r["dp_key"].as_str().unwrap_or_default().to_owned(),
                    (name, city, r["revenue"].as_f64().unwrap_or(-1.0)),
                )
            })
            .collect(),
    )
}

fn by_city_view(port: u16) -> Option<BTreeMap<String, (i64, f64)>> {
    let rows = rows(port, "customers_by_city")?;
    Some(
        rows.iter()
            .map(|r| {
                let city = r["city"].as_str().unwrap_or_default().to_owned();
                (
                    city,
                    (
                        r["customers"].as_i64().unwrap_or(-1),
                        r["total_revenue"].as_f64().unwrap_or(-1.0),
                    ),
                )
            })
            .collect(),
    )
}

/// Waits until the views equal what the CRM holds now.
async fn views_match(port: u16, simulator: &Simulator, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (customers, by_city) =
            tokio::task::spawn_blocking(move || (customers_view(port), by_city_view(port)))
                .await
                .unwrap();
        if customers.as_ref() == Some(&expected_customers(simulator))
            && by_city.as_ref() == Some(&expected_by_city(simulator))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: views never matched the CRM\ncustomers: {:?} rows, expected {}\nby city: {by_city:?}\nexpected: {:?}",
            customers.map(|c| c.len()),
            expected_customers(simulator).len(),
            expected_by_city(simulator)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A base port for `dev --port`: dev's roles take it and the ports after it, so ten in a row
/// must be free. They are taken below the ephemeral range (32768 and up on Linux), where the
/// NATS and Postgres servers dev starts first get their ports, so those never take one; and
/// never twice in one test process, whose tests run side by side.
fn role_ports() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    let offset = (std::process::id() % 400) as u16;
    let base = (0..400u16)
        .map(|i| 20_000 + ((offset + i) % 400) * 25)
        .find(|base| {
            !given.contains(base)
                && (*base..base + 10)
                    .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        })
        .expect("ten free ports in a row below 30000");
    given.push(base);
    base
}

/// Waits until `dev` answers `/readyz` on `port`; when it exits first or is not ready after
/// 120 s, fails with the end of its log.
fn ready_or_say_why(dev: &mut std::process::Child, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if http(port, "GET", "/readyz", None).is_ok_and(|(status, _)| status == 200) {
            return;
        }
        let exited = dev.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = dev.kill();
            panic!(
                "dreampipe dev {} on port {port}; the end of its log:\n{}",
                match exited {
                    Some(status) => format!("exited ({status}) before it was ready"),
                    None => "was not ready after 120 s".to_owned(),
                },
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The simulated CRM and `dreampipe dev` running an example folder against it.
struct Example {
    dev: std::process::Child,
    port: u16,
    simulator: Arc<Simulator>,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
}

impl Example {
    /// Serves a CRM of `accounts` accounts and runs dev on `folder` until it is ready.
    async fn start(folder: &Path, accounts: u64) -> Example {
        let shutdown = CancellationToken::new();
        let simulator = Arc::new(
            Simulator::new(
                Crm::new(accounts, 7, jiff::Timestamp::now()),
                String::new(),
                15,
            )
            .with_oauth(runtime::simulator::oauth::ConnectedApp {
                client_id: CLIENT_ID.to_owned(),
                client_secret: CLIENT_SECRET.to_owned(),
                refresh_token: None,
                lifetime: Duration::from_secs(7200),
            }),
        );
        let crm_url = serve(routes(simulator.clone()), shutdown.clone()).await;
        let crm_address = crm_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();

        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(secrets.join("crm-oauth")).unwrap();
        std::fs::write(secrets.join("crm-oauth/client-id"), CLIENT_ID).unwrap();
        std::fs::write(secrets.join("crm-oauth/client-secret"), CLIENT_SECRET).unwrap();
        let port = role_ports();
        let mut dev = Command::new(env!("CARGO_BIN_EXE_dreampipe"))
            .arg("dev")
            .arg(folder)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--secrets-dir")
            .arg(&secrets)
            .args(["--service", &format!("crm-simulator={crm_address}")])
            .args(["--port", &port.to_string(), "--status-every", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dev.log")).unwrap())
            .spawn()
            .unwrap();
        let log = dir.path().join("dev.log");
        let dev = tokio::task::spawn_blocking(move || {
            ready_or_say_why(&mut dev, port, &log);
            dev
        })
        .await
        .unwrap();
        Example {
            dev,
            port,
            simulator,
            shutdown,
            dir,
        }
    }

    /// Business goes on: accounts change, some are deleted and others created.
    async fn business_goes_on(&self) {
        for tick in 0..10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.simulator
                .crm
                .lock()
                .unwrap()
                .tick(tick, 3, jiff::Timestamp::now());
        }
    }

    /// SIGTERM, and dev must stop cleanly.
    async fn stop(self) {
        let Example {
            mut dev, shutdown, ..
        } = self;
        let status =
            tokio::task::spawn_blocking(move || terminate(&mut dev, Duration::from_secs(30)))
                .await
                .unwrap();
        assert!(status.success(), "dev stops cleanly: {status}");
        shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_example_keeps_its_views_equal_to_the_crm() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/salesforce");
    let running = Example::start(&example, 40).await;
    views_match(running.port, &running.simulator, "the first sync").await;
    running.business_goes_on().await;
    views_match(
        running.port,
        &running.simulator,
        "after changes and a deletion",
    )
    .await;
    running.stop().await;
}

/// The console (ADR 80) in headless Chromium over the example as dev runs it: the graph shows
/// its nodes with live figures, a filter edit shows the new generation Building then Live, a
/// key's history shows its changes, the view browser filters; the page is small, works from
/// the keyboard and in dark mode. The script is runtime/tests/console/console.cjs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_example_pipeline_live_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = root.join(".tools/node/node_modules");
    assert!(
        modules.join("playwright-core").is_dir() && which("chromium").is_some(),
        "the console test needs chromium and playwright-core: run scripts/install-deps"
    );
    // A copy of the example, so the test may edit a Projection as a user would.
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("examples/salesforce")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&path, folder.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let running = Example::start(folder.path(), 200).await;
    views_match(running.port, &running.simulator, "the first sync").await;
    running.business_goes_on().await;
    views_match(running.port, &running.simulator, "after changes").await;

    let screenshot = std::env::var_os("DREAMPIPE_CONSOLE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| running.dir.path().join("console.png"));
    let script = root.join("runtime/tests/console/console.cjs");
    let (port, projections) = (running.port, folder.path().join("projections.yaml"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(projections)
            .arg(screenshot)
            .env("NODE_PATH", modules)
            .output()
            .expect("node runs (run scripts/install-deps)")
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{said}");
    if !output.status.success() {
        let log = std::fs::read_to_string(running.dir.path().join("dev.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "the browser test failed:\n{said}\nthe end of dev's log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    running.stop().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}
