//! `grantd export` and `grantd import`, the binary as an operator runs it, against a real
//! server over SQLite and PostgreSQL.

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    ADMIN, TestServer, add_member, create_org, create_permission, grant_lines, member_ids, proto as pb, resource,
    snapshot, token,
};

const GRANTD: &str = env!("CARGO_BIN_EXE_grantd");

backend_tests!(
    an_export_imported_with_the_cli_gives_everyone_the_same_grants,
    a_malformed_line_is_named_and_nothing_of_its_batch_is_written,
    a_dry_run_reports_and_writes_nothing,
    an_auth0_answer_becomes_grants_on_its_api,
    ctrl_c_stops_between_batches_and_a_second_run_finishes,
);

/// Runs the binary to its end without holding up the server's runtime.
async fn grantd(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(GRANTD).args(&args).env_remove("GRANTD_TOKEN").output().expect("run grantd")
    })
    .await
    .expect("the grantd run")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn args(command: &str, server: &TestServer, rest: &[&str]) -> Vec<String> {
    let mut all =
        vec![command.to_owned(), "--addr".into(), server.addr.to_string(), "--token".into(), token(ADMIN, true)];
    all.extend(rest.iter().map(|s| (*s).to_owned()));
    all
}

fn write(path: &Path, lines: &[String]) {
    let mut file = std::fs::File::create(path).expect("create the file");
    for line in lines {
        writeln!(file, "{line}").expect("write a line");
    }
}

fn grant_line(organization: &str, user: &str, permission: &str) -> String {
    format!(
        r#"{{"grant": {{"organization_id": "{organization}", "user_id": "{user}", "permission": "{permission}"}}}}"#
    )
}

fn member_line(organization: &str, user: &str) -> String {
    format!(r#"{{"membership": {{"organization_id": "{organization}", "user_id": "{user}"}}}}"#)
}

async fn an_export_imported_with_the_cli_gives_everyone_the_same_grants(source: TestServer) {
    create_org(&source, "acme").await;
    let read = create_permission(&source, "documents:read").await;
    let write = create_permission(&source, "documents:write").await;
    for user in ["auth0|alice", "bob"] {
        add_member(&source, "acme", user).await;
        source
            .grants()
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: user.into(),
                permission_ids: vec![read.clone(), write.clone()],
                resource: resource("folder", "f1"),
                ..Default::default()
            })
            .await
            .expect("grant");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("grants.jsonl");
    let exported = grantd(args("export", &source, &[])).await;
    assert!(exported.status.success(), "{}", text(&exported));
    std::fs::write(&file, &exported.stdout).expect("keep the export");
    let first = String::from_utf8_lossy(&exported.stdout).lines().next().unwrap_or_default().to_owned();
    assert!(first.starts_with(r#"{"export":{"revision":"#), "the first line states the revision: {first}");

    let target =
        TestServer::start(source.backend, &format!("cli_bulk::target::{:?}", source.backend)).await.expect("target");
    let imported = grantd(args("import", &target, &[file.to_str().expect("path")])).await;
    assert!(imported.status.success(), "{}", text(&imported));
    assert!(text(&imported).contains("9 added, 2 already held, 0 rejected, 0 not written"), "{}", text(&imported));
    for user in ["auth0|alice", "bob"] {
        assert_eq!(grant_lines(&source, "acme", user).await, grant_lines(&target, "acme", user).await, "{user}");
    }
}

async fn a_malformed_line_is_named_and_nothing_of_its_batch_is_written(server: TestServer) {
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("grants.jsonl");
    write(
        &file,
        &[
            member_line("acme", "alice"),
            grant_line("acme", "alice", "documents:read"),
            member_line("acme", "bob"),
            r#"{"grant": {"organization_id": "acme", "user_id": "bob", "permision": "documents:read"}}"#.into(),
            member_line("acme", "carol"),
            grant_line("acme", "carol", "documents:nope"),
            member_line("acme", "dave"),
            grant_line("acme", "dave", "documents:read"),
        ],
    );
    let output = grantd(args("import", &server, &[file.to_str().expect("path"), "--batch-size", "2"])).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("line 4: unknown field `permision`"), "{said}");
    assert!(said.contains("line 6: grant.permission_name: there is no permission documents:nope"), "{said}");
    assert!(said.contains("4 added, 0 already held, 2 rejected, 2 not written"), "{said}");
    let users = member_ids(&server, "acme").await;
    assert_eq!(users, vec!["alice", "dave"], "bob's and carol's batches wrote nothing");
}

async fn a_dry_run_reports_and_writes_nothing(server: TestServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("grants.jsonl");
    write(
        &file,
        &[
            r#"{"organization": {"id": "acme"}}"#.into(),
            r#"{"permission": {"name": "documents:read"}}"#.into(),
            member_line("acme", "alice"),
            grant_line("acme", "alice", "documents:read"),
        ],
    );
    let before = snapshot(&server).await;
    let output =
        grantd(args("import", &server, &[file.to_str().expect("path"), "--dry-run", "--batch-size", "1"])).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("4 would be added, 0 already held, 0 rejected"), "{}", text(&output));
    assert_eq!(snapshot(&server).await, before);
}

async fn an_auth0_answer_becomes_grants_on_its_api(server: TestServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("permissions.json");
    std::fs::write(
        &file,
        r#"[{"permission_name": "read:reports", "description": "Read reports", "resource_server_name": "Reports",
             "resource_server_identifier": "https://reports.example.com/", "sources": [{"source_type": "DIRECT"}]},
            {"permission_name": "create:reports", "description": "", "resource_server_name": "Reports",
             "resource_server_identifier": "https://reports.example.com/", "sources": []}]"#,
    )
    .expect("write");
    let rest = [file.to_str().expect("path"), "--from", "auth0", "--organization", "acme", "--user", "auth0|alice"];
    let output = grantd(args("import", &server, &rest)).await;
    assert!(output.status.success(), "{}", text(&output));
    let grants: Vec<String> = grant_lines(&server, "acme", "auth0|alice")
        .await
        .into_iter()
        .map(|g| g.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        grants,
        vec!["create:reports api/https://reports.example.com/", "read:reports api/https://reports.example.com/"]
    );
}

async fn ctrl_c_stops_between_batches_and_a_second_run_finishes(server: TestServer) {
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("grants.jsonl");
    let users = 20_000;
    let lines: Vec<String> = (0..users)
        .flat_map(|u| {
            [member_line("acme", &format!("u{u:05}")), grant_line("acme", &format!("u{u:05}"), "documents:read")]
        })
        .collect();
    write(&file, &lines);
    let run = args("import", &server, &[file.to_str().expect("path"), "--batch-size", "20"]);
    let child = Command::new(GRANTD)
        .args(&run)
        .env_remove("GRANTD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the import");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.count_rows("grants").await == 0 {
        assert!(Instant::now() < deadline, "the import wrote nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(interrupted.success());
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("the import ends")).await.expect("wait");
    let said = text(&output);
    assert_eq!(output.status.code(), Some(130), "{said}");
    assert!(said.contains("stopped by Ctrl-C after line"), "{said}");
    assert!(said.contains("run the same command again to finish"), "{said}");
    let partial = server.count_rows("grants").await;
    assert!(partial > 0 && partial < users, "stopped part way: {partial} grants");
    // Batches are whole: every imported member has their grant.
    assert_eq!(server.count_rows("memberships").await, partial);

    let again = grantd(run).await;
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(server.count_rows("grants").await, users);
    assert!(text(&again).contains(&format!("{} already held", 2 * partial)), "{}", text(&again));
}
