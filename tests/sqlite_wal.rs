//! SQLite's WAL is checkpointed in the background while the server runs, not inside
//! commits (storage::checkpoint_sqlite_wal): what a write committed reaches the database
//! file itself within moments.

mod common;

use std::{str::FromStr, time::Duration};

use common::{Backend, TestServer, add_member, create_org, create_permission, proto as pb, resource};
use sea_orm::sqlx::{
    Connection, Row,
    sqlite::{SqliteConnectOptions, SqliteConnection},
};

/// Grants in the database file alone (`immutable` makes SQLite ignore the WAL); an
/// error while even the tables are still only in the WAL.
async fn grants_in_the_file(database_url: &str) -> Result<i64, sea_orm::sqlx::Error> {
    let file = database_url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default();
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{file}?mode=ro&immutable=true"))?;
    let mut connection = SqliteConnection::connect_with(&options).await?;
    let row = sea_orm::sqlx::query("SELECT count(*) FROM grants").fetch_one(&mut connection).await;
    connection.close().await.ok();
    row.map(|row| row.get::<i64, _>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_grants_reach_the_sqlite_database_file_while_the_server_runs() {
    let Some(server) = TestServer::start(Backend::Sqlite, "sqlite_wal").await else { return };
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let mut permission_ids = Vec::new();
    for i in 0..20 {
        permission_ids.push(create_permission(&server, &format!("documents:p{i}")).await);
    }
    let added = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids,
            resource: resource("document", "d1"),
            ..Default::default()
        })
        .await
        .expect("add")
        .into_inner()
        .added
        .len();
    assert_eq!(added, 20);

    let mut in_file = grants_in_the_file(server.database_url()).await;
    for _ in 0..50 {
        if matches!(in_file, Ok(20)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_file = grants_in_the_file(server.database_url()).await;
    }
    assert!(matches!(in_file, Ok(20)), "the 20 committed grants must reach the database file within 5 s: {in_file:?}");
}
