//! AuditService behaviour over SQLite and PostgreSQL: every committed change leaves one
//! event per change, in the same transaction, in revision order.

mod common;

use common::{TestServer, add_member, create_org, create_permission, proto as pb, resource};
use pb::ChangeKind as Kind;
use tonic::{Code, Request, Response, metadata::MetadataValue};

backend_tests!(
    writes_append_events_in_revision_order,
    write_that_changes_nothing_appends_nothing,
    list_changes_filters_by_organization,
    list_changes_pages_with_after_revision,
    failed_writes_append_nothing,
    list_changes_rejects_bad_arguments,
    bulk_revocations_record_each_grant_they_remove,
    concurrent_adds_each_get_their_own_answer_and_events,
    changes_a_writer_left_unnumbered_reach_the_feed,
);

const REQUEST_ID: &str = "x-request-id";

/// `message` with `x-request-id: id`.
fn with_id<T>(id: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(REQUEST_ID, MetadataValue::try_from(id).expect("ascii"));
    request
}

/// The message, after checking that the response echoes `id` in its metadata.
fn echoed<T>(id: &str, response: Response<T>) -> T {
    let echoed = response.metadata().get(REQUEST_ID).map(|v| v.to_str().expect("ascii").to_owned());
    assert_eq!(echoed.as_deref(), Some(id), "x-request-id echoed by the response");
    response.into_inner()
}

async fn all_changes(server: &TestServer, organization_id: &str) -> Vec<pb::Change> {
    server
        .audit()
        .list_changes(pb::ListChangesRequest {
            after_revision: 0,
            organization_id: organization_id.into(),
            page_size: 1000,
        })
        .await
        .expect("list changes")
        .into_inner()
        .changes
}

fn kind(change: &pb::Change) -> Kind {
    Kind::try_from(change.kind).expect("a known kind")
}

fn res(change: &pb::Change) -> Option<(&str, &str)> {
    change.resource.as_ref().map(|r| (r.r#type.as_str(), r.id.as_str()))
}

async fn writes_append_events_in_revision_order(server: TestServer) {
    let mut directory = server.directory();
    let mut grants = server.grants();

    let created = echoed(
        "req-create-org",
        directory
            .create_organization(with_id(
                "req-create-org",
                pb::CreateOrganizationRequest { id: "acme".into(), display_name: "Acme".into() },
            ))
            .await
            .expect("create organization"),
    );
    let read = echoed(
        "req-create-read",
        directory
            .create_permission(with_id(
                "req-create-read",
                pb::CreatePermissionRequest { name: "documents:read".into(), description: String::new() },
            ))
            .await
            .expect("create permission"),
    );
    let write = echoed(
        "req-create-write",
        directory
            .create_permission(with_id(
                "req-create-write",
                pb::CreatePermissionRequest { name: "documents:write".into(), description: String::new() },
            ))
            .await
            .expect("create permission"),
    );
    let (read_id, write_id) = (read.permission.expect("permission").id, write.permission.expect("permission").id);
    let member = echoed(
        "req-add-member",
        directory
            .add_user_to_organization(with_id(
                "req-add-member",
                pb::AddUserToOrganizationRequest { organization_id: "acme".into(), user_id: "alice".into() },
            ))
            .await
            .expect("add member"),
    );
    let added = echoed(
        "req-grant",
        grants
            .add_user_permissions(with_id(
                "req-grant",
                pb::AddUserPermissionsRequest {
                    organization_id: "acme".into(),
                    user_id: "alice".into(),
                    permission_ids: vec![read_id.clone(), write_id.clone()],
                    resource: resource("folder", "f1"),
                    ..Default::default()
                },
            ))
            .await
            .expect("grant"),
    );
    assert_eq!(added.added.len(), 2);
    let removed = echoed(
        "req-revoke",
        grants
            .remove_user_permissions(with_id(
                "req-revoke",
                pb::RemoveUserPermissionsRequest {
                    organization_id: "acme".into(),
                    user_id: "alice".into(),
                    permission_names: vec!["documents:read".into()],
                    resource: resource("folder", "f1"),
                    ..Default::default()
                },
            ))
            .await
            .expect("revoke"),
    );
    assert_eq!(removed.removed, vec![read_id.clone()]);
    let left = echoed(
        "req-remove-user",
        grants
            .remove_user_from_organization(with_id(
                "req-remove-user",
                pb::RemoveUserFromOrganizationRequest {
                    organization_id: "acme".into(),
                    user_id: "alice".into(),
                    allow_missing: false,
                },
            ))
            .await
            .expect("remove user"),
    );
    assert_eq!(left.removed_grant_count, 1);

    let changes = all_changes(&server, "").await;
    let kinds: Vec<Kind> = changes.iter().map(kind).collect();
    assert_eq!(
        kinds,
        vec![
            Kind::OrganizationCreated,
            Kind::PermissionCreated,
            Kind::PermissionCreated,
            Kind::MemberAdded,
            Kind::GrantAdded,
            Kind::GrantAdded,
            Kind::GrantRemoved,
            Kind::GrantRemoved,
            Kind::MemberRemoved,
        ]
    );
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, (1..=9).collect::<Vec<u64>>(), "consecutive revisions from 1");
    assert_eq!(server.latest_revision().await, 9);

    // Each write answers the revision of its last event, and its events carry its request id.
    let writes = [
        ("req-create-org", created.revision, 1..=1),
        ("req-create-read", read.revision, 2..=2),
        ("req-create-write", write.revision, 3..=3),
        ("req-add-member", member.revision, 4..=4),
        ("req-grant", added.revision, 5..=6),
        ("req-revoke", removed.revision, 7..=7),
        ("req-remove-user", left.revision, 8..=9),
    ];
    for (request_id, revision, events) in writes {
        assert_eq!(revision, *events.end(), "{request_id} answers the revision of its last event");
        for change in &changes[(*events.start() - 1) as usize..*events.end() as usize] {
            assert_eq!(change.request_id, request_id, "revision {}", change.revision);
        }
    }
    for change in &changes {
        assert!(!change.actor.is_empty(), "revision {} has an actor", change.revision);
        assert!(change.at.is_some(), "revision {} has a time", change.revision);
    }

    // What changed.
    let c = &changes;
    assert_eq!((c[0].organization_id.as_str(), c[0].user_id.as_str(), c[0].permission_id.as_str()), ("acme", "", ""));
    assert_eq!((c[1].organization_id.as_str(), c[1].permission_id.as_str()), ("", read_id.as_str()));
    assert_eq!((c[2].organization_id.as_str(), c[2].permission_id.as_str()), ("", write_id.as_str()));
    assert_eq!((c[3].organization_id.as_str(), c[3].user_id.as_str()), ("acme", "alice"));
    let mut granted = vec![c[4].permission_id.clone(), c[5].permission_id.clone()];
    granted.sort();
    let mut both = vec![read_id.clone(), write_id.clone()];
    both.sort();
    assert_eq!(granted, both);
    for change in &c[4..8] {
        assert_eq!((change.organization_id.as_str(), change.user_id.as_str()), ("acme", "alice"));
        assert_eq!(res(change), Some(("folder", "f1")));
    }
    assert_eq!(c[6].permission_id, read_id);
    assert_eq!(c[7].permission_id, write_id);
    assert_eq!((c[8].organization_id.as_str(), c[8].user_id.as_str()), ("acme", "alice"));
    assert_eq!(res(&c[8]), None);
}

async fn write_that_changes_nothing_appends_nothing(server: TestServer) {
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    let mut grants = server.grants();
    let grant = pb::AddUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        permission_ids: vec![read.clone()],
        resource: resource("folder", "f1"),
        ..Default::default()
    };
    let first = grants.add_user_permissions(grant.clone()).await.expect("grant").into_inner();
    let revision = server.latest_revision().await;
    assert_eq!(first.revision, revision);
    let changes = server.count_rows("changes").await;

    let again = grants.add_user_permissions(grant).await.expect("grant again").into_inner();
    assert!(again.added.is_empty());
    assert_eq!(again.already_held, vec![read.clone()]);
    assert_eq!(again.revision, revision);

    let member = server
        .directory()
        .add_user_to_organization(pb::AddUserToOrganizationRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
        })
        .await
        .expect("add member again")
        .into_inner();
    assert!(!member.created);
    assert_eq!(member.revision, revision);

    let not_held = grants
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: vec![read],
            resource: resource("folder", "f2"),
            ..Default::default()
        })
        .await
        .expect("revoke what is not held")
        .into_inner();
    assert!(not_held.removed.is_empty());
    assert_eq!(not_held.revision, revision);

    let nothing_on = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: String::new(),
            resources: vec![pb::OrganizationResource {
                r#type: "document".into(),
                id: "d9".into(),
                organization_id: "acme".into(),
            }],
            all_users: true,
        })
        .await
        .expect("revoke on a resource nobody holds")
        .into_inner();
    assert_eq!(nothing_on.results[0].removed_count, 0);
    assert_eq!(nothing_on.revision, revision);

    assert_eq!(server.latest_revision().await, revision);
    assert_eq!(server.count_rows("changes").await, changes);
}

async fn list_changes_filters_by_organization(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "globex").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    add_member(&server, "globex", "alice").await;
    add_member(&server, "globex", "bob").await;
    create_permission(&server, "documents:write").await;
    let mut grants = server.grants();
    for (org, user) in [("acme", "alice"), ("globex", "bob")] {
        grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: org.into(),
                user_id: user.into(),
                permission_names: vec!["documents:read".into(), "documents:write".into()],
                ..Default::default()
            })
            .await
            .expect("grant");
    }

    let all = all_changes(&server, "").await;
    assert_eq!(all.len(), 11);
    let acme = all_changes(&server, "acme").await;
    let expected: Vec<pb::Change> = all.iter().filter(|c| c.organization_id == "acme").cloned().collect();
    assert_eq!(acme, expected);
    assert_eq!(
        acme.iter().map(kind).collect::<Vec<_>>(),
        vec![Kind::OrganizationCreated, Kind::MemberAdded, Kind::GrantAdded, Kind::GrantAdded]
    );
    let globex = all_changes(&server, "globex").await;
    assert_eq!(globex.len(), 5);
    assert!(globex.iter().all(|c| c.organization_id == "globex"));
    assert!(globex.windows(2).all(|w| w[0].revision < w[1].revision));
    assert!(all_changes(&server, "initech").await.is_empty());

    // The organization filter leaves out the catalog; no filter includes it.
    assert_eq!(all.iter().filter(|c| kind(c) == Kind::PermissionCreated).count(), 2);
    assert_eq!(acme.len() + globex.len() + 2, all.len());

    // With after_revision, only the later ones of that organization.
    let cut = acme[1].revision;
    let later = server
        .audit()
        .list_changes(pb::ListChangesRequest { after_revision: cut, organization_id: "acme".into(), page_size: 0 })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(later.changes, acme[2..].to_vec());
    assert_eq!(later.latest_revision, all.last().expect("changes").revision);
}

async fn list_changes_pages_with_after_revision(server: TestServer) {
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    for user in ["alice", "bob", "carol"] {
        add_member(&server, "acme", user).await;
    }
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "bob".into(),
            permission_names: vec!["documents:read".into()],
            resource: resource("document", "d1"),
            ..Default::default()
        })
        .await
        .expect("grant");
    let all = all_changes(&server, "").await;
    assert_eq!(all.len(), 6);

    let mut audit = server.audit();
    let mut paged = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = audit
            .list_changes(pb::ListChangesRequest {
                after_revision: after,
                organization_id: String::new(),
                page_size: 2,
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.latest_revision, 6);
        assert!(page.changes.len() <= 2);
        let Some(last) = page.changes.last() else { break };
        after = last.revision;
        paged.extend(page.changes);
        pages += 1;
        assert!(pages <= 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);

    let tail = audit
        .list_changes(pb::ListChangesRequest { after_revision: 4, organization_id: String::new(), page_size: 100 })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(tail.changes, all[4..].to_vec());
    let beyond = audit
        .list_changes(pb::ListChangesRequest { after_revision: 6, organization_id: String::new(), page_size: 100 })
        .await
        .expect("list")
        .into_inner();
    assert!(beyond.changes.is_empty());
    assert_eq!(beyond.latest_revision, 6);
    let huge = audit
        .list_changes(pb::ListChangesRequest { after_revision: u64::MAX, organization_id: String::new(), page_size: 1 })
        .await
        .expect("after the largest revision")
        .into_inner();
    assert!(huge.changes.is_empty());
}

async fn failed_writes_append_nothing(server: TestServer) {
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;
    let revision = server.latest_revision().await;
    let changes = server.count_rows("changes").await;
    let mut grants = server.grants();

    // One unknown permission among known ones rejects the whole request.
    let unknown = uuid::Uuid::new_v4().to_string();
    let status = grants
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: vec![read.clone(), unknown],
            ..Default::default()
        })
        .await
        .expect_err("unknown permission");
    assert_eq!(status.code(), Code::NotFound);
    let status = grants
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: vec![read.clone()],
            permission_names: vec!["documents:nope".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown permission name");
    assert_eq!(status.code(), Code::NotFound);
    let status = grants
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "mallory".into(),
            permission_ids: vec![read.clone()],
            ..Default::default()
        })
        .await
        .expect_err("not a member");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = server
        .directory()
        .create_organization(pb::CreateOrganizationRequest { id: "acme".into(), display_name: String::new() })
        .await
        .expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = grants
        .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
            organization_id: "acme".into(),
            user_id: "mallory".into(),
            allow_missing: false,
        })
        .await
        .expect_err("not a member");
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(server.latest_revision().await, revision);
    assert_eq!(server.count_rows("changes").await, changes);
    assert_eq!(server.count_rows("grants").await, 0);
    let held = grants
        .check_permission(pb::CheckPermissionRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission: Some(pb::check_permission_request::Permission::PermissionId(read)),
            resource: None,
            at_least_revision: 0,
        })
        .await
        .expect("check")
        .into_inner();
    assert!(!held.allowed, "the rejected request granted nothing");
}

async fn list_changes_rejects_bad_arguments(server: TestServer) {
    create_org(&server, "acme").await;
    let mut audit = server.audit();
    let status = audit
        .list_changes(pb::ListChangesRequest { after_revision: 0, organization_id: String::new(), page_size: -1 })
        .await
        .expect_err("negative page size");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(common::bad_request_fields(&status), vec!["page_size"]);
    let status = audit
        .list_changes(pb::ListChangesRequest { after_revision: 0, organization_id: "ac me".into(), page_size: 1 })
        .await
        .expect_err("malformed organization id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(common::bad_request_fields(&status), vec!["organization_id"]);

    // A request id that is not a valid id is replaced by a minted one, never stored as sent.
    let response = server
        .directory()
        .create_organization(with_id(
            "has space",
            pb::CreateOrganizationRequest { id: "globex".into(), display_name: String::new() },
        ))
        .await
        .expect("create");
    let minted = response.metadata().get(REQUEST_ID).expect("a request id").to_str().expect("ascii").to_owned();
    assert_ne!(minted, "has space");
    let changes = all_changes(&server, "globex").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].request_id, minted);
}

/// (user, permission, resource type, resource id) of each event, sorted.
fn grant_events(changes: &[pb::Change]) -> Vec<(String, String, String, String)> {
    let mut events: Vec<_> = changes
        .iter()
        .map(|c| {
            assert_eq!(kind(c), Kind::GrantRemoved, "{c:?}");
            let (kind, id) = res(c).expect("a grant event names its resource");
            (c.user_id.clone(), c.permission_id.clone(), kind.to_owned(), id.to_owned())
        })
        .collect();
    events.sort();
    events
}

async fn changes_after(server: &TestServer, revision: u64) -> Vec<pb::Change> {
    server.list_changes(revision).await
}

/// RemoveResourcePermissions, DeletePermission, RemoveUserFromOrganization and
/// DeleteOrganization revoke in bulk: each removed grant gets its own event, at
/// consecutive revisions ending at the one the call answers, with the call's request id.
async fn bulk_revocations_record_each_grant_they_remove(server: TestServer) {
    create_org(&server, "acme").await;
    let (p1, p2) = (create_permission(&server, "p.one").await, create_permission(&server, "p.two").await);
    for user in ["alice", "bob", "carol"] {
        add_member(&server, "acme", user).await;
    }
    let mut grants = server.grants();
    for (user, permissions, on) in [
        ("alice", vec![p1.clone(), p2.clone()], "f1"),
        ("bob", vec![p1.clone()], "f1"),
        ("alice", vec![p1.clone()], "f2"),
        ("carol", vec![p2.clone()], "f3"),
        ("bob", vec![p2.clone()], "f3"),
    ] {
        grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: user.into(),
                permission_ids: permissions,
                resource: resource("folder", on),
                ..Default::default()
            })
            .await
            .expect("grant");
    }
    let owned = |user: &str, permission: &str, on: &str| {
        (user.to_owned(), permission.to_owned(), "folder".to_owned(), on.to_owned())
    };
    let on =
        |id: &str| pb::OrganizationResource { r#type: "folder".into(), id: id.into(), organization_id: "acme".into() };

    // Everybody's grants on f1, and on f9 where there are none.
    let start = server.latest_revision().await;
    let removed = echoed(
        "req-f1",
        grants
            .remove_resource_permissions(with_id(
                "req-f1",
                pb::RemoveResourcePermissionsRequest {
                    user_id: String::new(),
                    resources: vec![on("f9"), on("f1")],
                    all_users: true,
                },
            ))
            .await
            .expect("remove f1"),
    );
    let counts: Vec<u64> = removed.results.iter().map(|r| r.removed_count).collect();
    assert_eq!(counts, vec![0, 3]);
    assert_eq!(removed.revision, start + 3);
    let changes = changes_after(&server, start).await;
    let mut expected = vec![owned("alice", &p1, "f1"), owned("alice", &p2, "f1"), owned("bob", &p1, "f1")];
    expected.sort();
    assert_eq!(grant_events(&changes), expected);
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, vec![start + 1, start + 2, start + 3]);
    assert!(changes.iter().all(|c| c.request_id == "req-f1" && c.organization_id == "acme"), "{changes:?}");

    let nothing = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: String::new(),
            resources: vec![on("f1")],
            all_users: true,
        })
        .await
        .expect("remove nothing")
        .into_inner();
    assert_eq!(nothing.results[0].removed_count, 0);
    assert_eq!(nothing.revision, removed.revision, "nothing changed, so the current revision");

    // A permission still granted, deleted with force: its grant, then the permission.
    let start = server.latest_revision().await;
    let deleted = server
        .directory()
        .delete_permission(pb::DeletePermissionRequest { id: p1.clone(), force: true, allow_missing: false })
        .await
        .expect("delete permission")
        .into_inner();
    assert_eq!((deleted.revoked_grant_count, deleted.revision), (1, start + 2));
    let changes = changes_after(&server, start).await;
    assert_eq!(grant_events(&changes[..1]), vec![owned("alice", &p1, "f2")]);
    assert_eq!((kind(&changes[1]), changes[1].permission_id.as_str()), (Kind::PermissionDeleted, p1.as_str()));

    // A member: their grants, then the membership.
    let start = server.latest_revision().await;
    let left = grants
        .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
            organization_id: "acme".into(),
            user_id: "carol".into(),
            allow_missing: false,
        })
        .await
        .expect("remove carol")
        .into_inner();
    assert_eq!((left.removed_grant_count, left.revision), (1, start + 2));
    let changes = changes_after(&server, start).await;
    assert_eq!(grant_events(&changes[..1]), vec![owned("carol", &p2, "f3")]);
    assert_eq!((kind(&changes[1]), changes[1].user_id.as_str()), (Kind::MemberRemoved, "carol"));

    // The organization: the last grant, both members, then the organization.
    let start = server.latest_revision().await;
    let gone = server
        .directory()
        .delete_organization(pb::DeleteOrganizationRequest { id: "acme".into(), allow_missing: false })
        .await
        .expect("delete organization")
        .into_inner();
    assert_eq!((gone.removed_grant_count, gone.removed_member_count, gone.revision), (1, 2, start + 4));
    let changes = changes_after(&server, start).await;
    assert_eq!(grant_events(&changes[..1]), vec![owned("bob", &p2, "f3")]);
    let rest: Vec<Kind> = changes[1..].iter().map(kind).collect();
    assert_eq!(rest, vec![Kind::MemberRemoved, Kind::MemberRemoved, Kind::OrganizationDeleted]);
    assert_eq!(server.count_rows("grants").await, 0);
}

/// Adds that arrive together may be written together (on SQLite, in one transaction):
/// each caller must still get its own answer, and the trail its own events, as if each
/// add had run alone in some order.
async fn concurrent_adds_each_get_their_own_answer_and_events(server: TestServer) {
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    let write = create_permission(&server, "documents:write").await;
    const USERS: usize = 40;
    for user in 0..USERS {
        add_member(&server, "acme", &format!("user-{user}")).await;
    }
    let start = server.latest_revision().await;

    let add = |organization: &str, user: &str, names: &[&str], on: &str| pb::AddUserPermissionsRequest {
        organization_id: organization.into(),
        user_id: user.into(),
        permission_names: names.iter().map(|name| (*name).to_owned()).collect(),
        resource: resource("folder", on),
        ..Default::default()
    };
    let both = ["documents:read", "documents:write"];
    let mut requests: Vec<(String, pb::AddUserPermissionsRequest)> = (0..USERS)
        .map(|user| (format!("req-user-{user}"), add("acme", &format!("user-{user}"), &both, &format!("f{user}"))))
        .collect();
    // Three adds of overlapping grants: each grant goes in once, whoever comes first.
    requests.push(("req-shared-a".into(), add("acme", "user-0", &["documents:read"], "shared")));
    requests.push(("req-shared-b".into(), add("acme", "user-0", &["documents:read"], "shared")));
    requests.push(("req-shared-c".into(), add("acme", "user-0", &both, "shared")));
    // Adds that fail their checks, among adds that succeed.
    requests.push(("req-stranger".into(), add("acme", "stranger", &both, "f1")));
    requests.push(("req-unknown".into(), add("acme", "user-1", &["documents:read", "documents:nope"], "nope")));
    requests.push(("req-initech".into(), add("initech", "user-1", &both, "f1")));

    let calls = requests.iter().map(|(id, request)| {
        let mut grants = server.grants();
        let request = with_id(id, request.clone());
        async move { grants.add_user_permissions(request).await }
    });
    let answers = futures::future::join_all(calls).await;

    let changes = changes_after(&server, start).await;
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    let added_total: usize = answers.iter().flatten().map(|a| a.get_ref().added.len()).sum();
    assert_eq!(revisions, (start + 1..=start + added_total as u64).collect::<Vec<_>>(), "one event per added grant");
    let mut shared_added = Vec::new();
    for ((id, request), answer) in requests.iter().zip(answers) {
        let events: Vec<&pb::Change> = changes.iter().filter(|c| &c.request_id == id).collect();
        let answer = match (id.as_str(), answer) {
            ("req-stranger", Err(status)) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(events.is_empty(), "{id}: {events:?}");
                continue;
            }
            ("req-unknown" | "req-initech", Err(status)) => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}");
                assert!(events.is_empty(), "{id}: {events:?}");
                continue;
            }
            (_, answer) => echoed(id, answer.unwrap_or_else(|status| panic!("{id}: {status:?}"))),
        };
        let mut answered: Vec<String> = answer.added.iter().chain(&answer.already_held).cloned().collect();
        answered.sort();
        let mut asked: Vec<String> = request
            .permission_names
            .iter()
            .map(|name| if name == "documents:read" { &read } else { &write })
            .cloned()
            .collect();
        asked.sort();
        assert_eq!(answered, asked, "{id}: every permission asked is added or already held");
        if id.starts_with("req-shared") {
            shared_added.extend(answer.added.iter().cloned());
        } else {
            assert!(answer.already_held.is_empty(), "{id}: {answer:?}");
        }

        let mut recorded: Vec<String> = events.iter().map(|c| c.permission_id.clone()).collect();
        recorded.sort();
        let mut added = answer.added.clone();
        added.sort();
        assert_eq!(recorded, added, "{id}: one event per grant it added, with its request id");
        let on = request.resource.as_ref().map(|r| ("folder", r.id.as_str()));
        for event in &events {
            assert_eq!(kind(event), Kind::GrantAdded);
            assert_eq!((event.user_id.as_str(), res(event)), (request.user_id.as_str(), on), "{id}");
        }
        if let Some(last) = events.iter().map(|c| c.revision).max() {
            assert_eq!(answer.revision, last, "{id} answers the revision of its last event");
        }
        // What it found already held was added by another, at a revision it answers too.
        for held in &answer.already_held {
            let adding = changes
                .iter()
                .find(|c| &c.permission_id == held && c.user_id == request.user_id && res(c) == on)
                .unwrap_or_else(|| panic!("{id}: no event added {held}"));
            assert!(answer.revision >= adding.revision, "{id} answers {} before {adding:?}", answer.revision);
        }
    }
    shared_added.sort();
    let mut once = vec![read.clone(), write.clone()];
    once.sort();
    assert_eq!(shared_added, once, "each shared grant was added by exactly one of the adds that asked for it");
    assert_eq!(server.count_rows("grants").await, (USERS * 2 + 2) as i64, "the failed adds wrote nothing");
}

/// A write whose process ended after its commit and before its events were numbered
/// leaves them without a revision. Every process looks for such events and numbers them
/// after everything numbered before, so the feed still shows them, once, in order, and
/// the writes after them get later revisions.
async fn changes_a_writer_left_unnumbered_reach_the_feed(server: TestServer) {
    use sea_orm::{ConnectionTrait, Statement};
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let before = server.latest_revision().await;

    let backend = server.db.get_database_backend();
    let insert = match server.backend {
        common::Backend::Postgres => {
            "INSERT INTO pending_changes (write_id, kind, actor, request_id, at, organization_id, user_id) \
             VALUES ($1, $2, 'dead-writer', 'req-dead', $3, 'acme', 'bob')"
        }
        common::Backend::Sqlite => {
            "INSERT INTO pending_changes (write_id, kind, actor, request_id, at, organization_id, user_id) \
             VALUES (?1, ?2, 'dead-writer', 'req-dead', ?3, 'acme', 'bob')"
        }
    };
    let member_added = i16::try_from(pb::ChangeKind::MemberAdded as i32).expect("small kind");
    server
        .db
        .execute(Statement::from_sql_and_values(
            backend,
            insert,
            [uuid::Uuid::new_v4().into(), member_added.into(), chrono::Utc::now().into()],
        ))
        .await
        .expect("an event committed without a revision");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let numbered = loop {
        let changes = changes_after(&server, before).await;
        if let Some(change) = changes.iter().find(|c| c.request_id == "req-dead") {
            break change.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the unnumbered event never reached the feed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(numbered.revision, before + 1, "numbered after everything numbered before it");
    assert_eq!((numbered.actor.as_str(), numbered.user_id.as_str()), ("dead-writer", "bob"));

    let next = server
        .directory()
        .add_user_to_organization(pb::AddUserToOrganizationRequest {
            organization_id: "acme".into(),
            user_id: "carol".into(),
        })
        .await
        .expect("add member")
        .into_inner();
    assert_eq!(next.revision, before + 2, "later writes follow it");
    let revisions: Vec<u64> = changes_after(&server, 0).await.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, (1..=before + 2).collect::<Vec<_>>(), "no gap, no repeat");
}
