//! The http source against the CRM simulator, end to end: every account reaches the
//! Entity's stream, later polls submit only what changed, deleted accounts become deleted
//! events, and the cursor survives a restart.

mod adapter_support;

use std::sync::Arc;
use std::time::Duration;

use adapter_support::{
    Running, events_of, receiver, sample, serve, start_adapter, stream_messages, wait_for,
};
use runtime::simulator::crm::{Crm, stamp};
use runtime::simulator::http::{Simulator, routes};
use runtime::store::EventType;
use testbed::NatsServer;
use tokio_util::sync::CancellationToken;

const ACCOUNTS: u64 = 30;

fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn adapter_yaml(crm_url: &str) -> String {
    format!(
        r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {{name: crm, namespace: shop}}
spec:
  entity: customer
  interval: 200ms
  batchSize: 8
  source:
    http:
      url: "{crm_url}/services/data/v59.0/queryAll?q=SELECT Id, Name, BillingCity, AnnualRevenue, LastModifiedDate, IsDeleted FROM Account"
      tokenSecretRef: {{name: crm, key: token}}
      records: /records
      nextPage: {{urlField: /nextRecordsUrl}}
      incremental: {{field: /LastModifiedDate, param: modifiedSince}}
  mapping:
    id: record.Id
    name: record.Name
    city: record.BillingCity
    revenue: record.AnnualRevenue
  deleteWhen: record.IsDeleted
"#
    )
}

struct World {
    nats: NatsServer,
    simulator: Arc<Simulator>,
    crm_url: String,
    receiver_url: String,
    dir: tempfile::TempDir,
    _shutdown: Vec<tokio_util::sync::DropGuard>,
}

async fn world() -> World {
    let nats = NatsServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let simulator = Arc::new(Simulator::new(
        Crm::new(ACCOUNTS, 42, at(0)),
        "crm-token".to_owned(),
        7,
    ));
    let crm_url = serve(routes(simulator.clone()), shutdown.clone()).await;
    let receiver_url = receiver(&nats, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/crm")).unwrap();
    std::fs::write(dir.path().join("secrets/crm/token"), "crm-token\n").unwrap();
    World {
        nats,
        simulator,
        crm_url,
        receiver_url,
        dir,
        _shutdown: vec![shutdown.drop_guard()],
    }
}

impl World {
    /// Starts the adapter `yaml` describes against this world's CRM, receiver and NATS.
    async fn start(&self, yaml: &str) -> Running {
        start_adapter(self.dir.path(), yaml, &self.receiver_url, self.nats.url()).await
    }

    /// Starts the adapter of [`oauth_adapter_yaml`] signing in at this world's token URL with
    /// the connected app's Secret files; `extra` adds settings to its `oauth2`.
    async fn start_oauth(&self, extra: &str) -> Running {
        let oauth2 = format!(
            "{{tokenUrl: '{}/services/oauth2/token', clientIdRef: {{name: crm-oauth, key: client-id}}, \
             clientSecretRef: {{name: crm-oauth, key: client-secret}}{extra}}}",
            self.crm_url
        );
        self.start(&oauth_adapter_yaml(&self.crm_url, &oauth2))
            .await
    }

    /// `method path` on the simulated CRM: its status and JSON body.
    async fn crm(&self, method: &'static str, path: &'static str) -> (u16, serde_json::Value) {
        let port: u16 = self
            .crm_url
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let (status, body) =
            tokio::task::spawn_blocking(move || testbed::child::http(port, method, path, None))
                .await
                .unwrap()
                .unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The connected app's figures: tokens issued, requests refused.
    async fn oauth_figures(&self) -> serde_json::Value {
        self.crm("GET", "/simulator/oauth").await.1
    }

    /// Revokes every token (and refresh token) the connected app issued.
    async fn revoke(&self) {
        let (status, _) = self.crm("POST", "/simulator/revoke").await;
        assert!((200..300).contains(&status), "revoke answered {status}");
    }
}

/// Advances the CRM by one tick that changes accounts, deletes one and creates one; answers
/// how many accounts changed since the previous state and the deleted account's id.
fn business_happens(simulator: &Simulator) -> (u64, String) {
    let mut crm = simulator.crm.lock().unwrap();
    crm.tick(9, 4, at(60));
    let changed = crm.query(true, Some(&stamp(at(0)))).len() as u64;
    let deleted = crm
        .query(true, None)
        .into_iter()
        .find(|a| a.is_deleted)
        .unwrap()
        .id
        .clone();
    (changed, deleted)
}

#[tokio::test]
async fn every_account_reaches_the_stream_and_later_polls_submit_only_changes() {
    let world = world().await;
    let adapter = world.start(&adapter_yaml(&world.crm_url)).await;

    let first = wait_for(&adapter, "every account", |s| {
        s.submitted == ACCOUNTS && s.last_sync_time.is_some()
    })
    .await;
    assert_eq!(first.created, ACCOUNTS);
    assert_eq!(first.rejected, 0, "{:?}", first.last_error);
    assert_eq!(stream_messages(&world.nats).await, ACCOUNTS);

    let (changed, deleted) = business_happens(&world.simulator);
    assert!(changed > 1 && changed < ACCOUNTS, "{changed}");
    let second = wait_for(&adapter, "the changes", |s| {
        s.submitted == ACCOUNTS + changed
    })
    .await;
    assert_eq!(second.deleted, 1);
    assert_eq!(second.created, ACCOUNTS + 1, "the new account");

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        adapter.status().submitted,
        ACCOUNTS + changed,
        "polls without changes submit nothing"
    );
    let events = events_of(&world.nats, &deleted).await;
    assert_eq!(events.last().unwrap().type_, EventType::Deleted);

    // The same figures in /metrics, and every poll timed.
    let scraped = adapter.scrape().await;
    let value = |series: &str| {
        sample(&scraped, series).unwrap_or_else(|| panic!("no {series} in\n{scraped}"))
    };
    let status = adapter.status();
    assert_eq!(
        value("dreampipe_adapter_records_submitted_total"),
        status.submitted as f64
    );
    assert_eq!(
        value("dreampipe_adapter_records_read_total"),
        status.records_read as f64
    );
    assert_eq!(
        value("dreampipe_adapter_records_changed_total{type=\"created\"}"),
        (ACCOUNTS + 1) as f64
    );
    assert_eq!(
        value("dreampipe_adapter_records_changed_total{type=\"deleted\"}"),
        1.0
    );
    assert_eq!(value("dreampipe_adapter_records_rejected_total"), 0.0);
    assert!(
        value("dreampipe_adapter_poll_duration_seconds_count{result=\"ok\"}") >= 3.0,
        "a first poll, the one with the changes, and one without:\n{scraped}"
    );
    adapter.stop().await;
}

#[tokio::test]
async fn the_cursor_survives_a_restart_of_the_adapter() {
    let world = world().await;
    let yaml = adapter_yaml(&world.crm_url);
    let adapter = world.start(&yaml).await;
    wait_for(&adapter, "every account", |s| s.submitted == ACCOUNTS).await;
    adapter.stop().await;

    let (changed, _) = business_happens(&world.simulator);
    let restarted = world.start(&yaml).await;
    wait_for(&restarted, "the changes", |s| s.last_sync_time.is_some()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = restarted.status();
    assert_eq!(
        status.submitted, changed,
        "only what changed while the adapter was down"
    );
    assert_eq!(status.changed + status.unchanged, changed);
    assert_eq!(
        stream_messages(&world.nats).await,
        ACCOUNTS + status.changed,
        "an event for each change that carried new information"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn a_resync_deletes_accounts_the_crm_no_longer_returns() {
    let world = world().await;
    let yaml = adapter_yaml(&world.crm_url)
        .replace("/queryAll?", "/query?")
        .replace("  deleteWhen: record.IsDeleted\n", "")
        .replace(
            "      records: /records\n",
            "      records: /records\n      resyncInterval: 1s\n      deleteMissing: true\n",
        );
    let adapter = world.start(&yaml).await;
    wait_for(&adapter, "every account", |s| s.submitted == ACCOUNTS).await;

    let (_, deleted) = business_happens(&world.simulator);
    let status = wait_for(&adapter, "the resync", |s| s.deleted == 1).await;
    assert_eq!(status.created, ACCOUNTS + 1, "the new account");
    let events = events_of(&world.nats, &deleted).await;
    assert_eq!(events.last().unwrap().type_, EventType::Deleted);
    adapter.stop().await;
}

/// The adapter of [`adapter_yaml`] with OAuth2 instead of a fixed token.
fn oauth_adapter_yaml(crm_url: &str, oauth2: &str) -> String {
    adapter_yaml(crm_url).replace(
        "      tokenSecretRef: {name: crm, key: token}\n",
        &format!("      oauth2: {oauth2}\n"),
    )
}

/// A CRM whose connected app issues tokens good for `lifetime`, with the app's credentials
/// (and refresh token) as Secret files.
async fn oauth_world(lifetime: Duration) -> World {
    let world = world().await;
    let simulator = Arc::new(
        Simulator::new(Crm::new(ACCOUNTS, 42, at(0)), String::new(), 7).with_oauth(
            runtime::simulator::oauth::ConnectedApp {
                client_id: "3MVG9-demo".into(),
                client_secret: "s3cr3t+/=".into(),
                refresh_token: Some("5Aep-refresh".into()),
                lifetime,
            },
        ),
    );
    let shutdown = CancellationToken::new();
    let crm_url = serve(routes(simulator.clone()), shutdown.clone()).await;
    let secrets = world.dir.path().join("secrets/crm-oauth");
    std::fs::create_dir_all(&secrets).unwrap();
    for (key, value) in [
        ("client-id", "3MVG9-demo"),
        ("client-secret", "s3cr3t+/="),
        ("refresh-token", "5Aep-refresh"),
    ] {
        std::fs::write(secrets.join(key), value).unwrap();
    }
    World {
        simulator,
        crm_url,
        _shutdown: {
            let mut guards = world._shutdown;
            guards.push(shutdown.drop_guard());
            guards
        },
        nats: world.nats,
        receiver_url: world.receiver_url,
        dir: world.dir,
    }
}

#[tokio::test]
async fn client_credentials_tokens_are_replaced_before_they_expire_so_the_api_never_refuses_one() {
    let world = oauth_world(Duration::from_secs(3)).await;
    let adapter = world.start_oauth(", refreshBefore: 2s").await;
    let status = wait_for(&adapter, "every account", |s| {
        s.created == ACCOUNTS && s.last_sync_time.is_some()
    })
    .await;
    assert!(status.last_error.is_none(), "{status:?}");

    // Polls every 200 ms for 5 s with tokens good for 3 s, replaced 2 s ahead: new tokens
    // were asked for, and the API never had to refuse one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let figures = world.oauth_figures().await;
    assert!(figures["issued"].as_u64().unwrap() >= 3, "{figures}");
    assert_eq!(figures["unauthorized"], 0, "{figures}");

    adapter.stop().await;
}

#[tokio::test]
async fn a_token_revoked_before_its_expiry_is_replaced_at_once() {
    let world = oauth_world(Duration::from_secs(3600)).await;
    let adapter = world.start_oauth("").await;
    wait_for(&adapter, "every account", |s| s.created == ACCOUNTS).await;
    assert_eq!(
        world.oauth_figures().await["issued"],
        1,
        "one token for an hour"
    );

    // Revoked early (an admin ended the session): the next poll is refused once, a new token
    // is asked for at once and the poll goes through.
    world.revoke().await;
    let (_, deleted) = business_happens(&world.simulator);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = events_of(&world.nats, &deleted).await;
        if events.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change after the revocation arrives"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let figures = world.oauth_figures().await;
    assert_eq!(
        figures["unauthorized"], 1,
        "one refusal, then a new token: {figures}"
    );
    adapter.stop().await;
}

#[tokio::test]
async fn a_refresh_token_grant_reads_the_crm_and_a_revoked_refresh_token_shows_in_the_status() {
    let world = oauth_world(Duration::from_secs(3600)).await;
    let adapter = world
        .start_oauth(
            ", grant: RefreshToken, refreshTokenRef: {name: crm-oauth, key: refresh-token}",
        )
        .await;
    wait_for(&adapter, "every account", |s| s.created == ACCOUNTS).await;

    // The person's grant is revoked: the token and the refresh token stop working, and the
    // status says why. Nothing already stored is lost, and nothing more is read.
    world.revoke().await;
    business_happens(&world.simulator);
    let status = wait_for(&adapter, "the refused grant", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("invalid_grant"))
    })
    .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("refused the refresh_token grant")
            && error.contains("/services/oauth2/token"),
        "{error}"
    );
    assert_eq!(status.created, ACCOUNTS);
    assert_eq!(stream_messages(&world.nats).await, ACCOUNTS);
    adapter.stop().await;
}

#[tokio::test]
async fn wrong_client_credentials_are_named_in_the_status() {
    let world = oauth_world(Duration::from_secs(3600)).await;
    std::fs::write(
        world.dir.path().join("secrets/crm-oauth/client-secret"),
        "not-it",
    )
    .unwrap();
    let adapter = world.start_oauth("").await;
    let status = wait_for(&adapter, "the refusal", |s| s.last_error.is_some()).await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("refused the client_credentials grant: invalid_client"),
        "{error}"
    );
    assert_eq!(status.submitted, 0);
    adapter.stop().await;
}
