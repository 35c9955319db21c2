//! Schema migrations: down and up again on SQLite and PostgreSQL under a running server,
//! and the `grantd migrate` command line.

mod common;

use std::process::{Command, Output};

use common::{TestServer, add_member, create_org, create_permission, proto as pb};
use grantd::storage;
use sea_orm::{
    ConnectionTrait,
    sea_query::{Alias, Query},
};
use tonic::Code;

backend_tests!(
    migrate_down_then_up_leaves_a_working_empty_schema,
    sequencing_migration_keeps_the_change_log,
    built_in_rights_migration_adopts_rights_an_administrator_created,
    queue_migration_keeps_events_waiting_for_their_revision,
);

const INITIAL: &str = "m20261123_000001_initial";
const SEQUENCED: &str = "m20261206_000001_sequenced_changes";
const BUILT_IN: &str = "m20261206_000002_built_in_rights";
const PENDING: &str = "m20261206_000003_pending_changes";

fn listed(state: &str) -> Vec<String> {
    [INITIAL, SEQUENCED, BUILT_IN, PENDING].iter().map(|name| format!("{state} {name}")).collect()
}

async fn migrate_down_then_up_leaves_a_working_empty_schema(server: TestServer) {
    let status = storage::migrate_status(&server.db).await.expect("status");
    assert!(!status.is_empty());
    assert!(status.iter().all(|(_, applied)| *applied), "the harness migrated: {status:?}");
    assert!(status.iter().any(|(name, _)| name == INITIAL));

    // Some data, which the down migration drops with the schema.
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_names: vec!["documents:read".into()],
            ..Default::default()
        })
        .await
        .expect("grant");
    assert_eq!(server.latest_revision().await, 4);

    storage::migrate_down(&server.db, None).await.expect("migrate down");
    let status = storage::migrate_status(&server.db).await.expect("status");
    assert!(!status.is_empty());
    assert!(status.iter().all(|(_, applied)| !*applied), "all pending after down: {status:?}");
    // Without its tables the server answers an error, not a hang or a crash.
    let failed = server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: "acme".into() })
        .await
        .expect_err("no schema");
    let message = failed.message().to_lowercase();
    for leak in ["select", "table", "relation", "sqlite", "postgres"] {
        assert!(!message.contains(leak), "the status leaks database text: {failed:?}");
    }

    // Down again is a no-op, not an error.
    storage::migrate_down(&server.db, None).await.expect("migrate down twice");

    storage::migrate_up(&server.db).await.expect("migrate up");
    let status = storage::migrate_status(&server.db).await.expect("status");
    assert!(status.iter().all(|(_, applied)| *applied), "all applied after up: {status:?}");
    storage::migrate_up(&server.db).await.expect("migrate up twice");

    // The running server works over the recreated schema, which starts empty.
    assert_eq!(server.latest_revision().await, 0);
    let status = server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: "acme".into() })
        .await
        .expect_err("dropped with the schema");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(server.count_rows("grants").await, 0);

    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    let added = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: vec![read.clone()],
            ..Default::default()
        })
        .await
        .expect("grant after re-migration")
        .into_inner();
    assert_eq!(added.added, vec![read.clone()]);
    assert_eq!(added.revision, 4, "revisions start over with the schema");
    let check = server
        .grants()
        .check_permission(pb::CheckPermissionRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission: Some(pb::check_permission_request::Permission::PermissionId(read)),
            resource: None,
            at_least_revision: 4,
        })
        .await
        .expect("check")
        .into_inner();
    assert!(check.allowed);

    // And after a restart over the same database.
    let server = server.restart().await;
    assert_eq!(server.latest_revision().await, 4);
    let members = server
        .directory()
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("members")
        .into_inner()
        .members;
    assert_eq!(members.len(), 1);
}

/// A database whose change log was written before revisions were given after commit
/// keeps every change at its revision, and new changes continue after them.
async fn sequencing_migration_keeps_the_change_log(server: TestServer) {
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    let before = server.list_changes(0).await;
    assert_eq!(before.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![1, 2, 3]);

    storage::migrate_down(&server.db, Some(3)).await.expect("down to the first schema");
    storage::migrate_up(&server.db).await.expect("up again");

    assert_eq!(server.list_changes(0).await, before, "every change kept, at its revision");
    let added = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_names: vec!["documents:read".into()],
            ..Default::default()
        })
        .await
        .expect("grant after the migration")
        .into_inner();
    assert_eq!(added.revision, 4, "the next change follows the kept ones");
    let after = server.list_changes(0).await;
    assert_eq!(after.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

/// Runs the real binary with `args`, isolated from the caller's `GRANTD_*` variables.
fn grantd(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_grantd"));
    command.args(args).env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("GRANTD_") {
            command.env_remove(key);
        }
    }
    command.output().expect("run grantd")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `grantd migrate <action> --database-url URL`, the order a reader of the README types.
#[test]
fn migrate_command_takes_the_database_url_after_the_action() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("grantd.db").display());

    let status = grantd(&["migrate", "status", "--database-url", &url]);
    assert_success(&status, "migrate status");
    assert_eq!(stdout_lines(&status), listed("pending"));

    let up = grantd(&["migrate", "up", "--database-url", &url]);
    assert_success(&up, "migrate up");

    let status = grantd(&["migrate", "status", "--database-url", &url]);
    assert_success(&status, "migrate status");
    assert_eq!(stdout_lines(&status), listed("applied"));
}

/// An installation whose administrator created `edit_org_users` before it was built in
/// keeps that permission (its id, hence its grants), now marked built in; the other
/// built-in right appears beside it.
async fn built_in_rights_migration_adopts_rights_an_administrator_created(server: TestServer) {
    storage::migrate_down(&server.db, Some(2)).await.expect("down to before built-in rights");
    // The catalog as it was then, written directly (this server reads the new schema):
    // no built-in rights, and an `edit_org_users` of the administrator's making.
    let edit = uuid::Uuid::new_v4();
    let backend = server.db.get_database_backend();
    let clear = Query::delete().from_table(Alias::new("permissions")).to_owned();
    server.db.execute(backend.build(&clear)).await.expect("empty the catalog");
    let created = Query::insert()
        .into_table(Alias::new("permissions"))
        .columns(["id", "name", "description", "created_at"].map(Alias::new))
        .values_panic([edit.into(), "edit_org_users".into(), "made by hand".into(), chrono::Utc::now().into()])
        .to_owned();
    server.db.execute(backend.build(&created)).await.expect("an administrator's edit_org_users");

    storage::migrate_up(&server.db).await.expect("up again");

    let listed = server
        .directory()
        .list_permissions(pb::ListPermissionsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .permissions;
    let catalog: Vec<(&str, bool)> = listed.iter().map(|p| (p.name.as_str(), p.built_in)).collect();
    assert_eq!(catalog, vec![("edit_org_users", true), ("view_org_users", true)]);
    assert_eq!(listed[0].id, edit.to_string(), "the administrator's permission is kept, with its id");
    assert_eq!(listed[0].description, "made by hand");
    create_org(&server, "acme").await;
    add_member(&server, "acme", "lead").await;
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "lead".into(),
            permission_names: vec!["edit_org_users".into()],
            ..Default::default()
        })
        .await
        .expect("grant the built-in right");
    let held = server
        .grants()
        .list_user_permissions(pb::ListUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "lead".into(),
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert_eq!(held[0].permission_id, edit.to_string());
    let status = server
        .directory()
        .delete_permission(pb::DeletePermissionRequest { id: edit.to_string(), force: true, allow_missing: false })
        .await
        .expect_err("built in now");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

/// Events that a write committed but that were not numbered yet when the queue of
/// pending changes arrived move to the queue, and are numbered from there.
async fn queue_migration_keeps_events_waiting_for_their_revision(server: TestServer) {
    create_org(&server, "acme").await;
    let before = server.latest_revision().await;
    storage::migrate_down(&server.db, Some(1)).await.expect("down to unnumbered rows in changes");
    // As a writer that died after its commit left it, in the schema before the queue.
    let backend = server.db.get_database_backend();
    let member_added = i16::try_from(pb::ChangeKind::MemberAdded as i32).expect("small kind");
    let unnumbered = Query::insert()
        .into_table(Alias::new("changes"))
        .columns(["write_id", "kind", "actor", "request_id", "at", "organization_id", "user_id"].map(Alias::new))
        .values_panic([
            uuid::Uuid::new_v4().into(),
            member_added.into(),
            "dead-writer".into(),
            "req-dead".into(),
            chrono::Utc::now().into(),
            "acme".into(),
            "bob".into(),
        ])
        .to_owned();
    server.db.execute(backend.build(&unnumbered)).await.expect("an unnumbered event");
    storage::migrate_up(&server.db).await.expect("up again");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let changes = server.list_changes(before).await;
        if let Some(change) = changes.iter().find(|c| c.request_id == "req-dead") {
            assert_eq!(change.revision, before + 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the event never reached the feed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The whole migrate cycle through the binary, with the flag where clap accepts it today.
#[test]
fn migrate_command_up_status_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("grantd.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let migrate = |action: &[&str]| {
        let mut args = vec!["migrate", "--database-url", &url];
        args.extend_from_slice(action);
        grantd(&args)
    };

    let status = migrate(&["status"]);
    assert_success(&status, "migrate status");
    assert_eq!(stdout_lines(&status), listed("pending"));

    let up = migrate(&["up"]);
    assert_success(&up, "migrate up");
    let status = migrate(&["status"]);
    assert_success(&status, "migrate status after up");
    assert_eq!(stdout_lines(&status), listed("applied"));
    assert_success(&migrate(&["up"]), "migrate up again");

    let down = migrate(&["down", "--steps", "1"]);
    assert_success(&down, "migrate down");
    let status = migrate(&["status"]);
    assert_success(&status, "migrate status after down");
    assert_eq!(
        stdout_lines(&status),
        vec![
            format!("applied {INITIAL}"),
            format!("applied {SEQUENCED}"),
            format!("applied {BUILT_IN}"),
            format!("pending {PENDING}")
        ]
    );
    assert_success(&migrate(&["down", "--steps", "3"]), "migrate down the first three");
    let status = migrate(&["status"]);
    assert_eq!(stdout_lines(&status), listed("pending"));

    // The environment variable works as the flag does.
    let up = Command::new(env!("CARGO_BIN_EXE_grantd"))
        .args(["migrate", "up"])
        .env("GRANTD_DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run grantd");
    assert_success(&up, "migrate up via GRANTD_DATABASE_URL");
    let status = migrate(&["status"]);
    assert_eq!(stdout_lines(&status), listed("applied"));

    // A database that cannot be opened is a failure exit, not a panic or a success.
    let missing = dir.path().join("no-such-dir").join("grantd.db");
    let bad = grantd(&["migrate", "--database-url", &format!("sqlite://{}?mode=rw", missing.display()), "status"]);
    assert!(!bad.status.success());
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stderr));
}
