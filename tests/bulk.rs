//! BulkService over SQLite and PostgreSQL: export and import, as a backup, a move or a
//! failed run would use them.

mod common;

use std::collections::BTreeSet;

use common::{ADMIN, TestServer, grant_lines, member_ids, mint, proto as pb, snapshot, token};
use grantd::auth::TokenRequest;
use pb::bulk_record::Record;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Status};

backend_tests!(
    an_export_imported_into_an_empty_database_gives_everyone_the_same_grants,
    an_import_cut_off_half_way_and_run_again_ends_in_the_same_state,
    a_batch_with_bad_records_writes_nothing_and_names_each_one,
    a_dry_run_writes_nothing_and_an_import_is_in_the_change_log,
    an_export_resumes_at_its_revision_unless_what_is_left_changed,
    only_unscoped_administrators_move_grants_in_bulk,
    an_import_outlasts_the_request_timeout_but_not_a_stalled_client,
    rejected_batches_leave_nothing_while_the_writes_beside_them_land,
);

fn organization(id: &str) -> pb::BulkRecord {
    pb::BulkRecord {
        record: Some(Record::Organization(pb::Organization {
            id: id.into(),
            display_name: format!("{id} Inc."),
            ..Default::default()
        })),
    }
}

fn permission(name: &str) -> pb::BulkRecord {
    pb::BulkRecord {
        record: Some(Record::Permission(pb::Permission {
            name: name.into(),
            description: format!("may {name}"),
            ..Default::default()
        })),
    }
}

fn member(organization_id: &str, user_id: &str) -> pb::BulkRecord {
    pb::BulkRecord {
        record: Some(Record::Membership(pb::Membership {
            organization_id: organization_id.into(),
            user_id: user_id.into(),
            ..Default::default()
        })),
    }
}

fn grant(
    organization_id: &str,
    user_id: &str,
    permission_name: &str,
    resource: Option<(&str, &str)>,
) -> pb::BulkRecord {
    pb::BulkRecord {
        record: Some(Record::Grant(pb::Grant {
            organization_id: organization_id.into(),
            user_id: user_id.into(),
            permission_name: permission_name.into(),
            resource: resource.map(|(kind, id)| pb::Resource { r#type: kind.into(), id: id.into() }),
            granted_by: "migration".into(),
            ..Default::default()
        })),
    }
}

/// Two organizations, ten permissions, 120 members and 1,450 grants: the grants span
/// two export messages.
fn dataset() -> Vec<pb::BulkRecord> {
    let mut records = vec![organization("acme"), organization("globex")];
    records.extend((0..10).map(|i| permission(&format!("p.{i:02}"))));
    for u in 0..100 {
        let user = format!("u{u:03}");
        records.push(member("acme", &user));
        records.push(grant("acme", &user, "p.00", None));
        let folder = format!("f{}", u % 5);
        records.extend((0..10).map(|i| grant("acme", &user, &format!("p.{i:02}"), Some(("folder", &folder)))));
    }
    for u in 0..20 {
        let user = format!("g{u:02}");
        records.push(member("globex", &user));
        records.extend(
            (0..17).map(|i| grant("globex", &user, &format!("p.{:02}", i % 10), Some(("doc", &format!("d{i}"))))),
        );
    }
    records
}

fn batches(records: &[pb::BulkRecord], size: usize, dry_run: bool) -> Vec<pb::ImportGrantsRequest> {
    records.chunks(size).map(|chunk| pb::ImportGrantsRequest { records: chunk.to_vec(), dry_run }).collect()
}

async fn import(server: &TestServer, requests: Vec<pb::ImportGrantsRequest>) -> pb::ImportGrantsResponse {
    server.bulk().import_grants(tokio_stream::iter(requests)).await.expect("import").into_inner()
}

async fn export(
    server: &TestServer,
    organization_id: &str,
    cursor: &str,
) -> Result<Vec<pb::ExportGrantsResponse>, Status> {
    let request = pb::ExportGrantsRequest { organization_id: organization_id.into(), cursor: cursor.into() };
    let mut stream = server.bulk().export_grants(request).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.next().await {
        messages.push(message?);
    }
    Ok(messages)
}

fn records_of(messages: &[pb::ExportGrantsResponse]) -> Vec<pb::BulkRecord> {
    messages.iter().flat_map(|m| m.records.clone()).collect()
}

fn at(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(|t| format!("{}.{:09}", t.seconds, t.nanos)).unwrap_or_default()
}

/// Everything a server holds, as an export shows it, without what each installation
/// mints for itself (permission ids, the built-in rights' creation time); without any
/// time when `times` is false.
async fn state(server: &TestServer, times: bool) -> BTreeSet<String> {
    let at = |t: &Option<prost_types::Timestamp>| if times { at(t) } else { String::new() };
    let messages = export(server, "", "").await.expect("export");
    records_of(&messages)
        .into_iter()
        .map(|record| match record.record.expect("a record") {
            Record::Organization(o) => format!("organization {} {} {}", o.id, o.display_name, at(&o.created_at)),
            Record::Permission(p) => format!("permission {} {} {}", p.name, p.description, p.built_in),
            Record::Membership(m) => {
                format!("membership {} {} {} {}", m.organization_id, m.user_id, at(&m.added_at), m.added_by)
            }
            Record::Grant(g) => {
                let r = g.resource.expect("resource");
                format!(
                    "grant {} {} {} {}/{} {} {}",
                    g.organization_id,
                    g.user_id,
                    g.permission_name,
                    r.r#type,
                    r.id,
                    at(&g.granted_at),
                    g.granted_by
                )
            }
        })
        .collect()
}

async fn another_server(server: &TestServer, name: &str) -> TestServer {
    TestServer::start(server.backend, &format!("bulk::{name}::{:?}", server.backend)).await.expect("a second server")
}

async fn an_export_imported_into_an_empty_database_gives_everyone_the_same_grants(source: TestServer) {
    let records = dataset();
    let first = import(&source, batches(&records, 500, false)).await;
    assert_eq!((first.rejected, first.not_written), (0, 0), "{:?}", first.rejections);
    assert_eq!(first.added, records.len() as u64);

    let messages = export(&source, "", "").await.expect("export");
    assert!(messages.len() >= 3, "the grants span pages: {} messages", messages.len());
    let revision = messages[0].revision;
    assert!(revision > 0 && messages.iter().all(|m| m.revision == revision), "one snapshot, one revision");
    let exported = records_of(&messages);
    // The catalog holds the two built-in rights as well.
    assert_eq!(exported.len(), records.len() + 2);

    let target = another_server(&source, "target").await;
    let answer = import(&target, batches(&exported, 1000, false)).await;
    assert_eq!((answer.rejected, answer.not_written), (0, 0), "{:?}", answer.rejections);
    assert_eq!((answer.added, answer.already_held), (records.len() as u64, 2), "only the built-in rights existed");

    for (organization, users) in [
        ("acme", (0..100).map(|u| format!("u{u:03}")).collect::<Vec<_>>()),
        ("globex", (0..20).map(|u| format!("g{u:02}")).collect()),
    ] {
        for user in users {
            let (before, after) =
                (grant_lines(&source, organization, &user).await, grant_lines(&target, organization, &user).await);
            assert!(!before.is_empty());
            assert_eq!(before, after, "{user} in {organization}");
        }
    }
    assert_eq!(state(&source, true).await, state(&target, true).await);
}

async fn an_import_cut_off_half_way_and_run_again_ends_in_the_same_state(server: TestServer) {
    let records = dataset();
    let all = batches(&records, 400, false);
    let sent = all[..2].to_vec();
    let grants_sent =
        sent.iter().flat_map(|b| &b.records).filter(|r| matches!(r.record, Some(Record::Grant(_)))).count();

    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    let mut client = server.bulk();
    let call = tokio::spawn(async move { client.import_grants(ReceiverStream::new(receiver)).await });
    for batch in sent {
        requests.send(batch).await.expect("the import takes the batch");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.count_rows("grants").await < grants_sent as i64 {
        assert!(std::time::Instant::now() < deadline, "the first two batches were not written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The client dies with its stream open: what the server committed stays, nothing else.
    call.abort();
    drop(requests);
    assert_eq!(server.count_rows("grants").await, grants_sent as i64);

    let again = import(&server, all).await;
    assert_eq!((again.rejected, again.not_written), (0, 0), "{:?}", again.rejections);
    assert_eq!(again.added + again.already_held, records.len() as u64);
    assert_eq!(again.already_held, 800, "the two batches written before are already held");

    let clean = another_server(&server, "clean").await;
    import(&clean, batches(&records, 1000, false)).await;
    // Times are the importer's when a record has none: compare without them.
    assert_eq!(state(&server, false).await, state(&clean, false).await);
}

async fn a_batch_with_bad_records_writes_nothing_and_names_each_one(server: TestServer) {
    let good = vec![
        organization("acme"),
        permission("p.read"),
        member("acme", "alice"),
        grant("acme", "alice", "p.read", None),
    ];
    let unresolved = vec![
        member("acme", "bob"),
        grant("acme", "bob", "p.read", Some(("folder", "f1"))),
        grant("acme", "bob", "p.unknown", None),
        grant("acme", "carol", "p.read", None),
        grant("nowhere", "bob", "p.read", None),
    ];
    let malformed = vec![member("acme", "dave"), grant("acme", "dave", "P READ", None)];
    let later = vec![member("acme", "erin"), grant("acme", "erin", "p.read", None)];
    let requests = [good, unresolved, malformed, later]
        .into_iter()
        .map(|records| pb::ImportGrantsRequest { records, dry_run: false })
        .collect();
    let answer = import(&server, requests).await;

    let found: Vec<(u64, &str)> = answer.rejections.iter().map(|r| (r.position, r.field.as_str())).collect();
    assert_eq!(
        found,
        vec![
            (6, "grant.permission_name"),
            (7, "grant.user_id"),
            (8, "grant.organization_id"),
            (10, "grant.permission_name")
        ],
        "{:?}",
        answer.rejections
    );
    assert!(answer.rejections[0].reason.contains("p.unknown"), "{:?}", answer.rejections[0]);
    assert!(answer.rejections[1].reason.contains("carol is not a member of organization acme"));
    assert_eq!((answer.rejected, answer.not_written), (4, 3));
    assert_eq!(answer.added, 6, "the first and the last batch");

    // Nothing of the two bad batches was written: neither bob's nor dave's membership.
    let users = member_ids(&server, "acme").await;
    assert_eq!(users, vec!["alice", "erin"]);
    assert_eq!(server.count_rows("grants").await, 2);
}

async fn a_dry_run_writes_nothing_and_an_import_is_in_the_change_log(server: TestServer) {
    let records = dataset();
    let grant_count = records.iter().filter(|r| matches!(r.record, Some(Record::Grant(_)))).count();
    let before = snapshot(&server).await;
    let rehearsal = import(&server, batches(&records, 1000, true)).await;
    assert_eq!(rehearsal.added, records.len() as u64, "a dry run answers what the import would do");
    assert_eq!(snapshot(&server).await, before, "and writes nothing");

    let answer = import(&server, batches(&records, 1000, false)).await;
    assert_eq!(answer.added, records.len() as u64);
    assert!(answer.revision > before.revision);
    let mut added = 0;
    let mut after = 0;
    loop {
        let page = server.list_changes(after).await;
        let Some(last) = page.last() else { break };
        after = last.revision;
        for change in &page {
            if change.kind == pb::ChangeKind::GrantAdded as i32 {
                assert_eq!(change.actor, ADMIN, "the importer is the actor");
                added += 1;
            }
        }
    }
    assert_eq!(added, grant_count, "one change per imported grant, as watchers see them");
    assert_eq!(after, answer.revision);
}

async fn an_export_resumes_at_its_revision_unless_what_is_left_changed(server: TestServer) {
    import(&server, batches(&dataset(), 1000, false)).await;
    let full = export(&server, "", "").await.expect("export");
    let revision = full[0].revision;
    let cut = full.len() - 2;
    let cursor = full[cut - 1].cursor.clone();

    // A change that only touches what was already sent leaves the snapshot as it was.
    server
        .directory()
        .add_user_to_organization(pb::AddUserToOrganizationRequest {
            organization_id: "acme".into(),
            user_id: "aaa".into(),
        })
        .await
        .expect("a membership before the cursor");
    let rest = export(&server, "", &cursor).await.expect("resume");
    assert!(rest.iter().all(|m| m.revision == revision), "the resumed export keeps its revision");
    let mut joined = records_of(&full[..cut]);
    joined.extend(records_of(&rest));
    assert_eq!(joined, records_of(&full), "nothing lost, nothing twice");

    // A grant for the last user in key order is still ahead of the cursor.
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "globex".into(),
            user_id: "g19".into(),
            permission_names: vec!["p.09".into()],
            resource: Some(pb::Resource { r#type: "zone".into(), id: "z9".into() }),
            ..Default::default()
        })
        .await
        .expect("a grant ahead of the cursor");
    let refused = export(&server, "", &cursor).await.expect_err("the snapshot is gone");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(refused.message().contains("export again from the start"), "{}", refused.message());

    let foreign = export(&server, "acme", &cursor).await.expect_err("a cursor of another export");
    assert_eq!(foreign.code(), Code::InvalidArgument, "{foreign:?}");

    let acme = export(&server, "acme", "").await.expect("one organization");
    let records = records_of(&acme);
    assert!(records.iter().all(|r| match &r.record {
        Some(Record::Organization(o)) => o.id == "acme",
        Some(Record::Membership(m)) => m.organization_id == "acme",
        Some(Record::Grant(g)) => g.organization_id == "acme",
        _ => true,
    }));
    assert_eq!(records.iter().filter(|r| matches!(r.record, Some(Record::Grant(_)))).count(), 1100);
}

async fn only_unscoped_administrators_move_grants_in_bulk(server: TestServer) {
    let before = snapshot(&server).await;
    let scoped_admin = mint(TokenRequest {
        subject: "scoped".into(),
        admin: true,
        ttl: std::time::Duration::from_secs(600),
        organizations: Some(vec!["acme".into()]),
        issuer: None,
        audience: None,
    });
    for caller in [token("mallory", false), scoped_admin] {
        let request = vec![pb::ImportGrantsRequest { records: vec![organization("acme")], dry_run: false }];
        let denied = server.bulk_with(&caller).import_grants(tokio_stream::iter(request)).await.expect_err("import");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let empty: Vec<pb::ImportGrantsRequest> = Vec::new();
        let denied =
            server.bulk_with(&caller).import_grants(tokio_stream::iter(empty)).await.expect_err("empty import");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied =
            server.bulk_with(&caller).export_grants(pb::ExportGrantsRequest::default()).await.expect_err("export");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    }
    assert_eq!(snapshot(&server).await, before);
}

async fn an_import_outlasts_the_request_timeout_but_not_a_stalled_client(server: TestServer) {
    let limit = std::time::Duration::from_millis(400);
    let short = server.replica(|options| options.request_timeout = limit).await;
    let records = vec![organization("acme"), permission("p.read"), member("acme", "alice"), member("acme", "bob")];

    // Four batches, a pause before each: the import lasts longer than the limit, no wait does.
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    let call = tokio::spawn({
        let mut client = short.bulk();
        async move { client.import_grants(ReceiverStream::new(receiver)).await }
    });
    for record in records {
        tokio::time::sleep(limit / 2).await;
        requests.send(pb::ImportGrantsRequest { records: vec![record], dry_run: false }).await.expect("send");
    }
    drop(requests);
    let answer = call.await.expect("the call").expect("a long import").into_inner();
    assert_eq!(answer.added, 4);

    // A client that sends one batch and then nothing is let go after the limit.
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    let call = tokio::spawn({
        let mut client = short.bulk();
        async move { client.import_grants(ReceiverStream::new(receiver)).await }
    });
    requests
        .send(pb::ImportGrantsRequest { records: vec![member("acme", "carol")], dry_run: false })
        .await
        .expect("send");
    let stalled = call.await.expect("the call").expect_err("a stalled import");
    assert_eq!(stalled.code(), Code::DeadlineExceeded, "{stalled:?}");
    assert!(stalled.message().contains("no batch arrived for 400 ms"), "{}", stalled.message());
    drop(requests);
    assert_eq!(short.count_rows("memberships").await, 3, "the batch before the stall was written");
}

/// Writes that arrive together may share a transaction (SQLite), so each must still
/// happen whole or not at all on its own: a rejected batch has already written its
/// membership when it finds the unknown permission, and only that batch is undone.
async fn rejected_batches_leave_nothing_while_the_writes_beside_them_land(server: TestServer) {
    import(&server, batches(&[organization("acme"), permission("p.read")], 2, false)).await;
    let revision_before = server.latest_revision().await;
    let calls = (0..12).map(|i| {
        let server = &server;
        async move {
            let (user, permission) =
                if i % 2 == 0 { (format!("good{i:02}"), "p.read") } else { (format!("bad{i:02}"), "p.unknown") };
            let records = vec![member("acme", &user), grant("acme", &user, permission, None)];
            (user, import(server, batches(&records, 2, false)).await)
        }
    });
    let answers = futures::future::join_all(calls).await;

    for (user, answer) in &answers {
        let accepted = user.starts_with("good");
        assert_eq!((answer.added, answer.rejected), if accepted { (2, 0) } else { (0, 1) }, "{user}: {answer:?}");
    }
    let good: Vec<String> = (0..12).step_by(2).map(|i| format!("good{i:02}")).collect();
    assert_eq!(member_ids(&server, "acme").await, good);
    assert_eq!(server.count_rows("grants").await, 6);
    let changes = server.list_changes(revision_before).await;
    assert_eq!(changes.len(), 12, "a membership and a grant of each good user: {changes:?}");
    assert!(changes.iter().all(|c| c.user_id.starts_with("good")), "{changes:?}");
}
