//! WatchChanges: replay then live delivery, in revision order, across replicas, with
//! filters, and a bounded buffer for slow watchers.

mod common;

use std::time::Duration;

use common::{ADMIN, Bearer, TestServer, add_member, create_org, create_permission, proto as pb, wire};
use grantd::{api::pb::audit_service_client::AuditServiceClient, auth::Claims};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};

backend_tests!(
    replays_stored_changes_then_delivers_new_ones_in_order,
    a_change_committed_on_one_replica_reaches_a_watcher_on_another,
    organization_filter_and_rights_apply_to_the_stream,
    a_watcher_that_falls_behind_is_told_where_to_resume,
    watchers_that_arrive_while_writes_go_on_miss_nothing,
    a_watcher_after_a_quiet_stretch_gets_its_backlog_from_the_database,
    reads_honour_at_least_revision,
    a_watcher_is_cut_off_before_the_first_change_after_its_right_is_revoked,
    a_watcher_rereads_its_right_even_when_no_change_reaches_it,
    a_watcher_whose_token_expires_is_ended_unauthenticated,
    a_stream_ends_resumably_after_its_longest_lifetime,
    watch_streams_are_capped_per_caller_and_per_process,
    a_watcher_that_takes_nothing_is_ended_when_its_buffer_stays_full,
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

/// The status a stream ends with, once every change before it has been read.
async fn end(stream: &mut Streaming<pb::WatchChangesResponse>) -> Status {
    match tokio::time::timeout(WAIT, stream.next()).await.expect("the stream ends within the wait") {
        Some(Err(status)) => status,
        Some(Ok(response)) => panic!("another change instead of the end: {:?}", response.change),
        None => panic!("the stream ended without a status to resume from"),
    }
}

fn resume_from(status: &Status) -> u64 {
    let (_, revision) = status.message().rsplit_once("after_revision = ").expect("a revision to resume after");
    revision.parse().unwrap_or_else(|_| panic!("a revision in {:?}", status.message()))
}

/// acme, with `viewer` holding view_org_users there and `alice` documents:read.
async fn viewer_fixture(server: &TestServer) {
    create_org(server, "acme").await;
    create_permission(server, "documents:read").await;
    add_member(server, "acme", "viewer").await;
    add_member(server, "acme", "alice").await;
    grant(server, "acme", "viewer", vec!["view_org_users".into()]).await;
    grant(server, "acme", "alice", vec!["documents:read".into()]).await;
}

async fn revoke(server: &TestServer, org: &str, user: &str, name: &str) -> u64 {
    server
        .grants()
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: org.into(),
            user_id: user.into(),
            permission_names: vec![name.into()],
            ..Default::default()
        })
        .await
        .expect("revoke")
        .into_inner()
        .revision
}

fn audit_with(server: &TestServer, token: &str) -> AuditServiceClient<common::Authed> {
    AuditServiceClient::new(server.channel_as(Bearer::new(token)))
}

async fn watch_as(
    server: &TestServer,
    token: &str,
    after_revision: u64,
    org: &str,
) -> Streaming<pb::WatchChangesResponse> {
    audit_with(server, token)
        .watch_changes(pb::WatchChangesRequest { after_revision, organization_id: org.into() })
        .await
        .expect("watch")
        .into_inner()
}

/// The right to a stream is the right to each change in it: unary reads are denied the
/// moment view_org_users is removed, and so must the stream be, before it delivers the
/// revocation or anything after it.
async fn a_watcher_is_cut_off_before_the_first_change_after_its_right_is_revoked(server: TestServer) {
    viewer_fixture(&server).await;
    let viewer = common::token("viewer", false);
    let mut stream = watch_as(&server, &viewer, server.latest_revision().await, "acme").await;

    // A revocation that is not the watcher's own leaves it watching.
    let other = revoke(&server, "acme", "alice", "documents:read").await;
    let change = next(&mut stream).await;
    assert_eq!((change.revision, change.kind()), (other, pb::ChangeKind::GrantRemoved));

    let revoked = revoke(&server, "acme", "viewer", "view_org_users").await;
    add_member(&server, "acme", "carol").await;
    let status = end(&mut stream).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("view_org_users"), "{}", status.message());
    assert_eq!(resume_from(&status), other, "the last change delivered; {revoked} and after are not");
    let denied = audit_with(&server, &viewer)
        .list_changes(pb::ListChangesRequest { organization_id: "acme".into(), ..Default::default() })
        .await
        .expect_err("unary reads are denied too");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// A replica whose feed would not poll again for an hour still re-reads its watchers'
/// rights every `reauthorize_every`, whether or not any change reaches them.
async fn a_watcher_rereads_its_right_even_when_no_change_reaches_it(server: TestServer) {
    viewer_fixture(&server).await;
    let replica = server
        .replica(|options| {
            options.watch_poll_interval = Duration::from_secs(3600);
            options.watch_limits.reauthorize_every = Duration::from_millis(200);
        })
        .await;
    let viewer = common::token("viewer", false);
    let start = server.latest_revision().await;
    let mut stream = watch_as(&replica, &viewer, start, "acme").await;
    // The subscription is in place (its replay found nothing): now lose the right.
    tokio::time::sleep(Duration::from_millis(300)).await;
    revoke(&server, "acme", "viewer", "view_org_users").await;
    let status = end(&mut stream).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(resume_from(&status), start);
}

/// Unary calls are refused once a token expires (past the 30 s leeway); a stream opened
/// with it must end then too, with UNAUTHENTICATED, so the client resumes with a fresh
/// token.
async fn a_watcher_whose_token_expires_is_ended_unauthenticated(server: TestServer) {
    viewer_fixture(&server).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    // Accepted for about three more seconds.
    let claims = Claims { sub: ADMIN.into(), exp: now - 27, scope: Some("grants:admin".into()), ..Claims::default() };
    let expiring = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::TEST_SECRET),
    )
    .expect("sign");
    let start = server.latest_revision().await;
    let mut stream = watch_as(&server, &expiring, start, "").await;
    let added = grant(&server, "acme", "alice", vec!["view_org_users".into()]).await;
    assert_eq!(next(&mut stream).await.revision, added, "the stream serves while the token is valid");
    let status = end(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{}", status.message());
    assert_eq!(resume_from(&status), added);
    // A fresh token resumes exactly there.
    add_member(&server, "acme", "dave").await;
    let mut resumed = watch_as(&server, &common::token(ADMIN, true), added, "").await;
    assert_eq!(next(&mut resumed).await.revision, added + 1);
}

/// A stream ends after the longest lifetime, with UNAVAILABLE naming where to resume, and
/// resuming there misses nothing.
async fn a_stream_ends_resumably_after_its_longest_lifetime(server: TestServer) {
    viewer_fixture(&server).await;
    let replica = server.replica(|options| options.watch_limits.max_lifetime = Duration::from_secs(1)).await;
    let start = server.latest_revision().await;
    let mut stream = watch(&replica, start, "acme").await;
    add_member(&server, "acme", "carol").await;
    let delivered = next(&mut stream).await.revision;
    let status = end(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(resume_from(&status), delivered);
    add_member(&server, "acme", "dave").await;
    let mut resumed = watch(&replica, resume_from(&status), "acme").await;
    assert_eq!(next(&mut resumed).await.revision, delivered + 1);
}

/// Every open stream costs buffers; one caller may not open them without bound, nor may
/// all callers together.
async fn watch_streams_are_capped_per_caller_and_per_process(server: TestServer) {
    viewer_fixture(&server).await;
    let replica = server
        .replica(|options| {
            options.watch_limits.per_caller = 2;
            options.watch_limits.per_process = 3;
        })
        .await;
    let viewer = common::token("viewer", false);
    let first = watch_as(&replica, &viewer, 0, "acme").await;
    let _second = watch_as(&replica, &viewer, 0, "acme").await;
    let refused = audit_with(&replica, &viewer)
        .watch_changes(pb::WatchChangesRequest { after_revision: 0, organization_id: "acme".into() })
        .await
        .expect_err("a third stream of one caller");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("viewer"), "{}", refused.message());

    let admin = common::token(ADMIN, true);
    let _third = watch_as(&replica, &admin, 0, "").await;
    let refused = audit_with(&replica, &admin)
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .expect_err("a fourth stream on the process");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // Closing a stream gives its place back.
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        let attempt = audit_with(&replica, &viewer)
            .watch_changes(pb::WatchChangesRequest { after_revision: 0, organization_id: "acme".into() })
            .await;
        if let Ok(stream) = attempt {
            reopened = Some(stream.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reopened = reopened.expect("a closed stream's place is free again");
    assert_eq!(next(&mut reopened).await.revision, 1);
}

/// A client that opens a stream and reads nothing: the server must not hold what it
/// cannot send for as long as the client likes. Once the watcher's buffer has been full
/// for the stall timeout, the stream ends with ABORTED naming where to resume, after the
/// changes already buffered.
async fn a_watcher_that_takes_nothing_is_ended_when_its_buffer_stays_full(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let replica = server
        .replica(|options| {
            // Far more than this test writes: the feed's own buffer is not what ends it.
            options.watch_buffer = 1 << 16;
            options.watch_limits.stall_timeout = Duration::from_millis(300);
        })
        .await;
    let start = server.latest_revision().await;
    let authorization = format!("Bearer {}", common::token(ADMIN, true));
    let request = pb::WatchChangesRequest { after_revision: start, organization_id: String::new() };
    let stalled = wire::open_stream(
        replica.addr,
        "/grants.v1.AuditService/WatchChanges",
        &[("authorization", &authorization)],
        &request.encode_to_vec(),
        1024,
    )
    .await;
    let names: Vec<String> = (0..1000).map(|i| format!("p{i:04}")).collect();
    for chunk in names.chunks(100) {
        futures::future::join_all(chunk.iter().map(|name| create_permission(&server, name))).await;
    }
    grant(&server, "acme", "alice", names).await;
    let end = server.latest_revision().await;
    // Long enough for the buffer to fill and stay full past the stall timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (messages, status) = stalled.read_to_end().await;
    let revisions: Vec<u64> = messages
        .iter()
        .map(|bytes| {
            pb::WatchChangesResponse::decode(bytes.as_slice()).expect("a change").change.expect("set").revision
        })
        .collect();
    assert_eq!(status.code(), Code::Aborted, "{status:?} after {} changes", revisions.len());
    assert!(revisions.len() < 1500, "ended long before the last of {} changes: {}", end - start, revisions.len());
    assert_eq!(revisions, ((start + 1)..=(start + revisions.len() as u64)).collect::<Vec<_>>(), "in order, no gaps");
    assert_eq!(resume_from(&status), start + revisions.len() as u64);
    let mut resumed = watch(&replica, resume_from(&status), "").await;
    assert_eq!(next(&mut resumed).await.revision, resume_from(&status) + 1);
}
