//! Following the servers a role depends on, so `/readyz` answers 503 while one is away and
//! 200 again once it is back (DESIGN §11), without a restart.

use std::sync::Arc;
use std::time::Duration;

use process::Health;
use tokio_util::sync::CancellationToken;

/// How often the servers are asked, and how long one may take to answer.
const EVERY: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(2);

/// The servers one role depends on.
#[derive(Clone, Debug, Default)]
pub struct Dependencies {
    /// NATS, asked through JetStream: connected is not enough, the JetStream API must answer
    /// (a cluster between meta leaders cannot take an append).
    pub nats: Option<async_nats::Client>,
    pub postgres: Option<sqlx::PgPool>,
}

impl Dependencies {
    /// Asks every server once and records in `health` which answer.
    pub async fn check(&self, health: &Health) {
        if let Some(client) = &self.nats {
            health.set_reachable("nats", nats_answers(client).await);
        }
        if let Some(pool) = &self.postgres {
            health.set_reachable("postgres", postgres_answers(pool).await);
        }
    }

    /// Checks every second until `shutdown`.
    pub async fn follow(self, health: Arc<Health>, shutdown: CancellationToken) {
        loop {
            self.check(&health).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// Starts [`Dependencies::follow`] as a task. Until the first answers, every server
    /// counts as away: a process is not ready on a hope.
    pub fn spawn(self, health: Arc<Health>, shutdown: CancellationToken) {
        if self.nats.is_some() {
            health.set_reachable("nats", false);
        }
        if self.postgres.is_some() {
            health.set_reachable("postgres", false);
        }
        tokio::spawn(self.follow(health, shutdown));
    }
}

async fn nats_answers(client: &async_nats::Client) -> bool {
    if client.connection_state() != async_nats::connection::State::Connected {
        return false;
    }
    let jetstream = async_nats::jetstream::new(client.clone());
    matches!(
        tokio::time::timeout(PATIENCE, jetstream.query_account()).await,
        Ok(Ok(_))
    )
}

async fn postgres_answers(pool: &sqlx::PgPool) -> bool {
    matches!(
        tokio::time::timeout(PATIENCE, sqlx::query("select 1").execute(pool)).await,
        Ok(Ok(_))
    )
}
