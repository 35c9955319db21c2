//! Schema migrations: down and up again on SQLite and PostgreSQL under a running server,
//! and the `grantd migrate` command line.

mod common;

use std::process::{Command, Output};

use common::{TestServer, add_member, create_org, create_permission, proto as pb};
use grantd::storage;
use tonic::Code;

backend_tests!(migrate_down_then_up_leaves_a_working_empty_schema);

const INITIAL: &str = "m20261123_000001_initial";

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
    assert_eq!(stdout_lines(&status), vec![format!("pending {INITIAL}")]);

    let up = grantd(&["migrate", "up", "--database-url", &url]);
    assert_success(&up, "migrate up");

    let status = grantd(&["migrate", "status", "--database-url", &url]);
    assert_success(&status, "migrate status");
    assert_eq!(stdout_lines(&status), vec![format!("applied {INITIAL}")]);
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
    assert_eq!(stdout_lines(&status), vec![format!("pending {INITIAL}")]);

    let up = migrate(&["up"]);
    assert_success(&up, "migrate up");
    let status = migrate(&["status"]);
    assert_success(&status, "migrate status after up");
    assert_eq!(stdout_lines(&status), vec![format!("applied {INITIAL}")]);
    assert_success(&migrate(&["up"]), "migrate up again");

    let down = migrate(&["down", "--steps", "1"]);
    assert_success(&down, "migrate down");
    let status = migrate(&["status"]);
    assert_success(&status, "migrate status after down");
    assert_eq!(stdout_lines(&status), vec![format!("pending {INITIAL}")]);

    // The environment variable works as the flag does.
    let up = Command::new(env!("CARGO_BIN_EXE_grantd"))
        .args(["migrate", "up"])
        .env("GRANTD_DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run grantd");
    assert_success(&up, "migrate up via GRANTD_DATABASE_URL");
    let status = migrate(&["status"]);
    assert_eq!(stdout_lines(&status), vec![format!("applied {INITIAL}")]);

    // A database that cannot be opened is a failure exit, not a panic or a success.
    let missing = dir.path().join("no-such-dir").join("grantd.db");
    let bad = grantd(&["migrate", "--database-url", &format!("sqlite://{}?mode=rw", missing.display()), "status"]);
    assert!(!bad.status.success());
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stderr));
}
