//! PostgreSQL's cached plans follow the tables' growth. PostgreSQL only: SQLite keeps no
//! generic plans made on a table's size.

mod common;

use std::time::Duration;

use common::{Backend, TestServer, add_member, create_org, create_permission, proto as pb, resource};
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

/// Past `storage::PLAN_LIFETIME` (10 s), with a margin for PostgreSQL to publish a
/// backend's table statistics (an idle backend does within 10 s).
const PAST_PLAN_LIFETIME: Duration = Duration::from_secs(13);
const ADDS: u64 = 30;

/// An add's foreign-key check of the membership runs on a plan PostgreSQL made at the
/// connection's first insert into `grants`. Made while `memberships` held a page, that
/// plan reads the whole table; once the connection's plans are remade, it probes the
/// primary key instead, whatever the table held when the first plan was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_stop_scanning_a_grown_memberships_table_once_plans_are_remade() {
    let Some(server) = TestServer::start(Backend::Postgres, "plans::foreign_key_checks").await else { return };
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    execute(&server, "ANALYZE memberships, permissions").await;
    add(&server, "first").await;
    execute(
        &server,
        "INSERT INTO memberships (organization_id, user_id, added_at, added_by) \
         SELECT 'acme', 'member-' || n, now(), 'test' FROM generate_series(1, 20000) AS n",
    )
    .await;

    // Within the plans' lifetime: the plan made on one page scans all of them.
    let before = membership_scans(&server).await;
    for n in 0..ADDS {
        add(&server, &format!("stale-{n}")).await;
    }
    tokio::time::sleep(PAST_PLAN_LIFETIME).await;
    let stale = membership_scans(&server).await;
    assert!(
        stale.sequential >= before.sequential + ADDS,
        "the setup did not make a plan that scans memberships: {before:?} -> {stale:?}"
    );

    for n in 0..ADDS {
        add(&server, &format!("fresh-{n}")).await;
    }
    let fresh = published_after(&server, &stale).await;
    assert_eq!(fresh.sequential, stale.sequential, "adds still scan memberships whole: {stale:?} -> {fresh:?}");

    let listed = server
        .grants()
        .list_user_permissions(pb::ListUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.grants.len() as u64, 1 + 2 * ADDS);
    assert!(listed.grants.iter().all(|grant| grant.permission_id == read));
}

async fn add(server: &TestServer, resource_id: &str) {
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: Vec::new(),
            permission_names: vec!["documents:read".into()],
            resource: resource("document", resource_id),
        })
        .await
        .unwrap_or_else(|status| panic!("add on {resource_id}: {status:?}"));
}

async fn execute(server: &TestServer, sql: &str) {
    server.db.execute(Statement::from_string(DatabaseBackend::Postgres, sql)).await.expect(sql);
}

#[derive(Debug, Clone, Copy)]
struct Scans {
    sequential: u64,
    index: u64,
}

/// How `memberships` has been read, as far as PostgreSQL has published it.
async fn membership_scans(server: &TestServer) -> Scans {
    let row = server
        .db
        .query_one(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'memberships'",
        ))
        .await
        .expect("table statistics")
        .expect("memberships");
    let count = |column: &str| row.try_get::<Option<i64>>("", column).expect(column).unwrap_or(0).unsigned_abs();
    Scans { sequential: count("seq_scan"), index: count("idx_scan") }
}

/// The scans once the last `ADDS` adds' membership checks are published (each add probes
/// the membership at least once by key, for its own lock).
async fn published_after(server: &TestServer, earlier: &Scans) -> Scans {
    let deadline = tokio::time::Instant::now() + 2 * PAST_PLAN_LIFETIME;
    loop {
        let scans = membership_scans(server).await;
        if scans.index >= earlier.index + ADDS || tokio::time::Instant::now() >= deadline {
            return scans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
