//! WatchChanges: replay then live delivery, in revision order, across replicas, with
//! filters, and a bounded buffer for slow watchers.

mod common;

use std::time::Duration;

use common::{TestServer, add_member, create_org, create_permission, proto as pb};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

backend_tests!(
    replays_stored_changes_then_delivers_new_ones_in_order,
    a_change_committed_on_one_replica_reaches_a_watcher_on_another,
    organization_filter_and_rights_apply_to_the_stream,
    a_watcher_that_falls_behind_is_told_where_to_resume,
    watchers_that_arrive_while_writes_go_on_miss_nothing,
    a_watcher_after_a_quiet_stretch_gets_its_backlog_from_the_database,
    reads_honour_at_least_revision
);

const WAIT: Duration = Duration::from_secs(10);

async fn next(stream: &mut Streaming<pb::WatchChangesResponse>) -> pb::Change {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a change within the wait")
        .expect("the stream is open")
        .expect("a change, not an error")
        .change
        .expect("change set")
}

async fn watch(server: &TestServer, after_revision: u64, organization_id: &str) -> Streaming<pb::WatchChangesResponse> {
    server
        .audit()
        .watch_changes(pb::WatchChangesRequest { after_revision, organization_id: organization_id.into() })
        .await
        .expect("watch")
        .into_inner()
}

async fn grant(server: &TestServer, org: &str, user: &str, names: Vec<String>) -> u64 {
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: org.into(),
            user_id: user.into(),
            permission_names: names,
            ..Default::default()
        })
        .await
        .expect("grant")
        .into_inner()
        .revision
}

async fn replays_stored_changes_then_delivers_new_ones_in_order(server: TestServer) {
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    let stored = server.latest_revision().await;
    assert_eq!(stored, 3);

    let mut stream = watch(&server, 1, "").await;
    let replayed: Vec<u64> = [next(&mut stream).await, next(&mut stream).await].iter().map(|c| c.revision).collect();
    assert_eq!(replayed, vec![2, 3], "stored changes after revision 1, in order");

    let revision = grant(&server, "acme", "alice", vec!["documents:read".into()]).await;
    let live = next(&mut stream).await;
    assert_eq!(live.revision, revision);
    assert_eq!(live.kind(), pb::ChangeKind::GrantAdded);
    assert_eq!(live.user_id, "alice");

    // Many changes in several transactions arrive complete and in order.
    for i in 0..5 {
        create_permission(&server, &format!("p{i}")).await;
    }
    let revisions: Vec<u64> = {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(next(&mut stream).await.revision);
        }
        seen
    };
    assert_eq!(revisions, ((revision + 1)..=(revision + 5)).collect::<Vec<_>>());
}

async fn a_change_committed_on_one_replica_reaches_a_watcher_on_another(server: TestServer) {
    let replica = server.replica(|_| {}).await;
    create_org(&server, "acme").await;
    let mut stream = watch(&replica, server.latest_revision().await, "").await;
    create_permission(&server, "documents:read").await;
    let change = next(&mut stream).await;
    assert_eq!(change.kind(), pb::ChangeKind::PermissionCreated);
    assert_eq!(change.revision, 2);
}

/// The feed reads only the revision counter while nobody watches; a watcher arriving
/// in the middle of a run of writes must still get every change once, in order.
async fn watchers_that_arrive_while_writes_go_on_miss_nothing(server: TestServer) {
    const WRITES: u64 = 40;
    let mut directory = server.directory();
    let writer = tokio::spawn(async move {
        for i in 0..WRITES {
            let name = format!("p{i}");
            directory.create_permission(pb::CreatePermissionRequest { name, description: String::new() }).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, tonic::Status>(())
    });
    let mut watchers = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(90)).await;
        watchers.push(watch(&server, 0, "").await);
    }
    writer.await.expect("writer task").expect("writes");
    for mut stream in watchers {
        let mut seen = Vec::new();
        for _ in 0..WRITES {
            seen.push(next(&mut stream).await.revision);
        }
        assert_eq!(seen, (1..=WRITES).collect::<Vec<_>>(), "every revision once, in order");
    }
}

/// While nobody watches, the feed sleeps and broadcasts nothing; the first watcher after
/// many changes must get them from its replay, not as a burst through the feed's buffer
/// (eight changes here), which it could not keep up with.
async fn a_watcher_after_a_quiet_stretch_gets_its_backlog_from_the_database(server: TestServer) {
    let replica = server.replica(|options| options.watch_buffer = 8).await;
    const WRITES: u64 = 60;
    for i in 0..WRITES {
        create_permission(&server, &format!("p{i}")).await;
    }
    // Several poll intervals with nobody watching.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stream = watch(&replica, 0, "").await;
    for expected in 1..=WRITES {
        assert_eq!(next(&mut stream).await.revision, expected, "every stored change once, in order");
    }
    create_permission(&server, "after").await;
    assert_eq!(next(&mut stream).await.revision, WRITES + 1, "then the live ones");
}

async fn organization_filter_and_rights_apply_to_the_stream(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "globex").await;
    create_permission(&server, "view_org_users").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "viewer").await;
    grant(&server, "acme", "viewer", vec!["view_org_users".into()]).await;

    let mut viewer = server.audit_as("viewer");
    let denied = viewer
        .watch_changes(pb::WatchChangesRequest { after_revision: 0, organization_id: "globex".into() })
        .await
        .expect_err("no rights in globex");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let everything = viewer
        .watch_changes(pb::WatchChangesRequest { after_revision: 0, organization_id: String::new() })
        .await
        .expect_err("all organizations is admin-only");
    assert_eq!(everything.code(), Code::PermissionDenied);

    let after = server.latest_revision().await;
    let mut stream = viewer
        .watch_changes(pb::WatchChangesRequest { after_revision: after, organization_id: "acme".into() })
        .await
        .expect("viewer watches acme")
        .into_inner();
    add_member(&server, "globex", "bob").await;
    create_permission(&server, "documents:write").await;
    add_member(&server, "acme", "carol").await;
    let change = next(&mut stream).await;
    assert_eq!((change.organization_id.as_str(), change.user_id.as_str()), ("acme", "carol"));
    assert_eq!(change.kind(), pb::ChangeKind::MemberAdded);
}

async fn a_watcher_that_falls_behind_is_told_where_to_resume(server: TestServer) {
    let replica = server.replica(|options| options.watch_buffer = 8).await;
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let names: Vec<String> = (0..1000).map(|i| format!("p{i:04}")).collect();
    for chunk in names.chunks(100) {
        futures::future::join_all(chunk.iter().map(|name| create_permission(&server, name))).await;
    }
    let start = server.latest_revision().await;

    // Subscribe, then let 3,000 changes commit without reading any of them.
    let mut stream = watch(&replica, start, "").await;
    for user in ["bob", "carol", "dave"] {
        add_member(&server, "acme", user).await;
        grant(&server, "acme", user, names.clone()).await;
    }
    let end = server.latest_revision().await;

    let mut last = start;
    let status = loop {
        match tokio::time::timeout(WAIT, stream.next()).await.expect("the stream moves") {
            Some(Ok(response)) => {
                let revision = response.change.expect("change").revision;
                assert_eq!(revision, last + 1, "no gaps and no repeats before the stream ends");
                last = revision;
            }
            Some(Err(status)) => break status,
            None => panic!("the stream ended without telling the watcher where to resume (read up to {last} of {end})"),
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains(&format!("after_revision = {last}")), "{}", status.message());

    // Resuming where it said catches up completely.
    let mut resumed = watch(&replica, last, "").await;
    for expected in (last + 1)..=end {
        assert_eq!(next(&mut resumed).await.revision, expected);
    }
}

async fn reads_honour_at_least_revision(server: TestServer) {
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    let revision = grant(&server, "acme", "alice", vec!["documents:read".into()]).await;
    let ahead = revision + 100;

    let list = |at_least_revision| pb::ListUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        at_least_revision,
        ..Default::default()
    };
    let grants = server.grants().list_user_permissions(list(revision)).await.expect("fresh enough").into_inner();
    assert_eq!(grants.grants.len(), 1, "a read at the write's revision sees the write");
    let status = server.grants().list_user_permissions(list(ahead)).await.expect_err("ahead");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains(&ahead.to_string()), "{}", status.message());

    let members = |at_least_revision| pb::ListOrganizationMembersRequest {
        organization_id: "acme".into(),
        at_least_revision,
        ..Default::default()
    };
    assert_eq!(
        server
            .directory()
            .list_organization_members(members(revision))
            .await
            .expect("members")
            .into_inner()
            .members
            .len(),
        1
    );
    let status = server.directory().list_organization_members(members(ahead)).await.expect_err("ahead");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let memberships = |at_least_revision| pb::ListUserOrganizationsRequest {
        user_id: "alice".into(),
        at_least_revision,
        ..Default::default()
    };
    assert_eq!(
        server
            .directory()
            .list_user_organizations(memberships(revision))
            .await
            .expect("orgs")
            .into_inner()
            .memberships
            .len(),
        1
    );
    let status = server.directory().list_user_organizations(memberships(ahead)).await.expect_err("ahead");
    assert_eq!(status.code(), Code::FailedPrecondition);
}
