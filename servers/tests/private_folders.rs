//! Postgres starts wherever its folder lies, also below a private (mode 0700) folder such as a
//! home or temporary folder, which the `postgres` user the server runs as under root cannot
//! enter (ADR 0040).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use servers::{Durability, Postgres, REACHABLE_ROOT, SUPERUSER};
use sqlx::{ConnectOptions, Connection, PgConnection};

fn private_folder() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dreampipe-private-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

async fn connect(server: &Postgres) -> PgConnection {
    sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(server.port())
        .username(SUPERUSER)
        .database("postgres")
        .connect()
        .await
        .unwrap()
}

/// Removes a cluster that was moved out of the test's folder when the test ends.
struct RemoveMoved(Vec<PathBuf>);

impl RemoveMoved {
    fn note(&mut self, server: &Postgres, inside: &Path) {
        if !server.cluster_dir().starts_with(inside) {
            self.0.push(server.cluster_dir().to_path_buf());
        }
    }
}

impl Drop for RemoveMoved {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test]
async fn postgres_below_a_private_folder_starts_and_keeps_its_data_between_runs() {
    let private = private_folder();
    let dir = private.path().join("state/postgres");
    let mut moved = RemoveMoved(Vec::new());

    let first = Postgres::start(&dir, Durability::Durable).unwrap();
    moved.note(&first, private.path());
    let mut connection = connect(&first).await;
    sqlx::query("create table kept as select 'from the first run' as note")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    drop(first);

    let second = Postgres::start(&dir, Durability::Durable).unwrap();
    moved.note(&second, private.path());
    let mut connection = connect(&second).await;
    let note: String = sqlx::query_scalar("select note from kept")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(note, "from the first run");
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "the state folder shows the cluster"
    );
    if nix::unistd::Uid::effective().is_root() {
        let target = std::fs::read_link(dir.join("data")).expect("data links to the cluster");
        assert!(target.starts_with(REACHABLE_ROOT), "{}", target.display());
        assert_eq!(second.cluster_dir(), target.parent().unwrap());
    }
}

#[tokio::test]
async fn a_removed_state_folder_starts_afresh_rather_than_finding_an_old_cluster() {
    let private = private_folder();
    let state = private.path().join("state");
    let dir = state.join("postgres");
    let mut moved = RemoveMoved(Vec::new());

    let first = Postgres::start(&dir, Durability::Throwaway).unwrap();
    moved.note(&first, private.path());
    let mut connection = connect(&first).await;
    sqlx::query("create table forgotten (note text)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    drop(first);
    std::fs::remove_dir_all(&state).unwrap();

    let second = Postgres::start(&dir, Durability::Throwaway).unwrap();
    moved.note(&second, private.path());
    let mut connection = connect(&second).await;
    let tables: i64 =
        sqlx::query_scalar("select count(*) from pg_tables where tablename = 'forgotten'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert_eq!(tables, 0, "the old cluster's tables are gone");
}

#[test]
fn a_cluster_already_below_a_private_folder_is_refused_with_what_to_do() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: only a server run as another user (under root) meets this");
        return;
    }
    let private = private_folder();
    let dir = private.path().join("state/postgres");
    // A real data folder, as a run before ADR 0040 (or a moved checkout) left it.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let error = Postgres::start(&dir, Durability::Throwaway).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("cannot reach the cluster in") && message.contains("to start afresh"),
        "{message}"
    );
}
