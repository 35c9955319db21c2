//! DirectoryService behaviour over SQLite and PostgreSQL: organizations, memberships and
//! the permission catalog.

mod common;

use std::collections::HashSet;

use common::{
    BUILT_IN_PERMISSIONS, TestServer, add_member, bad_request_fields, create_org, create_permission, permission_id,
    proto as pb, resource,
};
use tonic::Code;

backend_tests!(
    create_and_get_organization_round_trip,
    create_organization_with_taken_id_is_already_exists,
    get_unknown_organization_is_not_found,
    list_organizations_pages_in_id_order,
    list_organizations_rejects_garbage_page_token,
    delete_organization_cascades_members_and_grants,
    delete_organization_twice_is_not_found_unless_allow_missing,
    add_user_to_organization_is_idempotent,
    add_user_to_unknown_organization_is_not_found,
    list_organization_members_pages_in_user_id_order,
    list_user_organizations_in_organization_id_order,
    create_permission_mints_a_uuid,
    create_permission_with_taken_name_is_already_exists,
    get_permission_by_id_and_by_name,
    list_permissions_pages_in_name_order,
    delete_permission_while_granted_needs_force,
    delete_permission_while_it_is_being_granted,
    delete_unknown_permission_is_not_found_unless_allow_missing,
    create_permission_rejects_invalid_names,
    built_in_rights_are_in_every_catalog_and_cannot_be_deleted,
);

/// Grants `names` to `user` in `org` on `res` (the organization when `None`).
async fn grant(server: &TestServer, org: &str, user: &str, names: &[&str], res: Option<pb::Resource>) -> Vec<String> {
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: org.into(),
            user_id: user.into(),
            permission_names: names.iter().map(|n| (*n).to_owned()).collect(),
            resource: res,
            ..Default::default()
        })
        .await
        .expect("add user permissions")
        .into_inner()
        .added
}

/// Every grant of `user` in `org`, as (resource type, resource id, permission name).
async fn grants_of(server: &TestServer, org: &str, user: &str) -> Vec<(String, String, String)> {
    let grants = server
        .grants()
        .list_user_permissions(pb::ListUserPermissionsRequest {
            organization_id: org.into(),
            user_id: user.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list user permissions")
        .into_inner();
    assert!(grants.next_page_token.is_empty());
    grants
        .grants
        .into_iter()
        .map(|g| {
            let r = g.resource.expect("resource");
            (r.r#type, r.id, g.permission_name)
        })
        .collect()
}

async fn user_org_ids(server: &TestServer, user: &str) -> Vec<String> {
    server
        .directory()
        .list_user_organizations(pb::ListUserOrganizationsRequest { user_id: user.into(), ..Default::default() })
        .await
        .expect("list user organizations")
        .into_inner()
        .memberships
        .into_iter()
        .map(|m| m.organization_id)
        .collect()
}

async fn member_ids(server: &TestServer, org: &str) -> Vec<String> {
    server
        .directory()
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: org.into(),
            ..Default::default()
        })
        .await
        .expect("list members")
        .into_inner()
        .members
        .into_iter()
        .map(|m| m.user_id)
        .collect()
}

async fn create_and_get_organization_round_trip(server: TestServer) {
    let mut directory = server.directory();
    let created = directory
        .create_organization(pb::CreateOrganizationRequest {
            id: "3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60".into(),
            display_name: "Acme Société Anonyme".into(),
        })
        .await
        .expect("create")
        .into_inner();
    let organization = created.organization.expect("organization");
    assert_eq!(organization.id, "3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60");
    assert_eq!(organization.display_name, "Acme Société Anonyme");
    assert!(organization.created_at.is_some());
    assert!(created.revision > 0);
    assert_eq!(created.revision, server.latest_revision().await);

    let got = directory
        .get_organization(pb::GetOrganizationRequest { id: "3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60".into() })
        .await
        .expect("get")
        .into_inner()
        .organization
        .expect("organization");
    assert_eq!(got, organization, "GetOrganization answers what CreateOrganization answered, created_at included");
}

async fn create_organization_with_taken_id_is_already_exists(server: TestServer) {
    create_org(&server, "acme").await;
    let revision = server.latest_revision().await;
    let status = server
        .directory()
        .create_organization(pb::CreateOrganizationRequest { id: "acme".into(), display_name: "Another".into() })
        .await
        .expect_err("the id is taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(server.latest_revision().await, revision);
    let kept = server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: "acme".into() })
        .await
        .expect("get")
        .into_inner()
        .organization
        .expect("organization");
    assert_eq!(kept.display_name, "Org acme", "the first organization is untouched");
}

async fn get_unknown_organization_is_not_found(server: TestServer) {
    create_org(&server, "acme").await;
    let status = server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: "acme2".into() })
        .await
        .expect_err("unknown organization");
    assert_eq!(status.code(), Code::NotFound);
}

async fn list_organizations_pages_in_id_order(server: TestServer) {
    // Created out of order, so the listing order must come from the ids.
    let mut ids: Vec<String> = (0..25).map(|i| format!("org-{:02}", (i * 7) % 25)).collect();
    for id in &ids {
        create_org(&server, id).await;
    }
    ids.sort();

    let mut directory = server.directory();
    let mut listed = Vec::new();
    let mut page_sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = directory
            .list_organizations(pb::ListOrganizationsRequest { page_size: 10, page_token: token.clone() })
            .await
            .expect("list")
            .into_inner();
        page_sizes.push(page.organizations.len());
        listed.extend(page.organizations.into_iter().map(|o| o.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(page_sizes.len() < 10, "paging does not end");
    }
    assert_eq!(page_sizes, vec![10, 10, 5]);
    assert_eq!(listed, ids, "every organization once, in id order");
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 25);
}

async fn list_organizations_rejects_garbage_page_token(server: TestServer) {
    create_org(&server, "a").await;
    create_org(&server, "b").await;
    let mut directory = server.directory();
    for token in ["garbage", "!!!", "bm90LWEtdG9rZW4"] {
        let status = directory
            .list_organizations(pb::ListOrganizationsRequest { page_size: 1, page_token: token.into() })
            .await
            .expect_err("garbage token");
        assert_eq!(status.code(), Code::InvalidArgument, "{token}");
        assert_eq!(bad_request_fields(&status), vec!["page_token"], "{token}");
    }

    // A token of another list is not a token of this one.
    create_permission(&server, "p1").await;
    create_permission(&server, "p2").await;
    let foreign = directory
        .list_permissions(pb::ListPermissionsRequest { page_size: 1, page_token: String::new() })
        .await
        .expect("list permissions")
        .into_inner()
        .next_page_token;
    assert!(!foreign.is_empty());
    let status = directory
        .list_organizations(pb::ListOrganizationsRequest { page_size: 1, page_token: foreign })
        .await
        .expect_err("a permissions token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["page_token"]);
}

async fn delete_organization_cascades_members_and_grants(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "globex").await;
    create_permission(&server, "documents:read").await;
    create_permission(&server, "documents:write").await;
    for user in ["alice", "bob", "carol"] {
        add_member(&server, "acme", user).await;
    }
    for user in ["alice", "dave"] {
        add_member(&server, "globex", user).await;
    }
    // acme: 1 org-level grant, 2 on a document, 1 on a folder, none for carol.
    grant(&server, "acme", "alice", &["documents:read"], None).await;
    grant(&server, "acme", "bob", &["documents:read", "documents:write"], resource("document", "d1")).await;
    grant(&server, "acme", "alice", &["documents:write"], resource("folder", "f1")).await;
    // globex: 3 grants that must survive.
    grant(&server, "globex", "alice", &["documents:read"], None).await;
    grant(&server, "globex", "dave", &["documents:read", "documents:write"], resource("document", "d1")).await;

    let globex_alice = grants_of(&server, "globex", "alice").await;
    let globex_dave = grants_of(&server, "globex", "dave").await;
    assert_eq!(server.count_rows("grants").await, 7);
    assert_eq!(server.count_rows("memberships").await, 5);
    assert_eq!(user_org_ids(&server, "alice").await, vec!["acme", "globex"]);
    let before = server.latest_revision().await;

    let deleted = server
        .directory()
        .delete_organization(pb::DeleteOrganizationRequest { id: "acme".into(), allow_missing: false })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.removed_member_count, 3);
    assert_eq!(deleted.removed_grant_count, 4);
    assert!(deleted.revision > before);
    assert_eq!(deleted.revision, server.latest_revision().await);

    let status = server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: "acme".into() })
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::NotFound);
    let status = server
        .directory()
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(user_org_ids(&server, "alice").await, vec!["globex"]);
    assert!(user_org_ids(&server, "bob").await.is_empty());
    assert!(user_org_ids(&server, "carol").await.is_empty());
    assert_eq!(user_org_ids(&server, "dave").await, vec!["globex"]);

    // Whole tables: exactly globex's rows are left.
    assert_eq!(server.count_rows("grants").await, 3);
    assert_eq!(server.count_rows("memberships").await, 2);
    assert_eq!(server.count_rows("organizations").await, 1);
    assert_eq!(member_ids(&server, "globex").await, vec!["alice", "dave"]);
    assert_eq!(grants_of(&server, "globex", "alice").await, globex_alice);
    assert_eq!(grants_of(&server, "globex", "dave").await, globex_dave);

    // The organization id is free again, and starts with nobody in it.
    create_org(&server, "acme").await;
    assert!(member_ids(&server, "acme").await.is_empty());
    assert!(grants_of(&server, "acme", "alice").await.is_empty());
}

async fn delete_organization_twice_is_not_found_unless_allow_missing(server: TestServer) {
    create_org(&server, "acme").await;
    let mut directory = server.directory();
    directory
        .delete_organization(pb::DeleteOrganizationRequest { id: "acme".into(), allow_missing: false })
        .await
        .expect("first delete");
    let revision = server.latest_revision().await;

    let status = directory
        .delete_organization(pb::DeleteOrganizationRequest { id: "acme".into(), allow_missing: false })
        .await
        .expect_err("already gone");
    assert_eq!(status.code(), Code::NotFound);

    let missing = directory
        .delete_organization(pb::DeleteOrganizationRequest { id: "acme".into(), allow_missing: true })
        .await
        .expect("allow_missing")
        .into_inner();
    assert_eq!(missing.removed_member_count, 0);
    assert_eq!(missing.removed_grant_count, 0);
    assert_eq!(missing.revision, revision, "nothing changed, the current revision");
    assert_eq!(server.latest_revision().await, revision);
}

async fn add_user_to_organization_is_idempotent(server: TestServer) {
    create_org(&server, "acme").await;
    let mut directory = server.directory();
    let request = pb::AddUserToOrganizationRequest { organization_id: "acme".into(), user_id: "auth0|5f1c".into() };

    let first = directory.add_user_to_organization(request.clone()).await.expect("first").into_inner();
    assert!(first.created);
    let membership = first.membership.clone().expect("membership");
    assert_eq!(membership.organization_id, "acme");
    assert_eq!(membership.user_id, "auth0|5f1c");
    assert!(membership.added_at.is_some());
    assert!(!membership.added_by.is_empty());
    assert_eq!(first.revision, server.latest_revision().await);

    let second = directory.add_user_to_organization(request).await.expect("second").into_inner();
    assert!(!second.created);
    assert_eq!(second.revision, first.revision, "nothing changed");
    assert_eq!(second.membership, first.membership, "the original membership");
    assert_eq!(server.latest_revision().await, first.revision);
    assert_eq!(member_ids(&server, "acme").await, vec!["auth0|5f1c"]);
}

async fn add_user_to_unknown_organization_is_not_found(server: TestServer) {
    create_org(&server, "acme").await;
    let revision = server.latest_revision().await;
    let status = server
        .directory()
        .add_user_to_organization(pb::AddUserToOrganizationRequest {
            organization_id: "nope".into(),
            user_id: "alice".into(),
        })
        .await
        .expect_err("unknown organization");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(server.latest_revision().await, revision);
    assert_eq!(server.count_rows("memberships").await, 0);
}

async fn list_organization_members_pages_in_user_id_order(server: TestServer) {
    create_org(&server, "acme").await;
    create_org(&server, "globex").await;
    let users = ["uaa-id-128", "auth0|5f1c", "Zed", "alice", "3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60", "bob", "_x"];
    for user in users {
        add_member(&server, "acme", user).await;
    }
    add_member(&server, "globex", "mallory").await;
    let mut expected: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
    expected.sort();

    let mut directory = server.directory();
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = directory
            .list_organization_members(pb::ListOrganizationMembersRequest {
                organization_id: "acme".into(),
                page_size: 3,
                page_token: token,
                at_least_revision: 0,
            })
            .await
            .expect("list members")
            .into_inner();
        pages += 1;
        assert!(page.members.len() <= 3);
        assert!(page.members.iter().all(|m| m.organization_id == "acme"));
        listed.extend(page.members.into_iter().map(|m| m.user_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, expected);

    // A token of acme's list is not one of globex's.
    let acme_token = directory
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: "acme".into(),
            page_size: 1,
            page_token: String::new(),
            at_least_revision: 0,
        })
        .await
        .expect("list")
        .into_inner()
        .next_page_token;
    let status = directory
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: "globex".into(),
            page_size: 1,
            page_token: acme_token,
            at_least_revision: 0,
        })
        .await
        .expect_err("foreign token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["page_token"]);

    let status = directory
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown organization");
    assert_eq!(status.code(), Code::NotFound);
}

async fn list_user_organizations_in_organization_id_order(server: TestServer) {
    let orgs = ["m-org", "Z-org", "a-org", "0-org", "b-org"];
    for org in orgs {
        create_org(&server, org).await;
    }
    for org in ["m-org", "a-org", "Z-org", "b-org"] {
        add_member(&server, org, "alice").await;
    }
    add_member(&server, "0-org", "bob").await;

    assert_eq!(user_org_ids(&server, "alice").await, vec!["Z-org", "a-org", "b-org", "m-org"]);
    assert_eq!(user_org_ids(&server, "bob").await, vec!["0-org"]);
    assert!(user_org_ids(&server, "carol").await.is_empty());

    // Paged one at a time, the same order.
    let mut directory = server.directory();
    let mut listed = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = directory
            .list_user_organizations(pb::ListUserOrganizationsRequest {
                user_id: "alice".into(),
                page_size: 1,
                page_token: token,
                at_least_revision: 0,
            })
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.memberships.into_iter().map(|m| {
            assert_eq!(m.user_id, "alice");
            m.organization_id
        }));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "paging does not end");
    assert_eq!(listed, vec!["Z-org", "a-org", "b-org", "m-org"]);
}

async fn create_permission_mints_a_uuid(server: TestServer) {
    let mut directory = server.directory();
    let created = directory
        .create_permission(pb::CreatePermissionRequest {
            name: "documents:read".into(),
            description: "Read documents".into(),
        })
        .await
        .expect("create")
        .into_inner();
    let permission = created.permission.expect("permission");
    let id = uuid::Uuid::parse_str(&permission.id).expect("the id is a UUID");
    assert!(!id.is_nil());
    assert_eq!(permission.name, "documents:read");
    assert_eq!(permission.description, "Read documents");
    assert!(permission.created_at.is_some());
    assert_eq!(created.revision, server.latest_revision().await);

    let other = create_permission(&server, "documents:share").await;
    assert_ne!(other, permission.id, "each permission gets its own id");
    uuid::Uuid::parse_str(&other).expect("the id is a UUID");
}

async fn create_permission_with_taken_name_is_already_exists(server: TestServer) {
    let id = create_permission(&server, "documents:read").await;
    let revision = server.latest_revision().await;
    let status = server
        .directory()
        .create_permission(pb::CreatePermissionRequest { name: "documents:read".into(), description: "again".into() })
        .await
        .expect_err("the name is taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(server.latest_revision().await, revision);
    assert_eq!(server.count_rows("permissions").await, 1 + BUILT_IN_PERMISSIONS);
    let kept = server
        .directory()
        .get_permission(pb::GetPermissionRequest {
            permission: Some(pb::get_permission_request::Permission::Name("documents:read".into())),
        })
        .await
        .expect("get")
        .into_inner()
        .permission
        .expect("permission");
    assert_eq!(kept.id, id);
    assert_eq!(kept.description, "");
}

async fn get_permission_by_id_and_by_name(server: TestServer) {
    use pb::get_permission_request::Permission;
    let created = server
        .directory()
        .create_permission(pb::CreatePermissionRequest {
            name: "documents:share".into(),
            description: "Manage the users of an organization".into(),
        })
        .await
        .expect("create")
        .into_inner()
        .permission
        .expect("permission");
    create_permission(&server, "documents:read").await;
    let mut directory = server.directory();

    let by_id = directory
        .get_permission(pb::GetPermissionRequest { permission: Some(Permission::Id(created.id.clone())) })
        .await
        .expect("by id")
        .into_inner()
        .permission
        .expect("permission");
    assert_eq!(by_id, created, "GetPermission answers what CreatePermission answered, created_at included");
    let by_name = directory
        .get_permission(pb::GetPermissionRequest { permission: Some(Permission::Name("documents:share".into())) })
        .await
        .expect("by name")
        .into_inner()
        .permission
        .expect("permission");
    assert_eq!(by_name, created);

    let status = directory
        .get_permission(pb::GetPermissionRequest { permission: Some(Permission::Name("documents:shar".into())) })
        .await
        .expect_err("unknown name");
    assert_eq!(status.code(), Code::NotFound);
    let status = directory
        .get_permission(pb::GetPermissionRequest { permission: Some(Permission::Id(uuid::Uuid::new_v4().to_string())) })
        .await
        .expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);
    let status = directory
        .get_permission(pb::GetPermissionRequest { permission: Some(Permission::Id("documents:share".into())) })
        .await
        .expect_err("not a UUID");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["id"]);
}

async fn list_permissions_pages_in_name_order(server: TestServer) {
    let names = ["documents:write", "a", "edit_org", "documents:read", "documents-admin", "0.x", "z_last"];
    let mut ids = std::collections::HashMap::new();
    for name in names {
        ids.insert(name.to_owned(), create_permission(&server, name).await);
    }
    // The built-in rights sort among the others.
    for name in ["edit_org_users", "view_org_users"] {
        ids.insert(name.to_owned(), permission_id(&server, name).await);
    }
    let mut expected: Vec<String> = ids.keys().cloned().collect();
    expected.sort();

    let mut directory = server.directory();
    let mut listed = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = directory
            .list_permissions(pb::ListPermissionsRequest { page_size: 2, page_token: token })
            .await
            .expect("list")
            .into_inner();
        sizes.push(page.permissions.len());
        for p in page.permissions {
            assert_eq!(ids.get(&p.name), Some(&p.id), "{}", p.name);
            listed.push(p.name);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, vec![2, 2, 2, 2, 1]);
    assert_eq!(listed, expected);

    let all = directory
        .list_permissions(pb::ListPermissionsRequest::default())
        .await
        .expect("default page size")
        .into_inner();
    assert_eq!(all.permissions.into_iter().map(|p| p.name).collect::<Vec<_>>(), expected);
    assert!(all.next_page_token.is_empty());

    let status = directory
        .list_permissions(pb::ListPermissionsRequest { page_size: 2, page_token: "garbage".into() })
        .await
        .expect_err("garbage token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["page_token"]);
}

async fn delete_permission_while_granted_needs_force(server: TestServer) {
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    let write = create_permission(&server, "documents:write").await;
    add_member(&server, "acme", "alice").await;
    add_member(&server, "acme", "bob").await;
    grant(&server, "acme", "alice", &["documents:read", "documents:write"], resource("folder", "f1")).await;
    grant(&server, "acme", "bob", &["documents:read"], None).await;
    let mut directory = server.directory();
    let revision = server.latest_revision().await;

    let status = directory
        .delete_permission(pb::DeletePermissionRequest { id: read.clone(), force: false, allow_missing: false })
        .await
        .expect_err("still granted");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(server.latest_revision().await, revision);
    assert_eq!(server.count_rows("grants").await, 3);
    let mut alice = grants_of(&server, "acme", "alice").await;
    alice.sort();
    assert_eq!(alice, vec![folder_grant("documents:read"), folder_grant("documents:write")]);
    assert_eq!(grants_of(&server, "acme", "bob").await, vec![org_grant("acme", "documents:read")]);
    directory
        .get_permission(pb::GetPermissionRequest {
            permission: Some(pb::get_permission_request::Permission::Id(read.clone())),
        })
        .await
        .expect("the permission is still in the catalog");

    let deleted = directory
        .delete_permission(pb::DeletePermissionRequest { id: read.clone(), force: true, allow_missing: false })
        .await
        .expect("forced delete")
        .into_inner();
    assert_eq!(deleted.revoked_grant_count, 2);
    assert!(deleted.revision > revision);
    assert_eq!(deleted.revision, server.latest_revision().await);
    assert_eq!(grants_of(&server, "acme", "alice").await, vec![folder_grant("documents:write")]);
    assert!(grants_of(&server, "acme", "bob").await.is_empty());
    assert_eq!(server.count_rows("grants").await, 1);
    let status = directory
        .get_permission(pb::GetPermissionRequest { permission: Some(pb::get_permission_request::Permission::Id(read)) })
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::NotFound);

    // The other permission is untouched and, once ungranted, deletes without force.
    server
        .grants()
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: vec![write.clone()],
            resource: resource("folder", "f1"),
            ..Default::default()
        })
        .await
        .expect("revoke");
    let deleted = directory
        .delete_permission(pb::DeletePermissionRequest { id: write, force: false, allow_missing: false })
        .await
        .expect("delete an ungranted permission")
        .into_inner();
    assert_eq!(deleted.revoked_grant_count, 0);
    assert_eq!(server.count_rows("permissions").await, BUILT_IN_PERMISSIONS);
}

/// Adds of a permission racing its forced deletion. Adds read the catalog without locking
/// it, so an add may find the permission and have it deleted before its grant goes in:
/// each add must then either land before the deletion (which revokes its grant) or answer
/// NOT_FOUND, never fail otherwise, and the trail must net out to nothing.
async fn delete_permission_while_it_is_being_granted(server: TestServer) {
    const ADDERS: usize = 8;
    const ADDS_EACH: usize = 40;
    create_org(&server, "acme").await;
    let read = create_permission(&server, "documents:read").await;
    for adder in 0..ADDERS {
        add_member(&server, "acme", &format!("user-{adder}")).await;
    }
    let start = server.latest_revision().await;

    let adders = (0..ADDERS).map(|adder| {
        let mut grants = server.grants();
        async move {
            let mut answers = Vec::new();
            for k in 0..ADDS_EACH {
                let request = pb::AddUserPermissionsRequest {
                    organization_id: "acme".into(),
                    user_id: format!("user-{adder}"),
                    permission_names: vec!["documents:read".into()],
                    resource: resource("folder", &format!("f{adder}-{k}")),
                    ..Default::default()
                };
                answers.push(grants.add_user_permissions(request).await.map(|answer| answer.into_inner()));
            }
            answers
        }
    });
    let mut directory = server.directory();
    let deletion = async {
        // Once some adds have landed, so that others are in flight around the deletion.
        while server.latest_revision().await < start + ADDERS as u64 {
            tokio::task::yield_now().await;
        }
        directory
            .delete_permission(pb::DeletePermissionRequest { id: read.clone(), force: true, allow_missing: false })
            .await
    };
    let (answers, deleted) = tokio::join!(futures::future::join_all(adders), deletion);
    let deleted = deleted.expect("forced delete").into_inner();

    let mut landed = 0;
    let mut refused = 0;
    for answer in answers.into_iter().flatten() {
        match answer {
            Ok(added) => {
                assert_eq!(added.added.len(), 1, "{added:?}");
                assert!(added.revision < deleted.revision, "an add landed after the deletion: {added:?}");
                landed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(landed >= ADDERS, "the deletion waited for {ADDERS} adds, {landed} landed");
    assert_eq!(landed + refused, ADDERS * ADDS_EACH);
    assert_eq!(deleted.revoked_grant_count, landed as u64);
    assert_eq!(server.count_rows("grants").await, 0);

    let changes = server.list_changes(start).await;
    let count = |kind: pb::ChangeKind| changes.iter().filter(|c| c.kind == kind as i32).count();
    assert_eq!(count(pb::ChangeKind::GrantAdded), landed);
    assert_eq!(count(pb::ChangeKind::GrantRemoved), landed);
    let last = changes.last().expect("changes");
    assert_eq!((last.kind, last.revision), (pb::ChangeKind::PermissionDeleted as i32, deleted.revision));
}

fn folder_grant(name: &str) -> (String, String, String) {
    ("folder".to_owned(), "f1".to_owned(), name.to_owned())
}

fn org_grant(org: &str, name: &str) -> (String, String, String) {
    ("organization".to_owned(), org.to_owned(), name.to_owned())
}

async fn delete_unknown_permission_is_not_found_unless_allow_missing(server: TestServer) {
    let kept = create_permission(&server, "documents:read").await;
    let revision = server.latest_revision().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let mut directory = server.directory();

    let status = directory
        .delete_permission(pb::DeletePermissionRequest { id: unknown.clone(), force: false, allow_missing: false })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);

    let missing = directory
        .delete_permission(pb::DeletePermissionRequest { id: unknown, force: true, allow_missing: true })
        .await
        .expect("allow_missing")
        .into_inner();
    assert_eq!(missing.revoked_grant_count, 0);
    assert_eq!(missing.revision, revision);
    assert_eq!(server.latest_revision().await, revision);

    // Deleted twice: NOT_FOUND the second time, OK with allow_missing.
    directory
        .delete_permission(pb::DeletePermissionRequest { id: kept.clone(), force: false, allow_missing: false })
        .await
        .expect("delete");
    let status = directory
        .delete_permission(pb::DeletePermissionRequest { id: kept.clone(), force: false, allow_missing: false })
        .await
        .expect_err("already gone");
    assert_eq!(status.code(), Code::NotFound);
    directory
        .delete_permission(pb::DeletePermissionRequest { id: kept, force: false, allow_missing: true })
        .await
        .expect("already gone, allow_missing");

    let status = directory
        .delete_permission(pb::DeletePermissionRequest {
            id: "documents:read".into(),
            force: false,
            allow_missing: true,
        })
        .await
        .expect_err("not a UUID");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["id"]);
}

async fn create_permission_rejects_invalid_names(server: TestServer) {
    let mut directory = server.directory();
    let too_long = "a".repeat(129);
    for name in ["Documents:read", "documents read", too_long.as_str(), "", "documents/read", "caf\u{e9}", "a\0b"] {
        let status = directory
            .create_permission(pb::CreatePermissionRequest { name: name.to_owned(), description: String::new() })
            .await
            .expect_err("invalid name");
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
        assert_eq!(bad_request_fields(&status), vec!["name"], "{name:?}");
    }
    assert_eq!(server.latest_revision().await, 0);
    assert_eq!(server.count_rows("permissions").await, BUILT_IN_PERMISSIONS);

    // The longest valid name is accepted as is.
    let longest = "a".repeat(128);
    create_permission(&server, &longest).await;
    let listed = directory.list_permissions(pb::ListPermissionsRequest::default()).await.expect("list").into_inner();
    let created: Vec<String> = listed.permissions.into_iter().filter(|p| !p.built_in).map(|p| p.name).collect();
    assert_eq!(created, vec![longest]);
}

/// `edit_org_users` and `view_org_users` are there before anyone creates them, marked as
/// built in; their names cannot be taken again and they cannot be deleted, even with force
/// while nobody holds them. Granting them is ordinary.
async fn built_in_rights_are_in_every_catalog_and_cannot_be_deleted(server: TestServer) {
    let mut directory = server.directory();
    let listed = directory.list_permissions(pb::ListPermissionsRequest::default()).await.expect("list").into_inner();
    let built_in: Vec<(String, bool)> = listed.permissions.iter().map(|p| (p.name.clone(), p.built_in)).collect();
    assert_eq!(built_in, vec![("edit_org_users".to_owned(), true), ("view_org_users".to_owned(), true)]);
    assert_eq!(server.latest_revision().await, 0, "built in, not created by a write");

    let created = create_permission(&server, "documents:read").await;
    let got = directory
        .get_permission(pb::GetPermissionRequest {
            permission: Some(pb::get_permission_request::Permission::Id(created)),
        })
        .await
        .expect("get")
        .into_inner()
        .permission
        .expect("permission");
    assert!(!got.built_in, "a permission created through the API is not built in");

    let status = directory
        .create_permission(pb::CreatePermissionRequest { name: "edit_org_users".into(), description: String::new() })
        .await
        .expect_err("the name is built in");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let revision = server.latest_revision().await;
    for name in ["edit_org_users", "view_org_users"] {
        let id = permission_id(&server, name).await;
        for force in [false, true] {
            let status = directory
                .delete_permission(pb::DeletePermissionRequest { id: id.clone(), force, allow_missing: true })
                .await
                .expect_err("built in");
            assert_eq!(status.code(), Code::FailedPrecondition, "{name}, force {force}: {status:?}");
            assert!(status.message().contains("built in"), "{}", status.message());
        }
    }
    assert_eq!(server.latest_revision().await, revision, "a refused delete writes nothing");
    assert_eq!(server.count_rows("permissions").await, 1 + BUILT_IN_PERMISSIONS);

    create_org(&server, "acme").await;
    add_member(&server, "acme", "lead").await;
    let added = grant(&server, "acme", "lead", &["edit_org_users"], None).await;
    assert_eq!(added.len(), 1, "granted like any other permission");
}
