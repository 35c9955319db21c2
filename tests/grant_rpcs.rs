//! GrantService behaviour over SQLite and PostgreSQL.

mod common;

use std::collections::{HashMap, HashSet};

use common::{
    TestServer, add_member, bad_request_fields, create_org, create_permission, list_grants, proto as pb, resource,
};
use futures::future::join_all;
use pb::check_permission_request::Permission;
use tonic::Code;
use uuid::Uuid;

backend_tests!(
    add_check_list_and_remove_round_trip,
    one_unknown_permission_id_rejects_the_whole_batch,
    one_unknown_permission_name_rejects_the_whole_batch,
    adding_and_removing_twice_reports_the_work_as_done,
    an_add_answers_in_request_order_with_one_event_per_grant,
    a_batch_of_1000_is_granted_and_listed_back_in_pages,
    a_resources_grants_list_in_the_order_their_permissions_were_created,
    batch_writes_send_the_same_statements_for_1000_permissions_as_for_1,
    removing_a_member_revokes_their_grants_in_that_organization_only,
    removing_resource_permissions_per_user_and_for_all_users,
    grants_are_only_for_members_of_existing_organizations,
    check_permission_answers_from_resource_and_org_wide_grants,
    concurrent_checks_each_get_their_own_answer,
    list_user_permissions_filters_and_rejects_foreign_page_tokens,
    adds_racing_a_member_removal_leave_no_grant_behind,
    duplicates_count_once_towards_the_batch_limit,
);

async fn add_check_list_and_remove_round_trip(server: TestServer) {
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "auth0|alice").await;
    let mut grants = server.grants();

    let added = grants
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "auth0|alice".into(),
            permission_names: vec!["documents:read".into()],
            resource: resource("folder", "f1"),
            ..Default::default()
        })
        .await
        .expect("add")
        .into_inner();
    assert_eq!(added.added, vec![read.clone()]);
    assert!(added.already_held.is_empty());

    let check = grants
        .check_permission(pb::CheckPermissionRequest {
            organization_id: "acme".into(),
            user_id: "auth0|alice".into(),
            permission: Some(pb::check_permission_request::Permission::PermissionName("documents:read".into())),
            resource: resource("folder", "f1"),
            at_least_revision: added.revision,
        })
        .await
        .expect("check")
        .into_inner();
    assert!(check.allowed);
    assert_eq!(check.matched.expect("matched").permission_id, read);

    let removed = grants
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "auth0|alice".into(),
            permission_ids: vec![read.clone()],
            resource: resource("folder", "f1"),
            ..Default::default()
        })
        .await
        .expect("remove")
        .into_inner();
    assert_eq!(removed.removed, vec![read]);

    let status = grants
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "bob".into(),
            permission_names: vec!["documents:read".into()],
            ..Default::default()
        })
        .await
        .expect_err("bob is not a member");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Creates `count` permissions named `{prefix}.{i:04}`, a few at a time, and answers their
/// ids in name order.
async fn create_permissions(server: &TestServer, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}.{i:04}")).collect();
    let mut ids = Vec::with_capacity(count);
    for chunk in names.chunks(25) {
        ids.extend(join_all(chunk.iter().map(|name| create_permission(server, name))).await);
    }
    ids
}

fn add_request(
    organization_id: &str,
    user_id: &str,
    permission_ids: &[String],
    permission_names: &[&str],
    resource: Option<pb::Resource>,
) -> pb::AddUserPermissionsRequest {
    pb::AddUserPermissionsRequest {
        organization_id: organization_id.into(),
        user_id: user_id.into(),
        permission_ids: permission_ids.to_vec(),
        permission_names: permission_names.iter().map(|n| (*n).to_owned()).collect(),
        resource,
    }
}

fn remove_request(
    organization_id: &str,
    user_id: &str,
    permission_ids: &[String],
    permission_names: &[&str],
    resource: Option<pb::Resource>,
) -> pb::RemoveUserPermissionsRequest {
    pb::RemoveUserPermissionsRequest {
        organization_id: organization_id.into(),
        user_id: user_id.into(),
        permission_ids: permission_ids.to_vec(),
        permission_names: permission_names.iter().map(|n| (*n).to_owned()).collect(),
        resource,
    }
}

/// Grants, asserting success, and answers the response.
async fn grant(
    server: &TestServer,
    organization_id: &str,
    user_id: &str,
    permission_ids: &[impl AsRef<str>],
    resource: Option<pb::Resource>,
) -> pb::AddUserPermissionsResponse {
    let permission_ids: Vec<String> = permission_ids.iter().map(|id| id.as_ref().to_owned()).collect();
    server
        .grants()
        .add_user_permissions(add_request(organization_id, user_id, &permission_ids, &[], resource))
        .await
        .unwrap_or_else(|status| panic!("grant to {user_id} in {organization_id}: {status:?}"))
        .into_inner()
}

/// `(resource type, resource id, permission id)` of each grant, in the order given.
fn keys(grants: &[pb::Grant]) -> Vec<(String, String, String)> {
    grants
        .iter()
        .map(|g| {
            let resource = g.resource.clone().expect("grant has a resource");
            (resource.r#type, resource.id, g.permission_id.clone())
        })
        .collect()
}

fn key(kind: &str, id: &str, permission_id: &str) -> (String, String, String) {
    (kind.to_owned(), id.to_owned(), permission_id.to_owned())
}

fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    items.sort();
    items
}

/// The organizations the user belongs to.
async fn organizations_of(server: &TestServer, user_id: &str) -> Vec<String> {
    server
        .directory()
        .list_user_organizations(pb::ListUserOrganizationsRequest {
            user_id: user_id.into(),
            page_size: 1000,
            page_token: String::new(),
            at_least_revision: 0,
        })
        .await
        .expect("list user organizations")
        .into_inner()
        .memberships
        .into_iter()
        .map(|m| m.organization_id)
        .collect()
}

/// The resource names of a NOT_FOUND status's ResourceInfo details.
fn not_found_names(status: &tonic::Status) -> Vec<String> {
    use tonic_types::{ErrorDetail, StatusExt};
    status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|detail| match detail {
            ErrorDetail::ResourceInfo(info) => Some(info.resource_name),
            _ => None,
        })
        .collect()
}

fn assert_not_found_naming(status: &tonic::Status, missing: &str) {
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains(missing), "message {:?} should name {missing}", status.message());
    assert!(
        not_found_names(status).iter().any(|name| name == missing),
        "details {:?} should name {missing}",
        not_found_names(status)
    );
}

fn assert_invalid_field(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = bad_request_fields(status);
    assert!(fields.iter().any(|f| f == field), "violations {fields:?} should name {field}");
}

fn check_request(
    organization_id: &str,
    user_id: &str,
    permission: Permission,
    resource: Option<pb::Resource>,
) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        organization_id: organization_id.into(),
        user_id: user_id.into(),
        permission: Some(permission),
        resource,
        at_least_revision: 0,
    }
}

fn by_name(name: &str) -> Permission {
    Permission::PermissionName(name.to_owned())
}

async fn check(
    server: &TestServer,
    organization_id: &str,
    user_id: &str,
    permission: Permission,
    resource: Option<pb::Resource>,
) -> pb::CheckPermissionResponse {
    server
        .grants()
        .check_permission(check_request(organization_id, user_id, permission, resource))
        .await
        .expect("check permission")
        .into_inner()
}

fn org_resource(kind: &str, id: &str, organization_id: &str) -> pb::OrganizationResource {
    pb::OrganizationResource { r#type: kind.into(), id: id.into(), organization_id: organization_id.into() }
}

fn removal_counts(response: &pb::RemoveResourcePermissionsResponse) -> Vec<(String, String, String, u64)> {
    response
        .results
        .iter()
        .map(|r| {
            let resource = r.resource.clone().expect("result names its resource");
            (resource.r#type, resource.id, resource.organization_id, r.removed_count)
        })
        .collect()
}

fn counted(kind: &str, id: &str, organization_id: &str, n: u64) -> (String, String, String, u64) {
    (kind.to_owned(), id.to_owned(), organization_id.to_owned(), n)
}

// ---------------------------------------------------------------------------------------
// 1. Atomicity
// ---------------------------------------------------------------------------------------

async fn one_unknown_permission_id_rejects_the_whole_batch(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let mut known = create_permissions(&server, "atomic", 499).await;
    let unknown = Uuid::new_v4().to_string();
    known.insert(250, unknown.clone());
    let before = server.latest_revision().await;

    let status = server
        .grants()
        .add_user_permissions(add_request("acme", "alice", &known, &[], resource("folder", "f1")))
        .await
        .expect_err("one unknown permission id");

    assert_not_found_naming(&status, &unknown);
    assert!(list_grants(&server, "acme", "alice", None).await.is_empty(), "no grant of the batch may be stored");
    assert_eq!(server.count_rows("grants").await, 0);
    assert_eq!(server.latest_revision().await, before, "a rejected request records no change");
}

async fn one_unknown_permission_name_rejects_the_whole_batch(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    create_permissions(&server, "atomic", 499).await;
    let mut names: Vec<String> = (0..499).map(|i| format!("atomic.{i:04}")).collect();
    names.insert(100, "atomic.missing".to_owned());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = server.latest_revision().await;

    let status = server
        .grants()
        .add_user_permissions(add_request("acme", "alice", &[], &names, None))
        .await
        .expect_err("one unknown permission name");

    assert_not_found_naming(&status, "atomic.missing");
    assert!(list_grants(&server, "acme", "alice", None).await.is_empty(), "no grant of the batch may be stored");
    assert_eq!(server.count_rows("grants").await, 0);
    assert_eq!(server.latest_revision().await, before, "a rejected request records no change");
}

// ---------------------------------------------------------------------------------------
// 2. Idempotency
// ---------------------------------------------------------------------------------------

async fn adding_and_removing_twice_reports_the_work_as_done(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let read = create_permission(&server, "documents:read").await;
    let write = create_permission(&server, "documents:write").await;
    let share = create_permission(&server, "documents:share").await;
    let delete = create_permission(&server, "documents:delete").await;
    let mut grants = server.grants();
    let all_three = sorted(&[read.clone(), write.clone(), share.clone()]);

    let request =
        add_request("acme", "alice", &[read.clone(), write.clone()], &["documents:share"], resource("folder", "f1"));
    let first = grants.add_user_permissions(request.clone()).await.expect("first add").into_inner();
    assert_eq!(sorted(&first.added), all_three);
    assert!(first.already_held.is_empty());
    assert_eq!(server.latest_revision().await, first.revision);

    let second = grants.add_user_permissions(request).await.expect("second add").into_inner();
    assert!(second.added.is_empty(), "nothing new: {:?}", second.added);
    assert_eq!(sorted(&second.already_held), all_three);
    assert_eq!(second.revision, first.revision, "a write that changed nothing answers the current revision");
    assert_eq!(server.latest_revision().await, first.revision, "and records no change");

    // Partly held: only the new one is added.
    let partial = grants
        .add_user_permissions(add_request(
            "acme",
            "alice",
            &[read.clone(), delete.clone()],
            &[],
            resource("folder", "f1"),
        ))
        .await
        .expect("partial add")
        .into_inner();
    assert_eq!(partial.added, vec![delete.clone()]);
    assert_eq!(partial.already_held, vec![read.clone()]);
    assert!(partial.revision > first.revision);
    assert_eq!(list_grants(&server, "acme", "alice", None).await.len(), 4);

    let everything = [read.clone(), write.clone(), share.clone(), delete.clone()];
    let remove = remove_request("acme", "alice", &everything, &[], resource("folder", "f1"));
    let removed = grants.remove_user_permissions(remove.clone()).await.expect("first remove").into_inner();
    assert_eq!(sorted(&removed.removed), sorted(&everything));
    assert!(removed.not_held.is_empty());
    assert!(removed.revision > partial.revision);

    let again = grants.remove_user_permissions(remove).await.expect("second remove").into_inner();
    assert!(again.removed.is_empty(), "nothing left to remove: {:?}", again.removed);
    assert_eq!(sorted(&again.not_held), sorted(&everything));
    assert_eq!(again.revision, removed.revision, "a write that changed nothing answers the current revision");
    assert_eq!(server.latest_revision().await, removed.revision, "and records no change");
    let changes = server
        .audit()
        .list_changes(pb::ListChangesRequest {
            after_revision: removed.revision,
            organization_id: String::new(),
            page_size: 100,
        })
        .await
        .expect("list changes")
        .into_inner();
    assert!(changes.changes.is_empty(), "no change events after the last real change: {:?}", changes.changes);
    assert!(list_grants(&server, "acme", "alice", None).await.is_empty());
}

/// Ids first, then names, each permission once (the first time it is listed), whether it
/// was added or already held; one event per grant added, at consecutive revisions ending
/// at the answered one.
async fn an_add_answers_in_request_order_with_one_event_per_grant(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let ids = create_permissions(&server, "order", 5).await;
    let on = || resource("folder", "f1");
    let held = grant(&server, "acme", "alice", &[&ids[1]], on()).await;

    let request = add_request(
        "acme",
        "alice",
        &[ids[3].clone(), ids[0].clone()],
        &["order.0001", "order.0004", "order.0000", "order.0002"],
        on(),
    );
    let answer = server.grants().add_user_permissions(request).await.expect("add").into_inner();
    assert_eq!(answer.added, vec![ids[3].clone(), ids[0].clone(), ids[4].clone(), ids[2].clone()]);
    assert_eq!(answer.already_held, vec![ids[1].clone()]);
    assert_eq!(answer.revision, held.revision + 4);

    let changes = server
        .audit()
        .list_changes(pb::ListChangesRequest {
            after_revision: held.revision,
            organization_id: String::new(),
            page_size: 100,
        })
        .await
        .expect("list changes")
        .into_inner()
        .changes;
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, (held.revision + 1..=answer.revision).collect::<Vec<_>>());
    let recorded: HashSet<String> = changes.iter().map(|c| c.permission_id.clone()).collect();
    assert_eq!(recorded, answer.added.iter().cloned().collect::<HashSet<_>>());
    for change in &changes {
        assert_eq!(change.kind, pb::ChangeKind::GrantAdded as i32, "{change:?}");
        assert_eq!((change.organization_id.as_str(), change.user_id.as_str()), ("acme", "alice"));
        assert_eq!(change.resource, on(), "{change:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. Batches of 1,000
// ---------------------------------------------------------------------------------------

async fn a_batch_of_1000_is_granted_and_listed_back_in_pages(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let ids = create_permissions(&server, "batch", 1000).await;
    let names: HashMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), format!("batch.{i:04}"))).collect();

    let added = grant(&server, "acme", "alice", &ids, resource("folder", "f1")).await;
    assert_eq!(added.added.len(), 1000);
    assert!(added.already_held.is_empty());
    // A few grants on other resources, so the order spans several types and ids.
    grant(&server, "acme", "alice", &ids[..2], None).await;
    grant(&server, "acme", "alice", &ids[500..501], resource("document", "d1")).await;

    let mut expected: Vec<(String, String, String)> = ids.iter().map(|id| key("folder", "f1", id)).collect();
    expected.extend(ids[..2].iter().map(|id| key("organization", "acme", id)));
    expected.push(key("document", "d1", &ids[500]));
    expected.sort();

    let mut grants = server.grants();
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = grants
            .list_user_permissions(pb::ListUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                resource: None,
                page_size: 300,
                page_token,
                at_least_revision: 0,
            })
            .await
            .expect("list page")
            .into_inner();
        assert!(pages.len() < 10, "paging does not end");
        let last = page.next_page_token.is_empty();
        page_token = page.next_page_token;
        pages.push(page.grants);
        if last {
            break;
        }
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![300, 300, 300, 103]);
    let listed: Vec<pb::Grant> = pages.into_iter().flatten().collect();
    let listed_keys = keys(&listed);
    let distinct: HashSet<_> = listed_keys.iter().cloned().collect();
    assert_eq!(distinct.len(), listed_keys.len(), "no grant may be listed twice");
    assert_eq!(listed_keys, expected, "every grant, ordered by (resource type, resource id, permission id)");
    for g in &listed {
        assert_eq!(g.organization_id, "acme");
        assert_eq!(g.user_id, "alice");
        assert_eq!(Some(&g.permission_name), names.get(&g.permission_id), "permission name of {}", g.permission_id);
    }

    let before = server.latest_revision().await;
    let status = grants
        .add_user_permissions(add_request("acme", "bob", &ids, &["batch.extra"], resource("folder", "f2")))
        .await
        .expect_err("1,001 permissions are over the limit");
    assert_invalid_field(&status, "permission_ids");
    assert!(status.message().contains("1000"), "the limit is reported: {:?}", status.message());
    assert_eq!(server.latest_revision().await, before);
}

/// Permission ids are time-ordered (proto: `Permission.id`), so the grants a user holds on one
/// resource list in catalog order whatever order they were granted in, the same on every run.
async fn a_resources_grants_list_in_the_order_their_permissions_were_created(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let names = ["zeta:write", "alpha:read", "mid:admin", "beta:delete", "omega:list", "gamma:share"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(create_permission(&server, name).await);
    }
    let reversed: Vec<String> = ids.iter().rev().cloned().collect();
    grant(&server, "acme", "alice", &reversed, resource("folder", "f1")).await;

    let listed: Vec<String> =
        list_grants(&server, "acme", "alice", None).await.into_iter().map(|g| g.permission_name).collect();
    assert_eq!(listed, names, "grants on one resource list in the order their permissions were created");
}

/// The proto: "Lists of permissions or resources hold at most 1,000 entries; duplicates
/// count once", and `permission_ids`/`permission_names` are "together 1-1,000 distinct
/// permissions", `resources` "1-1,000 distinct entries". A client that repeats an entry
/// of a full batch must not be rejected.
async fn duplicates_count_once_towards_the_batch_limit(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let ids = create_permissions(&server, "dup", 1000).await;
    let mut grants = server.grants();

    let mut with_duplicate = ids.clone();
    with_duplicate.push(ids[0].clone());
    let permissions = grants
        .add_user_permissions(add_request("acme", "alice", &with_duplicate, &[], resource("folder", "f0")))
        .await
        .map(|r| r.into_inner().added.len());

    let mut resources: Vec<pb::OrganizationResource> =
        (0..1000).map(|i| org_resource("folder", &format!("f{i}"), "acme")).collect();
    resources.push(org_resource("folder", "f0", "acme"));
    let removals = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources,
            all_users: false,
        })
        .await
        .map(|r| removal_counts(&r.into_inner()));

    let permissions = permissions.map_err(|status| format!("{:?}: {}", status.code(), status.message()));
    let removals = removals.map_err(|status| format!("{:?}: {}", status.code(), status.message()));
    assert!(
        permissions.is_ok() && removals.is_ok(),
        "1,000 distinct entries plus one repeat must be accepted; \
         AddUserPermissions answered {permissions:?}, RemoveResourcePermissions answered {:?}",
        removals.as_ref().map(Vec::len)
    );
    assert_eq!(permissions, Ok(1000));
    let removals = removals.expect("checked above");
    assert_eq!(removals.len(), 1000, "one result per distinct resource");
    assert_eq!(removals[0], counted("folder", "f0", "acme", 1000));
    assert!(list_grants(&server, "acme", "alice", None).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// 4. Set-based SQL
// ---------------------------------------------------------------------------------------

/// The answer of `call` and the texts of the statements the server sent while it ran.
async fn with_statements<T>(server: &TestServer, call: impl std::future::Future<Output = T>) -> (T, Vec<u64>) {
    let start = server.statement_count();
    let answer = call.await;
    (answer, server.statement_texts_since(start))
}

async fn batch_writes_send_the_same_statements_for_1000_permissions_as_for_1(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "one").await;
    add_member(&server, "acme", "thousand").await;
    let ids = create_permissions(&server, "sql", 1000).await;
    let mut grants = server.grants();
    let folder = |id| resource("folder", id);

    let (added, add_one) =
        with_statements(&server, grants.add_user_permissions(add_request("acme", "one", &ids[..1], &[], folder("f1"))))
            .await;
    assert_eq!(added.expect("add 1").into_inner().added.len(), 1);
    let (added, add_thousand) =
        with_statements(&server, grants.add_user_permissions(add_request("acme", "thousand", &ids, &[], folder("f1"))))
            .await;
    assert_eq!(added.expect("add 1000").into_inner().added.len(), 1000);
    let (removed, remove_one) = with_statements(
        &server,
        grants.remove_user_permissions(remove_request("acme", "one", &ids[..1], &[], folder("f1"))),
    )
    .await;
    assert_eq!(removed.expect("remove 1").into_inner().removed.len(), 1);
    let (removed, remove_thousand) = with_statements(
        &server,
        grants.remove_user_permissions(remove_request("acme", "thousand", &ids, &[], folder("f1"))),
    )
    .await;
    assert_eq!(removed.expect("remove 1000").into_inner().removed.len(), 1000);

    println!(
        "{:?}: AddUserPermissions 1 -> {} statements, 1000 -> {}; RemoveUserPermissions 1 -> {}, 1000 -> {}",
        server.backend,
        add_one.len(),
        add_thousand.len(),
        remove_one.len(),
        remove_thousand.len()
    );
    for (rpc, sent) in [("AddUserPermissions", &add_one), ("RemoveUserPermissions", &remove_one)] {
        assert!(!sent.is_empty(), "{rpc} sent no statement the log saw");
    }

    // A delegate's add also checks which of the permissions it holds itself.
    add_member(&server, "acme", "delegate").await;
    for (ids, names) in [(&[][..], &["edit_org_users"][..]), (&ids[..], &[][..])] {
        grants
            .add_user_permissions(add_request("acme", "delegate", ids, names, resource("organization", "acme")))
            .await
            .expect("the delegate's rights");
    }
    let mut delegate = server.grants_as("delegate");
    let (added, delegate_one) = with_statements(
        &server,
        delegate.add_user_permissions(add_request("acme", "one", &ids[..1], &[], folder("f2"))),
    )
    .await;
    assert_eq!(added.expect("delegate add 1").into_inner().added.len(), 1);
    let (added, delegate_thousand) = with_statements(
        &server,
        delegate.add_user_permissions(add_request("acme", "thousand", &ids, &[], folder("f2"))),
    )
    .await;
    assert_eq!(added.expect("delegate add 1000").into_inner().added.len(), 1000);
    // The same texts: a text that grows with the batch is parsed and planned anew for
    // every size and meets the database's parameter limit. And about as many: the
    // sequencer, which numbers events after commit, may make one more pass within the
    // window (its statements are among the texts either way), but a statement per
    // permission would send hundreds more.
    for (rpc, one, thousand) in [
        ("AddUserPermissions", &add_one, &add_thousand),
        ("RemoveUserPermissions", &remove_one, &remove_thousand),
        ("AddUserPermissions by a delegate", &delegate_one, &delegate_thousand),
    ] {
        let texts = |sent: &Vec<u64>| sent.iter().copied().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(texts(one), texts(thousand), "{rpc} must send one statement text whatever the batch size");
        assert!(
            thousand.len() <= 2 * one.len(),
            "{rpc} sent {} statements for 1,000 permissions and {} for 1",
            thousand.len(),
            one.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. RemoveUserFromOrganization
// ---------------------------------------------------------------------------------------

async fn removing_a_member_revokes_their_grants_in_that_organization_only(server: TestServer) {
    create_org(&server, "org-a").await;
    create_org(&server, "org-b").await;
    add_member(&server, "org-a", "alice").await;
    add_member(&server, "org-b", "alice").await;
    add_member(&server, "org-a", "bob").await;
    let read = create_permission(&server, "documents:read").await;
    let write = create_permission(&server, "documents:write").await;
    let both = [read.clone(), write.clone()];

    grant(&server, "org-a", "alice", &both, None).await;
    grant(&server, "org-a", "alice", &[&read], resource("folder", "f1")).await;
    grant(&server, "org-a", "alice", &both, resource("document", "d1")).await;
    grant(&server, "org-b", "alice", &[&read], None).await;
    grant(&server, "org-b", "alice", &[&write], resource("folder", "f1")).await;
    grant(&server, "org-a", "bob", &[&read], resource("folder", "f1")).await;
    assert!(check(&server, "org-a", "alice", by_name("documents:read"), resource("document", "d1")).await.allowed);
    let before = server.latest_revision().await;
    let in_b = keys(&list_grants(&server, "org-b", "alice", None).await);
    let bob_in_a = keys(&list_grants(&server, "org-a", "bob", None).await);

    let mut grants = server.grants();
    let request = pb::RemoveUserFromOrganizationRequest {
        organization_id: "org-a".into(),
        user_id: "alice".into(),
        allow_missing: false,
    };
    let removed = grants.remove_user_from_organization(request.clone()).await.expect("remove from org-a").into_inner();
    assert_eq!(removed.removed_grant_count, 5);
    assert!(removed.revision > before);

    assert!(list_grants(&server, "org-a", "alice", None).await.is_empty());
    for (permission, target) in [
        ("documents:read", resource("document", "d1")),
        ("documents:write", resource("document", "d1")),
        ("documents:read", resource("folder", "f1")),
        ("documents:read", None),
    ] {
        let answer = check(&server, "org-a", "alice", by_name(permission), target.clone()).await;
        assert!(!answer.allowed, "{permission} on {target:?} must be denied after the removal");
        assert!(answer.matched.is_none());
    }
    assert_eq!(keys(&list_grants(&server, "org-b", "alice", None).await), in_b, "org-b is untouched");
    assert!(check(&server, "org-b", "alice", by_name("documents:write"), resource("folder", "f1")).await.allowed);
    assert_eq!(keys(&list_grants(&server, "org-a", "bob", None).await), bob_in_a, "other members are untouched");
    assert_eq!(organizations_of(&server, "alice").await, vec!["org-b".to_owned()]);

    // The trail shows the five revocations and the membership removal.
    let changes = server
        .audit()
        .list_changes(pb::ListChangesRequest {
            after_revision: before,
            organization_id: "org-a".into(),
            page_size: 100,
        })
        .await
        .expect("list changes")
        .into_inner()
        .changes;
    let kinds: Vec<i32> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == pb::ChangeKind::GrantRemoved as i32).count(), 5, "{changes:?}");
    assert_eq!(kinds.iter().filter(|k| **k == pb::ChangeKind::MemberRemoved as i32).count(), 1, "{changes:?}");
    assert_eq!(changes.len(), 6);

    let status = grants.remove_user_from_organization(request.clone()).await.expect_err("already removed");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let missing_ok = grants
        .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest { allow_missing: true, ..request })
        .await
        .expect("allow_missing")
        .into_inner();
    assert_eq!(missing_ok.removed_grant_count, 0);
    assert_eq!(missing_ok.revision, removed.revision, "nothing changed, so the current revision");
    assert_eq!(server.latest_revision().await, removed.revision);
}

// ---------------------------------------------------------------------------------------
// 6. RemoveResourcePermissions
// ---------------------------------------------------------------------------------------

async fn removing_resource_permissions_per_user_and_for_all_users(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "other").await;
    add_member(&server, "acme", "alice").await;
    add_member(&server, "acme", "bob").await;
    let p1 = create_permission(&server, "p.one").await;
    let p2 = create_permission(&server, "p.two").await;

    grant(&server, "acme", "alice", &[&p1, &p2], resource("folder", "f1")).await;
    grant(&server, "acme", "alice", &[&p1], resource("folder", "f2")).await;
    grant(&server, "acme", "alice", &[&p1], resource("document", "d1")).await;
    grant(&server, "acme", "alice", &[&p2], None).await;
    grant(&server, "acme", "bob", &[&p1], resource("folder", "f1")).await;
    grant(&server, "acme", "bob", &[&p2], resource("document", "d1")).await;
    grant(&server, "acme", "bob", &[&p2], resource("folder", "f2")).await;
    let alice_before = keys(&list_grants(&server, "acme", "alice", None).await);
    let bob_before = keys(&list_grants(&server, "acme", "bob", None).await);
    assert_eq!((alice_before.len(), bob_before.len()), (5, 3));
    let mut grants = server.grants();

    // A document without its organization.
    let status = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![org_resource("folder", "f1", "acme"), org_resource("document", "d1", "")],
            all_users: false,
        })
        .await
        .expect_err("organization_id is required for a document");
    assert_invalid_field(&status, "resources[1].organization_id");

    // One resource in an unknown organization among several.
    let status = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![
                org_resource("folder", "f1", "acme"),
                org_resource("folder", "f2", "acme"),
                org_resource("document", "d1", "no-such-org"),
                org_resource("document", "d1", "acme"),
                org_resource("organization", "acme", ""),
            ],
            all_users: false,
        })
        .await
        .expect_err("unknown organization");
    assert_not_found_naming(&status, "no-such-org");
    assert_eq!(keys(&list_grants(&server, "acme", "alice", None).await), alice_before, "nothing may be removed");
    assert_eq!(keys(&list_grants(&server, "acme", "bob", None).await), bob_before);

    // user_id together with all_users.
    let status = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![org_resource("folder", "f1", "acme")],
            all_users: true,
        })
        .await
        .expect_err("user_id with all_users");
    assert_invalid_field(&status, "user_id");
    assert_eq!(keys(&list_grants(&server, "acme", "alice", None).await), alice_before, "nothing may be removed");

    // One user's grants, answered per resource in request order.
    let answer = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![
                org_resource("folder", "f2", "acme"),
                org_resource("folder", "f1", "acme"),
                org_resource("folder", "f9", "acme"),
            ],
            all_users: false,
        })
        .await
        .expect("remove alice's folder grants")
        .into_inner();
    assert_eq!(
        removal_counts(&answer),
        vec![
            counted("folder", "f2", "acme", 1),
            counted("folder", "f1", "acme", 2),
            counted("folder", "f9", "acme", 0)
        ]
    );
    assert_eq!(answer.revision, server.latest_revision().await);
    assert_eq!(
        sorted(&keys(&list_grants(&server, "acme", "alice", None).await)),
        sorted(&[key("document", "d1", &p1), key("organization", "acme", &p2)])
    );
    assert_eq!(keys(&list_grants(&server, "acme", "bob", None).await), bob_before, "bob's grants stay");

    // Every user's grants on a deleted document.
    let answer = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: String::new(),
            resources: vec![org_resource("document", "d1", "acme")],
            all_users: true,
        })
        .await
        .expect("remove everyone's grants on d1")
        .into_inner();
    assert_eq!(removal_counts(&answer), vec![counted("document", "d1", "acme", 2)]);
    assert_eq!(keys(&list_grants(&server, "acme", "alice", None).await), vec![key("organization", "acme", &p2)]);
    assert_eq!(
        sorted(&keys(&list_grants(&server, "acme", "bob", None).await)),
        sorted(&[key("folder", "f1", &p1), key("folder", "f2", &p2)]),
        "grants on other resources stay"
    );

    // The organization itself: its org-level grants.
    let answer = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![org_resource("organization", "acme", "")],
            all_users: false,
        })
        .await
        .expect("remove alice's org-level grants")
        .into_inner();
    assert_eq!(removal_counts(&answer), vec![counted("organization", "acme", "acme", 1)]);
    assert!(list_grants(&server, "acme", "alice", None).await.is_empty());
    assert_eq!(list_grants(&server, "acme", "bob", None).await.len(), 2);
    assert!(!check(&server, "acme", "alice", by_name("p.two"), None).await.allowed);
}

// ---------------------------------------------------------------------------------------
// 7. Members only
// ---------------------------------------------------------------------------------------

async fn grants_are_only_for_members_of_existing_organizations(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "other").await;
    add_member(&server, "other", "carol").await;
    create_permission(&server, "documents:read").await;
    let before = server.latest_revision().await;
    let mut grants = server.grants();

    let status = grants
        .add_user_permissions(add_request("acme", "carol", &[], &["documents:read"], resource("folder", "f1")))
        .await
        .expect_err("carol is a member of another organization only");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("carol"), "{:?}", status.message());

    let status = grants
        .add_user_permissions(add_request("no-such-org", "carol", &[], &["documents:read"], None))
        .await
        .expect_err("unknown organization");
    assert_not_found_naming(&status, "no-such-org");

    assert_eq!(server.count_rows("grants").await, 0);
    assert_eq!(server.latest_revision().await, before);
    assert!(list_grants(&server, "acme", "carol", None).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// 8. CheckPermission
// ---------------------------------------------------------------------------------------

/// Checks that arrive together are read together (one statement for many): each caller
/// must still get the answer to its own question, errors included.
async fn concurrent_checks_each_get_their_own_answer(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "globex").await;
    add_member(&server, "acme", "alice").await;
    add_member(&server, "globex", "alice").await;
    let read = create_permission(&server, "documents:read").await;
    let write = create_permission(&server, "documents:write").await;
    grant(&server, "acme", "alice", &[&read], resource("folder", "f1")).await;
    grant(&server, "acme", "alice", &[&write], None).await;
    grant(&server, "globex", "alice", &[&write], resource("folder", "f1")).await;

    // (organization, permission, resource, the resource of the matching grant or what is
    // not found)
    type Expected = Result<Option<pb::Resource>, &'static str>;
    let questions: Vec<(&str, Permission, Option<pb::Resource>, Expected)> = vec![
        ("acme", by_name("documents:read"), resource("folder", "f1"), Ok(resource("folder", "f1"))),
        ("acme", Permission::PermissionId(read.clone()), resource("folder", "f1"), Ok(resource("folder", "f1"))),
        ("acme", by_name("documents:read"), resource("folder", "f2"), Ok(None)),
        ("acme", by_name("documents:write"), resource("folder", "f2"), Ok(resource("organization", "acme"))),
        ("globex", by_name("documents:read"), resource("folder", "f1"), Ok(None)),
        ("globex", Permission::PermissionId(write.clone()), resource("folder", "f1"), Ok(resource("folder", "f1"))),
        ("globex", by_name("documents:write"), resource("folder", "f2"), Ok(None)),
        ("acme", by_name("documents:nope"), resource("folder", "f1"), Err("documents:nope")),
        ("initech", by_name("documents:read"), resource("folder", "f1"), Err("initech")),
    ];
    let calls = (0..20).flat_map(|_| questions.iter()).map(|(org, permission, target, _)| {
        let mut grants = server.grants();
        let request = check_request(org, "alice", permission.clone(), target.clone());
        async move { grants.check_permission(request).await }
    });
    let answers = join_all(calls).await;
    for ((org, permission, target, expected), answer) in (0..20).flat_map(|_| questions.iter()).zip(answers) {
        let question = format!("{org} {permission:?} {target:?}");
        match (expected, answer) {
            (Ok(expected), Ok(answer)) => {
                let answer = answer.into_inner();
                assert_eq!(answer.allowed, expected.is_some(), "{question}");
                let matched = answer.matched.map(|grant| (grant.organization_id, grant.resource));
                assert_eq!(matched, expected.clone().map(|resource| (org.to_string(), Some(resource))), "{question}");
            }
            (Err(missing), Err(status)) => assert_not_found_naming(&status, missing),
            (expected, answer) => panic!("{question}: expected {expected:?}, got {answer:?}"),
        }
    }
}

async fn check_permission_answers_from_resource_and_org_wide_grants(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    let read = create_permission(&server, "documents:read").await;
    let write = create_permission(&server, "documents:write").await;
    create_permission(&server, "documents:share").await;

    grant(&server, "acme", "alice", &[&read], resource("folder", "f1")).await;
    grant(&server, "acme", "alice", &[&write], None).await;
    let last = grant(&server, "acme", "alice", &[&write], resource("document", "d1")).await;

    // A grant on the resource itself.
    let answer = check(&server, "acme", "alice", by_name("documents:read"), resource("folder", "f1")).await;
    assert!(answer.allowed);
    let matched = answer.matched.expect("matched grant");
    assert_eq!((matched.permission_id.as_str(), matched.permission_name.as_str()), (read.as_str(), "documents:read"));
    assert_eq!(matched.resource, resource("folder", "f1"));
    assert_eq!((matched.organization_id.as_str(), matched.user_id.as_str()), ("acme", "alice"));
    assert!(answer.revision >= last.revision);

    // By permission id.
    let answer =
        check(&server, "acme", "alice", Permission::PermissionId(read.clone()), resource("folder", "f1")).await;
    assert!(answer.allowed);
    assert_eq!(answer.matched.expect("matched").permission_id, read);

    // Not on another resource without an org-wide grant.
    let answer = check(&server, "acme", "alice", by_name("documents:read"), resource("folder", "f2")).await;
    assert!(!answer.allowed);
    assert!(answer.matched.is_none());
    let answer = check(&server, "acme", "alice", by_name("documents:share"), resource("folder", "f1")).await;
    assert!(!answer.allowed);

    // An org-wide grant allows it on any resource of the organization.
    for target in [resource("document", "d99"), resource("folder", "f7"), None] {
        let answer = check(&server, "acme", "alice", by_name("documents:write"), target.clone()).await;
        assert!(answer.allowed, "org-wide write on {target:?}");
        assert_eq!(answer.matched.expect("matched").resource, resource("organization", "acme"));
    }

    // Both exist: the resource's own grant is the match.
    let answer = check(&server, "acme", "alice", by_name("documents:write"), resource("document", "d1")).await;
    assert!(answer.allowed);
    assert_eq!(answer.matched.expect("matched").resource, resource("document", "d1"));

    // Errors.
    let mut grants = server.grants();
    let status = grants
        .check_permission(check_request("acme", "alice", by_name("documents:nope"), resource("folder", "f1")))
        .await
        .expect_err("unknown permission name");
    assert_not_found_naming(&status, "documents:nope");
    let unknown_id = Uuid::new_v4().to_string();
    let status = grants
        .check_permission(check_request("acme", "alice", Permission::PermissionId(unknown_id.clone()), None))
        .await
        .expect_err("unknown permission id");
    assert_not_found_naming(&status, &unknown_id);
    let status = grants
        .check_permission(check_request("no-such-org", "alice", by_name("documents:read"), resource("folder", "f1")))
        .await
        .expect_err("unknown organization");
    assert_not_found_naming(&status, "no-such-org");

    let latest = server.latest_revision().await;
    let status = grants
        .check_permission(pb::CheckPermissionRequest {
            at_least_revision: latest + 1_000,
            ..check_request("acme", "alice", by_name("documents:read"), resource("folder", "f1"))
        })
        .await
        .expect_err("revision ahead");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let answer = grants
        .check_permission(pb::CheckPermissionRequest {
            at_least_revision: latest,
            ..check_request("acme", "alice", by_name("documents:read"), resource("folder", "f1"))
        })
        .await
        .expect("the latest revision is fine")
        .into_inner();
    assert!(answer.allowed);
    assert!(answer.revision >= latest);

    // Not for a user who was removed from the organization.
    grants
        .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            allow_missing: false,
        })
        .await
        .expect("remove alice");
    for (permission, target) in [
        ("documents:read", resource("folder", "f1")),
        ("documents:write", resource("document", "d1")),
        ("documents:write", resource("document", "d99")),
    ] {
        let answer = check(&server, "acme", "alice", by_name(permission), target.clone()).await;
        assert!(!answer.allowed, "{permission} on {target:?} after the removal");
    }
}

// ---------------------------------------------------------------------------------------
// 9. ListUserPermissions
// ---------------------------------------------------------------------------------------

async fn list_user_permissions_filters_and_rejects_foreign_page_tokens(server: TestServer) {
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    add_member(&server, "acme", "bob").await;
    let p1 = create_permission(&server, "p.one").await;
    let p2 = create_permission(&server, "p.two").await;
    for user in ["alice", "bob"] {
        grant(&server, "acme", user, &[&p1, &p2], resource("folder", "f1")).await;
        grant(&server, "acme", user, &[&p1], resource("folder", "f2")).await;
        grant(&server, "acme", user, &[&p1], resource("document", "d1")).await;
        grant(&server, "acme", user, &[&p2], None).await;
    }
    let (lo, hi) = if p1 < p2 { (&p1, &p2) } else { (&p2, &p1) };

    let folders = list_grants(&server, "acme", "alice", resource("folder", "")).await;
    assert_eq!(keys(&folders), vec![key("folder", "f1", lo), key("folder", "f1", hi), key("folder", "f2", &p1)]);
    let f1 = list_grants(&server, "acme", "alice", resource("folder", "f1")).await;
    assert_eq!(keys(&f1), vec![key("folder", "f1", lo), key("folder", "f1", hi)]);
    let org_level = list_grants(&server, "acme", "alice", resource("organization", "")).await;
    assert_eq!(keys(&org_level), vec![key("organization", "acme", &p2)]);
    assert!(list_grants(&server, "acme", "alice", resource("folder", "f3")).await.is_empty());
    let everything = list_grants(&server, "acme", "alice", None).await;
    assert_eq!(everything.len(), 5);

    let mut grants = server.grants();
    let first_page = |user: &str, page_token: String| pb::ListUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: user.into(),
        resource: None,
        page_size: 2,
        page_token,
        at_least_revision: 0,
    };
    let page = grants.list_user_permissions(first_page("alice", String::new())).await.expect("page 1").into_inner();
    assert_eq!(keys(&page.grants), keys(&everything[..2]));
    let token = page.next_page_token;
    assert!(!token.is_empty());
    let page2 = grants.list_user_permissions(first_page("alice", token.clone())).await.expect("page 2").into_inner();
    assert_eq!(keys(&page2.grants), keys(&everything[2..4]), "the genuine token continues the list");

    // One character changed in the middle of the token.
    let mut tampered: Vec<char> = token.chars().collect();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let status = grants.list_user_permissions(first_page("alice", tampered)).await.expect_err("tampered token");
    assert_invalid_field(&status, "page_token");

    // Alice's token on Bob's list.
    let status =
        grants.list_user_permissions(first_page("bob", token.clone())).await.expect_err("another user's token");
    assert_invalid_field(&status, "page_token");

    // And with a different filter.
    let status = grants
        .list_user_permissions(pb::ListUserPermissionsRequest {
            resource: resource("folder", ""),
            ..first_page("alice", token)
        })
        .await
        .expect_err("a token of another filter");
    assert_invalid_field(&status, "page_token");

    let status = grants
        .list_user_permissions(pb::ListUserPermissionsRequest { page_size: -1, ..first_page("alice", String::new()) })
        .await
        .expect_err("negative page size");
    assert_invalid_field(&status, "page_size");
}

// ---------------------------------------------------------------------------------------
// 10. Adds racing a removal
// ---------------------------------------------------------------------------------------

async fn adds_racing_a_member_removal_leave_no_grant_behind(server: TestServer) {
    create_org(&server, "acme").await;
    let ids = create_permissions(&server, "race", 20).await;

    for round in 0..3 {
        let user = format!("racer-{round}");
        add_member(&server, "acme", &user).await;

        let mut adds = Vec::new();
        let mut removal = None;
        for (i, id) in ids.iter().enumerate() {
            let mut client = server.grants();
            let request =
                add_request("acme", &user, std::slice::from_ref(id), &[], resource("document", &format!("d{i}")));
            adds.push(tokio::spawn(async move { client.add_user_permissions(request).await }));
            if i == ids.len() / 2 {
                let mut client = server.grants();
                let request = pb::RemoveUserFromOrganizationRequest {
                    organization_id: "acme".into(),
                    user_id: user.clone(),
                    allow_missing: false,
                };
                removal = Some(tokio::spawn(async move { client.remove_user_from_organization(request).await }));
            }
        }
        let removed = removal
            .expect("removal spawned")
            .await
            .expect("removal task")
            .expect("the user was a member, so the removal succeeds")
            .into_inner();

        let mut granted = 0;
        for add in join_all(adds).await {
            match add.expect("add task") {
                Ok(response) => {
                    let response = response.into_inner();
                    assert_eq!(response.added.len(), 1);
                    assert!(
                        response.revision < removed.revision,
                        "an add that succeeded must have committed before the removal"
                    );
                    granted += 1;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "only OK or FAILED_PRECONDITION: {status:?}")
                }
            }
        }

        println!("{:?} round {round}: {granted} of {} adds committed before the removal", server.backend, ids.len());
        assert!(!organizations_of(&server, &user).await.contains(&"acme".to_owned()));
        let left = list_grants(&server, "acme", &user, None).await;
        assert!(left.is_empty(), "round {round}: grants survived for a non-member: {left:?}");
        assert_eq!(removed.removed_grant_count, granted, "round {round}: the removal revoked every successful add");
    }
    assert_eq!(server.count_rows("grants").await, 0);
}
