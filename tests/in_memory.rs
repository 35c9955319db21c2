//! `grantd serve --database-url sqlite::memory:`: one database for all of the process's
//! connections (requests, the SQLite writer, the change feed and health), gone on exit.

mod common;
#[path = "common/invariants.rs"]
mod invariants;
#[path = "common/process.rs"]
mod process;
#[path = "common/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use grantd::api::pb;
use process::{Clients, Grantd, SecretFile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_sqlite_database_serves_writes_and_reads() {
    let secret = SecretFile::new();
    let server = Grantd::start("in-memory", "sqlite::memory:", &secret, &[]).await;
    let mut clients = Clients::admin(server.channel());
    let fixture = workload::seed(&clients, "mem", 1, 1, 1).await;
    let (org, user, permission) = (&fixture.orgs[0], &fixture.users[0], &fixture.permissions[0].0);
    let resource = ("folder".to_owned(), "f1".to_owned());
    let added = workload::add_permissions(
        &mut clients,
        org,
        user,
        vec![permission.clone()],
        resource,
        "mem-add".into(),
        Instant::now(),
        0,
    )
    .await;
    assert!(added.outcome.is_ok(), "add: {added:?}");
    let check = workload::check_request(org, user, permission, ("folder".into(), "f1".into()));
    let answer = clients.grants.check_permission(check).await.expect("check").into_inner();
    assert!(answer.allowed, "the grant just added must be seen: {answer:?}");
    let changes = tokio::time::timeout(
        Duration::from_secs(10),
        clients.audit.list_changes(pb::ListChangesRequest { page_size: 100, ..Default::default() }),
    )
    .await
    .expect("ListChanges answers")
    .expect("ListChanges")
    .into_inner();
    assert!(!changes.changes.is_empty(), "the change log of the in-memory database is empty");
}
