//! Who may call what (the contract's "Who may call what") over SQLite and PostgreSQL:
//! admin-only RPCs, `edit_org_users` / `view_org_users` per organization, no escalation,
//! no existence leaks, org-scoped tokens, revocation, and the audit trail's actor and
//! request id. Every denial is PERMISSION_DENIED and writes nothing.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Bearer, Snapshot, TEST_SECRET, TestServer, add_member, create_org, create_permission, permission_id, proto as pb,
    resource, snapshot,
};
use grantd::{
    api::pb::{
        audit_service_client::AuditServiceClient, directory_service_client::DirectoryServiceClient,
        grant_service_client::GrantServiceClient,
    },
    auth::{Claims, OneOrMany, TokenRequest},
};
use pb::check_permission_request::Permission;
use tonic::{Code, Request, Status};

backend_tests!(
    non_admins_cannot_call_admin_rpcs,
    admin_scope_is_read_from_scope_or_scp_and_nothing_else,
    viewer_cannot_change_organization_users,
    edit_org_users_on_a_resource_is_not_org_wide,
    editor_cannot_act_in_another_organization,
    editor_grants_only_permissions_it_holds,
    denials_do_not_reveal_whether_an_organization_exists,
    viewer_reads_organization_a_but_not_b,
    users_may_read_their_own_permissions_only,
    catalog_reads_are_open_to_any_caller,
    org_scoped_token_acts_only_in_its_organizations,
    org_scoped_admin_token_sees_nothing_of_other_organizations,
    org_scoped_token_lists_only_its_own_memberships,
    own_reads_tell_nothing_about_organizations_the_caller_is_not_in,
    revoking_edit_org_users_takes_effect_on_the_next_write,
    changes_record_the_caller_and_request_id,
);

const ORG_A: &str = "org-a";
const ORG_B: &str = "org-b";
const EDIT: &str = "edit_org_users";
const VIEW: &str = "view_org_users";
const READ: &str = "documents:read";
const WRITE: &str = "documents:write";

/// Organizations A and B; in A, `editor` holds edit_org_users and documents:read
/// org-wide, `viewer` holds view_org_users, `alice` holds documents:read on folder f1 and
/// `bob` documents:read org-wide; in B, `bob` holds documents:read on folder f1 and
/// `carol` is a member.
struct Fixture {
    read: String,
    write: String,
    edit: String,
}

async fn setup(server: &TestServer) -> Fixture {
    create_org(server, ORG_A).await;
    create_org(server, ORG_B).await;
    let edit = permission_id(server, EDIT).await;
    let read = create_permission(server, READ).await;
    let write = create_permission(server, WRITE).await;
    for user in ["editor", "viewer", "alice", "bob"] {
        add_member(server, ORG_A, user).await;
    }
    for user in ["bob", "carol"] {
        add_member(server, ORG_B, user).await;
    }
    admin_grant(server, ORG_A, "editor", &[EDIT, READ], None).await;
    admin_grant(server, ORG_A, "viewer", &[VIEW], None).await;
    admin_grant(server, ORG_A, "alice", &[READ], resource("folder", "f1")).await;
    admin_grant(server, ORG_A, "bob", &[READ], None).await;
    admin_grant(server, ORG_B, "bob", &[READ], resource("folder", "f1")).await;
    Fixture { read, write, edit }
}

// ---------------------------------------------------------------------------------------
// Admin-only RPCs
// ---------------------------------------------------------------------------------------

async fn non_admins_cannot_call_admin_rpcs(server: TestServer) {
    let fixture = setup(&server).await;
    let before = snapshot(&server).await;
    let mut problems = Vec::new();
    for caller in ["editor", "viewer", "alice"] {
        let token = common::token(caller, false);
        for (rpc, outcome) in admin_rpcs(&server, &token, &fixture).await {
            check_denied(&mut problems, &format!("{caller}: {rpc}"), outcome, &["grants:admin"]);
        }
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn admin_scope_is_read_from_scope_or_scp_and_nothing_else(server: TestServer) {
    let fixture = setup(&server).await;
    let now = now();
    let claims = |scope: Option<&str>, scp: Option<Vec<&str>>| Claims {
        sub: "someone".into(),
        exp: now + 3600,
        nbf: Some(now),
        iat: Some(now),
        scope: scope.map(str::to_owned),
        scp: scp.map(|s| OneOrMany::Many(s.into_iter().map(str::to_owned).collect())),
        ..Claims::default()
    };
    let admins = [
        claims(Some("grants:admin"), None),
        claims(Some("openid profile grants:admin"), None),
        claims(None, Some(vec!["grants:admin"])),
        claims(None, Some(vec!["openid", "grants:admin"])),
    ];
    for admin in &admins {
        let token = sign(admin);
        directory(&server, &token)
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await
            .unwrap_or_else(|status| panic!("{admin:?} is an admin: {status:?}"));
    }

    let before = snapshot(&server).await;
    let not_admins = [
        claims(None, None),
        claims(Some("grants:administrator"), None),
        claims(Some("grants:admin:readonly"), None),
        claims(Some("GRANTS:ADMIN"), None),
        claims(Some("grants"), None),
        claims(Some("grants:adminx openid"), None),
        claims(Some("grants:admin,openid"), None),
        claims(None, Some(vec!["grants:admin openid"])),
        claims(None, Some(vec!["grants", "admin"])),
        claims(None, Some(vec![])),
    ];
    let mut problems = Vec::new();
    for not_admin in &not_admins {
        let token = sign(not_admin);
        for (rpc, outcome) in admin_rpcs(&server, &token, &fixture).await {
            check_denied(&mut problems, &format!("{not_admin:?}: {rpc}"), outcome, &["grants:admin"]);
        }
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

// ---------------------------------------------------------------------------------------
// Changing and reading an organization's users
// ---------------------------------------------------------------------------------------

async fn viewer_cannot_change_organization_users(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let mut problems = Vec::new();
    for (rpc, outcome) in org_writes(&server, &common::token("viewer", false), ORG_A).await {
        check_denied(&mut problems, &format!("viewer: {rpc}"), outcome, &[EDIT, ORG_A]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn edit_org_users_on_a_resource_is_not_org_wide(server: TestServer) {
    setup(&server).await;
    add_member(&server, ORG_A, "lurker").await;
    // edit_org_users held on a folder, and org-wide in another organization.
    admin_grant(&server, ORG_A, "lurker", &[EDIT, READ], resource("folder", "f1")).await;
    add_member(&server, ORG_B, "lurker").await;
    admin_grant(&server, ORG_B, "lurker", &[EDIT, VIEW], None).await;
    let before = snapshot(&server).await;
    let token = common::token("lurker", false);
    let mut problems = Vec::new();
    for (rpc, outcome) in org_writes(&server, &token, ORG_A).await {
        check_denied(&mut problems, &format!("lurker: {rpc}"), outcome, &[EDIT, ORG_A]);
    }
    for (rpc, outcome) in org_reads(&server, &token, ORG_A).await {
        check_denied(&mut problems, &format!("lurker: {rpc}"), outcome, &[VIEW, ORG_A]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn editor_cannot_act_in_another_organization(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let token = common::token("editor", false);
    let mut problems = Vec::new();
    for (rpc, outcome) in org_writes(&server, &token, ORG_B).await {
        check_denied(&mut problems, &format!("editor in B: {rpc}"), outcome, &[EDIT, ORG_B]);
    }
    for (rpc, outcome) in org_reads(&server, &token, ORG_B).await {
        check_denied(&mut problems, &format!("editor in B: {rpc}"), outcome, &[VIEW, ORG_B]);
    }
    // One batch over A (allowed) and B (not): all or nothing.
    let mixed = grants(&server, &token)
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: String::new(),
            resources: vec![org_resource(ORG_A, "folder", "f1"), org_resource(ORG_B, "folder", "f1")],
            all_users: true,
        })
        .await
        .map(drop);
    check_denied(&mut problems, "editor: RemoveResourcePermissions over A and B", mixed, &[EDIT, ORG_B]);
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;

    // In A the same calls are allowed.
    grants(&server, &token)
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: String::new(),
            resources: vec![org_resource(ORG_A, "folder", "f1")],
            all_users: true,
        })
        .await
        .expect("editor clears a folder in A");
    assert_eq!(server.count_rows("grants").await, before.grants - 1, "alice's grant on f1 in A is gone");
}

async fn editor_grants_only_permissions_it_holds(server: TestServer) {
    let fixture = setup(&server).await;
    let token = common::token("editor", false);
    let mut editor = grants(&server, &token);

    // documents:read, which editor holds org-wide: org-wide and on a resource.
    let before = snapshot(&server).await;
    let added = editor
        .add_user_permissions(grant_request(ORG_A, "alice", &[READ], None))
        .await
        .expect("editor grants documents:read org-wide")
        .into_inner();
    assert_eq!(added.added, vec![fixture.read.clone()]);
    editor
        .add_user_permissions(grant_request(ORG_A, "alice", &[READ], resource("folder", "f2")))
        .await
        .expect("editor grants documents:read on a folder");
    // edit_org_users, which editor holds: allowed too.
    editor
        .add_user_permissions(grant_request(ORG_A, "alice", &[EDIT], None))
        .await
        .expect("editor passes on edit_org_users");
    assert_eq!(server.count_rows("grants").await, before.grants + 3);

    // Escalation: permissions editor lacks, alone or with one it holds, for another user
    // or for itself.
    let before = snapshot(&server).await;
    let mut problems = Vec::new();
    let attempts = [
        ("documents:write to alice", grant_request(ORG_A, "alice", &[WRITE], None), WRITE),
        ("documents:write on f1", grant_request(ORG_A, "alice", &[WRITE], resource("folder", "f1")), WRITE),
        ("read+write", grant_request(ORG_A, "alice", &[READ, WRITE], resource("folder", "f3")), WRITE),
        ("view_org_users", grant_request(ORG_A, "bob", &[VIEW], None), VIEW),
        ("documents:write to itself", grant_request(ORG_A, "editor", &[WRITE], None), WRITE),
        (
            "by id",
            pb::AddUserPermissionsRequest {
                organization_id: ORG_A.into(),
                user_id: "alice".into(),
                permission_ids: vec![fixture.write.clone()],
                ..Default::default()
            },
            WRITE,
        ),
    ];
    for (what, request, lacking) in attempts {
        let outcome = editor.add_user_permissions(request).await.map(drop);
        check_denied(&mut problems, what, outcome, &[lacking, ORG_A]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;

    // Holding documents:write on folder f1 lets editor grant it on f1 only.
    admin_grant(&server, ORG_A, "editor", &[WRITE], resource("folder", "f1")).await;
    editor
        .add_user_permissions(grant_request(ORG_A, "alice", &[WRITE], resource("folder", "f1")))
        .await
        .expect("editor grants documents:write on the folder where it holds it");
    let before = snapshot(&server).await;
    let mut problems = Vec::new();
    for (what, target) in
        [("on f2", resource("folder", "f2")), ("org-wide", None), ("on doc f1", resource("doc", "f1"))]
    {
        let outcome = editor.add_user_permissions(grant_request(ORG_A, "alice", &[WRITE], target)).await.map(drop);
        check_denied(&mut problems, &format!("documents:write {what}"), outcome, &[WRITE]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn denials_do_not_reveal_whether_an_organization_exists(server: TestServer) {
    let fixture = setup(&server).await;
    let before = snapshot(&server).await;
    let token = common::token("editor", false);
    let mut problems = Vec::new();

    let existing: Vec<_> =
        org_writes(&server, &token, ORG_B).await.into_iter().chain(org_reads(&server, &token, ORG_B).await).collect();
    let ghost: Vec<_> = org_writes(&server, &token, "ghost")
        .await
        .into_iter()
        .chain(org_reads(&server, &token, "ghost").await)
        .collect();
    for ((rpc, existing), (_, ghost)) in existing.into_iter().zip(ghost) {
        check_denied(&mut problems, &format!("ghost: {rpc}"), ghost.clone(), &["ghost"]);
        // Same answer, but for the name.
        if let (Err(existing), Err(ghost)) = (existing, ghost)
            && existing.message().replace(ORG_B, "ghost") != ghost.message()
        {
            problems.push(format!("{rpc}: {:?} vs {:?}", existing.message(), ghost.message()));
        }
    }

    // Admin-only RPCs deny before looking anything up.
    let mut directory = directory(&server, &token);
    let outcomes = [
        (
            "CreateOrganization of an existing id",
            directory
                .create_organization(pb::CreateOrganizationRequest { id: ORG_A.into(), display_name: String::new() })
                .await
                .map(drop),
        ),
        (
            "DeleteOrganization of a missing id",
            directory
                .delete_organization(pb::DeleteOrganizationRequest { id: "ghost".into(), allow_missing: false })
                .await
                .map(drop),
        ),
        (
            "CreatePermission of an existing name",
            directory
                .create_permission(pb::CreatePermissionRequest { name: READ.into(), description: String::new() })
                .await
                .map(drop),
        ),
        (
            "DeletePermission of a missing id",
            directory
                .delete_permission(pb::DeletePermissionRequest {
                    id: uuid::Uuid::new_v4().to_string(),
                    force: false,
                    allow_missing: false,
                })
                .await
                .map(drop),
        ),
        (
            "DeletePermission of a granted permission",
            directory
                .delete_permission(pb::DeletePermissionRequest {
                    id: fixture.read.clone(),
                    force: false,
                    allow_missing: false,
                })
                .await
                .map(drop),
        ),
    ];
    for (what, outcome) in outcomes {
        check_denied(&mut problems, what, outcome, &["grants:admin"]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn viewer_reads_organization_a_but_not_b(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let token = common::token("viewer", false);
    for (rpc, outcome) in org_reads(&server, &token, ORG_A).await {
        outcome.unwrap_or_else(|status| panic!("viewer: {rpc} in A: {status:?}"));
    }
    let listed = grants(&server, &token)
        .list_user_permissions(list_request(ORG_A, "alice"))
        .await
        .expect("viewer lists alice's grants")
        .into_inner();
    assert_eq!(listed.grants.len(), 1);
    assert_eq!(listed.grants[0].permission_name, READ);
    let members = directory(&server, &token)
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: ORG_A.into(),
            ..Default::default()
        })
        .await
        .expect("viewer lists members")
        .into_inner()
        .members;
    assert_eq!(members.len(), 4);
    let changes = audit(&server, &token)
        .list_changes(pb::ListChangesRequest { organization_id: ORG_A.into(), page_size: 1000, ..Default::default() })
        .await
        .expect("viewer lists A's changes")
        .into_inner()
        .changes;
    assert!(!changes.is_empty());
    assert!(changes.iter().all(|c| c.organization_id == ORG_A), "only A's changes: {changes:?}");

    let mut problems = Vec::new();
    for (rpc, outcome) in org_reads(&server, &token, ORG_B).await {
        check_denied(&mut problems, &format!("viewer in B: {rpc}"), outcome, &[VIEW, ORG_B]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn users_may_read_their_own_permissions_only(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let token = common::token("alice", false);
    let mut alice = grants(&server, &token);
    let check = alice
        .check_permission(check_request(ORG_A, "alice", READ, resource("folder", "f1")))
        .await
        .expect("alice checks herself")
        .into_inner();
    assert!(check.allowed);
    let check = alice.check_permission(check_request(ORG_A, "alice", WRITE, None)).await.expect("check").into_inner();
    assert!(!check.allowed);
    let listed = alice.list_user_permissions(list_request(ORG_A, "alice")).await.expect("alice lists herself");
    assert_eq!(listed.into_inner().grants.len(), 1);
    // Her own, in an organization she is not a member of: allowed, and nothing there.
    let check = alice.check_permission(check_request(ORG_B, "alice", READ, None)).await.expect("check").into_inner();
    assert!(!check.allowed);
    let memberships = directory(&server, &token)
        .list_user_organizations(pb::ListUserOrganizationsRequest { user_id: "alice".into(), ..Default::default() })
        .await
        .expect("alice lists her organizations")
        .into_inner()
        .memberships;
    assert_eq!(memberships.iter().map(|m| m.organization_id.as_str()).collect::<Vec<_>>(), vec![ORG_A]);

    let mut problems = Vec::new();
    let outcome = alice.check_permission(check_request(ORG_A, "bob", READ, None)).await.map(drop);
    check_denied(&mut problems, "alice checks bob", outcome, &[VIEW, ORG_A]);
    let outcome = alice.list_user_permissions(list_request(ORG_A, "bob")).await.map(drop);
    check_denied(&mut problems, "alice lists bob", outcome, &[VIEW, ORG_A]);
    let outcome = alice.list_user_permissions(list_request(ORG_B, "bob")).await.map(drop);
    check_denied(&mut problems, "alice lists bob in B", outcome, &[VIEW, ORG_B]);
    let outcome = directory(&server, &token)
        .list_user_organizations(pb::ListUserOrganizationsRequest { user_id: "bob".into(), ..Default::default() })
        .await
        .map(drop);
    check_denied(&mut problems, "alice lists bob's organizations", outcome, &["grants:admin"]);
    // Near misses of her own id are other users.
    for other in ["Alice", "alice ", "alice\u{0}", "alice|x"] {
        match alice.check_permission(check_request(ORG_A, other, READ, None)).await {
            Err(status) if matches!(status.code(), Code::PermissionDenied | Code::InvalidArgument) => {}
            other_outcome => problems.push(format!("alice checks {other:?}: {other_outcome:?}")),
        }
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

async fn catalog_reads_are_open_to_any_caller(server: TestServer) {
    let fixture = setup(&server).await;
    let token = common::token("stranger", false);
    let mut stranger = directory(&server, &token);
    let permissions = stranger
        .list_permissions(pb::ListPermissionsRequest::default())
        .await
        .expect("anyone lists the catalog")
        .into_inner()
        .permissions;
    assert_eq!(permissions.len(), 4);
    let found = stranger
        .get_permission(pb::GetPermissionRequest {
            permission: Some(pb::get_permission_request::Permission::Id(fixture.edit.clone())),
        })
        .await
        .expect("anyone reads a permission")
        .into_inner()
        .permission
        .expect("permission");
    assert_eq!(found.name, EDIT);
    // Her own organizations: none.
    let memberships = stranger
        .list_user_organizations(pb::ListUserOrganizationsRequest { user_id: "stranger".into(), ..Default::default() })
        .await
        .expect("own memberships")
        .into_inner()
        .memberships;
    assert!(memberships.is_empty());
}

// ---------------------------------------------------------------------------------------
// Org-scoped tokens
// ---------------------------------------------------------------------------------------

async fn org_scoped_token_acts_only_in_its_organizations(server: TestServer) {
    setup(&server).await;
    let scoped_admin = scoped_token(ADMIN_SCOPED, true, &[ORG_B]);
    let before = snapshot(&server).await;
    let mut problems = Vec::new();
    for (rpc, outcome) in org_writes(&server, &scoped_admin, ORG_A).await {
        check_denied(&mut problems, &format!("B-scoped admin in A: {rpc}"), outcome, &[ORG_A]);
    }
    for (rpc, outcome) in org_reads(&server, &scoped_admin, ORG_A).await {
        check_denied(&mut problems, &format!("B-scoped admin in A: {rpc}"), outcome, &[ORG_A]);
    }
    // Deleting organization A is acting in A.
    let outcome = directory(&server, &scoped_admin)
        .delete_organization(pb::DeleteOrganizationRequest { id: ORG_A.into(), allow_missing: false })
        .await
        .map(drop);
    check_denied(&mut problems, "B-scoped admin: DeleteOrganization(A)", outcome, &[ORG_A]);

    // An editor of A whose token is scoped to B has no rights in A through it.
    let scoped_editor = scoped_token("editor", false, &[ORG_B]);
    for (rpc, outcome) in org_writes(&server, &scoped_editor, ORG_A).await {
        check_denied(&mut problems, &format!("B-scoped editor in A: {rpc}"), outcome, &[ORG_A]);
    }
    // Her own grants in A are out of the token's scope too.
    let outcome = grants(&server, &scoped_editor).list_user_permissions(list_request(ORG_A, "editor")).await.map(drop);
    check_denied(&mut problems, "B-scoped editor lists itself in A", outcome, &[ORG_A]);
    // An empty scope acts nowhere.
    let nowhere = scoped_token(ADMIN_SCOPED, true, &[]);
    for (rpc, outcome) in org_writes(&server, &nowhere, ORG_A).await {
        check_denied(&mut problems, &format!("empty-scoped admin in A: {rpc}"), outcome, &[ORG_A]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;

    // In B the scoped admin may act.
    let mut in_b = directory(&server, &scoped_admin);
    in_b.add_user_to_organization(pb::AddUserToOrganizationRequest {
        organization_id: ORG_B.into(),
        user_id: "dave".into(),
    })
    .await
    .expect("B-scoped admin adds a member to B");
    grants(&server, &scoped_admin)
        .add_user_permissions(grant_request(ORG_B, "dave", &[WRITE], None))
        .await
        .expect("B-scoped admin grants in B");
    // A token scoped to both acts in both.
    let both = scoped_token(ADMIN_SCOPED, true, &[ORG_A, ORG_B]);
    directory(&server, &both)
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: ORG_A.into(),
            ..Default::default()
        })
        .await
        .expect("A,B-scoped admin reads A");
}

/// A token scoped to B should learn nothing about A through the cross-organization
/// RPCs: they are refused, or answer only what is in B.
async fn org_scoped_admin_token_sees_nothing_of_other_organizations(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let token = scoped_token(ADMIN_SCOPED, true, &[ORG_B]);
    let mut problems = Vec::new();

    match audit(&server, &token).list_changes(pb::ListChangesRequest { page_size: 1000, ..Default::default() }).await {
        Err(status) if status.code() == Code::PermissionDenied => {}
        Err(status) => problems.push(format!("ListChanges without organization: {status:?}")),
        Ok(response) => {
            let leaked: Vec<_> =
                response.into_inner().changes.into_iter().filter(|c| c.organization_id == ORG_A).collect();
            if !leaked.is_empty() {
                problems.push(format!("ListChanges without organization shows {} changes of A", leaked.len()));
            }
        }
    }
    match directory(&server, &token).list_organizations(pb::ListOrganizationsRequest::default()).await {
        Err(status) if status.code() == Code::PermissionDenied => {}
        Err(status) => problems.push(format!("ListOrganizations: {status:?}")),
        Ok(response) => {
            let ids: Vec<String> = response.into_inner().organizations.into_iter().map(|o| o.id).collect();
            if ids.iter().any(|id| id == ORG_A) {
                problems.push(format!("ListOrganizations shows A: {ids:?}"));
            }
        }
    }
    match directory(&server, &token)
        .list_user_organizations(pb::ListUserOrganizationsRequest { user_id: "bob".into(), ..Default::default() })
        .await
    {
        Err(status) if status.code() == Code::PermissionDenied => {}
        Err(status) => problems.push(format!("ListUserOrganizations(bob): {status:?}")),
        Ok(response) => {
            let ids: Vec<String> = response.into_inner().memberships.into_iter().map(|m| m.organization_id).collect();
            if ids.iter().any(|id| id == ORG_A) {
                problems.push(format!("ListUserOrganizations(bob) shows bob's membership in A: {ids:?}"));
            }
        }
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

/// `orgs: ["org-b"]` acts in B only; its subject's own memberships elsewhere are none of
/// its business either.
async fn org_scoped_token_lists_only_its_own_memberships(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let memberships = |organizations, page_size| scoped_memberships(&server, "bob", organizations, page_size);
    assert_eq!(memberships(&[ORG_B], 0).await, vec![ORG_B], "a B-scoped token sees B only");
    assert_eq!(memberships(&[ORG_A], 1).await, vec![ORG_A], "an A-scoped token sees A only, page by page");
    assert_eq!(memberships(&[ORG_A, ORG_B], 1).await, vec![ORG_A, ORG_B]);
    assert!(memberships(&[], 0).await.is_empty(), "an empty scope sees nothing");
    assert!(memberships(&["ghost"], 0).await.is_empty());
    // The same subject without a scope sees both.
    let all = directory(&server, &common::token("bob", false))
        .list_user_organizations(pb::ListUserOrganizationsRequest { user_id: "bob".into(), ..Default::default() })
        .await
        .expect("unscoped")
        .into_inner()
        .memberships;
    assert_eq!(all.len(), 2);
    assert_unchanged(&server, before).await;
}

/// Anyone may check and list their own grants in any organization, member or not. The
/// answer must be the same whether or not the organization exists, or the calls probe
/// for the organizations of other tenants.
async fn own_reads_tell_nothing_about_organizations_the_caller_is_not_in(server: TestServer) {
    setup(&server).await;
    let before = snapshot(&server).await;
    let token = common::token("alice", false);
    let mut alice = grants(&server, &token);
    let mut problems = Vec::new();
    let answers = |organization: &'static str| {
        let mut alice = alice.clone();
        async move {
            let mut seen = Vec::new();
            for (name, resource) in [(READ, None), (READ, resource("folder", "f1")), ("no:such:permission", None)] {
                let outcome = alice.check_permission(check_request(organization, "alice", name, resource)).await;
                seen.push(match outcome {
                    Ok(answer) => format!("CheckPermission {name}: OK allowed={}", answer.into_inner().allowed),
                    Err(status) => format!("CheckPermission {name}: {:?} {}", status.code(), status.message()),
                });
            }
            let outcome = alice.list_user_permissions(list_request(organization, "alice")).await;
            seen.push(match outcome {
                Ok(answer) => format!("ListUserPermissions: OK {} grants", answer.into_inner().grants.len()),
                Err(status) => format!("ListUserPermissions: {:?} {}", status.code(), status.message()),
            });
            seen.into_iter().map(|answer| answer.replace(organization, "<organization>")).collect::<Vec<_>>()
        }
    };
    let existing = answers(ORG_B).await;
    let ghost = answers("ghost").await;
    for (existing, ghost) in existing.iter().zip(&ghost) {
        if existing != ghost {
            problems.push(format!("B, which exists: {existing}\n  ghost, which does not: {ghost}"));
        }
    }
    // Where she is a member nothing changes: she reads her grant.
    let check = alice.check_permission(check_request(ORG_A, "alice", READ, resource("folder", "f1"))).await;
    assert!(check.expect("alice in A").into_inner().allowed);
    // An administrator may still learn that an organization does not exist.
    let status = server
        .grants()
        .check_permission(check_request("ghost", "alice", READ, None))
        .await
        .expect_err("no such organization");
    assert_eq!(status.code(), Code::NotFound);
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;
}

// ---------------------------------------------------------------------------------------
// Revocation and the audit trail
// ---------------------------------------------------------------------------------------

async fn revoking_edit_org_users_takes_effect_on_the_next_write(server: TestServer) {
    let fixture = setup(&server).await;
    let token = common::token("editor", false);
    let mut editor = grants(&server, &token);
    editor
        .add_user_permissions(grant_request(ORG_A, "alice", &[READ], resource("folder", "f7")))
        .await
        .expect("editor may write before the revocation");

    server
        .grants()
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: ORG_A.into(),
            user_id: "editor".into(),
            permission_ids: vec![fixture.edit.clone()],
            ..Default::default()
        })
        .await
        .expect("admin revokes edit_org_users");

    let before = snapshot(&server).await;
    let mut problems = Vec::new();
    for (rpc, outcome) in org_writes(&server, &token, ORG_A).await {
        check_denied(&mut problems, &format!("revoked editor: {rpc}"), outcome, &[EDIT, ORG_A]);
    }
    // The same connection, the same token.
    let outcome =
        editor.add_user_permissions(grant_request(ORG_A, "alice", &[READ], resource("folder", "f8"))).await.map(drop);
    check_denied(&mut problems, "revoked editor on its old client", outcome, &[EDIT, ORG_A]);
    // It still holds documents:read, which is not the right to read the organization.
    for (rpc, outcome) in org_reads(&server, &token, ORG_A).await {
        check_denied(&mut problems, &format!("revoked editor: {rpc}"), outcome, &[VIEW, ORG_A]);
    }
    assert_no_problems(problems);
    assert_unchanged(&server, before).await;

    // Removing the member altogether also ends viewer's reads.
    server
        .grants()
        .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
            organization_id: ORG_A.into(),
            user_id: "viewer".into(),
            allow_missing: false,
        })
        .await
        .expect("admin removes viewer");
    let outcome = directory(&server, &common::token("viewer", false))
        .list_organization_members(pb::ListOrganizationMembersRequest {
            organization_id: ORG_A.into(),
            ..Default::default()
        })
        .await
        .expect_err("viewer was removed");
    assert_eq!(outcome.code(), Code::PermissionDenied, "{outcome:?}");
}

async fn changes_record_the_caller_and_request_id(server: TestServer) {
    let fixture = setup(&server).await;
    let after = server.latest_revision().await;
    let token = common::token("editor", false);

    let mut request = Request::new(grant_request(ORG_A, "alice", &[READ], resource("folder", "f9")));
    request.metadata_mut().insert("x-request-id", "req-editor-0001".parse().expect("ASCII"));
    let response = grants(&server, &token).add_user_permissions(request).await.expect("editor grants");
    assert_eq!(
        response.metadata().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("req-editor-0001"),
        "the request id is echoed"
    );

    let mut request =
        Request::new(pb::AddUserToOrganizationRequest { organization_id: ORG_A.into(), user_id: "erin".into() });
    request.metadata_mut().insert("x-request-id", "req-editor-0002".parse().expect("ASCII"));
    directory(&server, &token).add_user_to_organization(request).await.expect("editor adds a member");

    // Without a request id one is minted, and still recorded.
    grants(&server, &token)
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: ORG_A.into(),
            user_id: "alice".into(),
            permission_ids: vec![fixture.read.clone()],
            resource: resource("folder", "f9"),
            ..Default::default()
        })
        .await
        .expect("editor revokes");

    // A denied call leaves no change behind.
    let mut request = Request::new(grant_request(ORG_A, "alice", &[WRITE], None));
    request.metadata_mut().insert("x-request-id", "req-editor-denied".parse().expect("ASCII"));
    let status = grants(&server, &token).add_user_permissions(request).await.expect_err("escalation");
    assert_eq!(status.code(), Code::PermissionDenied);

    let changes = server
        .audit()
        .list_changes(pb::ListChangesRequest { after_revision: after, organization_id: String::new(), page_size: 100 })
        .await
        .expect("list changes")
        .into_inner()
        .changes;
    let summary: Vec<(i32, &str, &str, &str)> =
        changes.iter().map(|c| (c.kind, c.actor.as_str(), c.user_id.as_str(), c.request_id.as_str())).collect();
    assert_eq!(changes.len(), 3, "{summary:?}");
    assert!(changes.iter().all(|c| c.actor == "editor"), "{summary:?}");
    assert_eq!(changes[0].kind, pb::ChangeKind::GrantAdded as i32);
    assert_eq!(changes[0].request_id, "req-editor-0001");
    assert_eq!(changes[0].user_id, "alice");
    assert_eq!(changes[1].kind, pb::ChangeKind::MemberAdded as i32);
    assert_eq!(changes[1].request_id, "req-editor-0002");
    assert_eq!(changes[1].user_id, "erin");
    assert_eq!(changes[2].kind, pb::ChangeKind::GrantRemoved as i32);
    assert!(!changes[2].request_id.is_empty());
    assert!(changes.iter().all(|c| c.request_id != "req-editor-denied"));

    // And the admin's changes carry the admin's subject.
    let admin_changes = server
        .audit()
        .list_changes(pb::ListChangesRequest { after_revision: 0, organization_id: ORG_B.into(), page_size: 100 })
        .await
        .expect("list changes")
        .into_inner()
        .changes;
    assert!(!admin_changes.is_empty());
    assert!(admin_changes.iter().all(|c| c.actor == common::ADMIN), "{admin_changes:?}");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const ADMIN_SCOPED: &str = "scoped-admin";

/// Nothing was written, and the server still serves.
async fn assert_unchanged(server: &TestServer, before: Snapshot) {
    assert_eq!(snapshot(server).await, before, "a denied call changed something");
    server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: ORG_A.into() })
        .await
        .expect("the server still serves");
}

/// The outcome is PERMISSION_DENIED and its message names every word of `names`.
fn check_denied(problems: &mut Vec<String>, what: &str, outcome: Result<(), Status>, names: &[&str]) {
    match outcome {
        Ok(()) => problems.push(format!("{what}: was allowed")),
        Err(status) if status.code() != Code::PermissionDenied => {
            problems.push(format!("{what}: {:?} {:?}, not PERMISSION_DENIED", status.code(), status.message()))
        }
        Err(status) => {
            for name in names {
                if !status.message().contains(name) {
                    problems.push(format!("{what}: message {:?} does not name {name}", status.message()));
                }
            }
        }
    }
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "{} problem(s):\n  {}", problems.len(), problems.join("\n  "));
}

/// Every admin-only RPC, each answered by the server.
async fn admin_rpcs(server: &TestServer, token: &str, fixture: &Fixture) -> Vec<(&'static str, Result<(), Status>)> {
    let mut directory = directory(server, token);
    let mut audit = audit(server, token);
    vec![
        (
            "CreateOrganization",
            directory
                .create_organization(pb::CreateOrganizationRequest {
                    id: "org-new".into(),
                    display_name: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "DeleteOrganization",
            directory
                .delete_organization(pb::DeleteOrganizationRequest { id: ORG_A.into(), allow_missing: false })
                .await
                .map(drop),
        ),
        (
            "CreatePermission",
            directory
                .create_permission(pb::CreatePermissionRequest {
                    name: "billing:admin".into(),
                    description: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "DeletePermission",
            directory
                .delete_permission(pb::DeletePermissionRequest {
                    id: fixture.read.clone(),
                    force: true,
                    allow_missing: false,
                })
                .await
                .map(drop),
        ),
        ("ListOrganizations", directory.list_organizations(pb::ListOrganizationsRequest::default()).await.map(drop)),
        (
            "ListChanges without organization",
            audit.list_changes(pb::ListChangesRequest { page_size: 10, ..Default::default() }).await.map(drop),
        ),
        (
            "ListUserOrganizations of another user",
            directory
                .list_user_organizations(pb::ListUserOrganizationsRequest {
                    user_id: "bob".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
    ]
}

/// Every RPC that changes `organization`'s users.
async fn org_writes(server: &TestServer, token: &str, organization: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let mut grants = grants(server, token);
    let mut directory = directory(server, token);
    vec![
        (
            "AddUserPermissions",
            grants
                .add_user_permissions(grant_request(organization, "alice", &[READ], resource("folder", "f9")))
                .await
                .map(drop),
        ),
        (
            "RemoveUserPermissions",
            grants
                .remove_user_permissions(pb::RemoveUserPermissionsRequest {
                    organization_id: organization.into(),
                    user_id: "bob".into(),
                    permission_names: vec![READ.into()],
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "RemoveResourcePermissions",
            grants
                .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
                    user_id: String::new(),
                    resources: vec![org_resource(organization, "folder", "f1")],
                    all_users: true,
                })
                .await
                .map(drop),
        ),
        (
            "RemoveUserFromOrganization",
            grants
                .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
                    organization_id: organization.into(),
                    user_id: "bob".into(),
                    allow_missing: false,
                })
                .await
                .map(drop),
        ),
        (
            "AddUserToOrganization",
            directory
                .add_user_to_organization(pb::AddUserToOrganizationRequest {
                    organization_id: organization.into(),
                    user_id: "mallory".into(),
                })
                .await
                .map(drop),
        ),
    ]
}

/// Every RPC that reads `organization`'s grants, members and changes (of another user).
async fn org_reads(server: &TestServer, token: &str, organization: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let mut grants = grants(server, token);
    let mut directory = directory(server, token);
    let mut audit = audit(server, token);
    vec![
        ("ListUserPermissions", grants.list_user_permissions(list_request(organization, "bob")).await.map(drop)),
        ("CheckPermission", grants.check_permission(check_request(organization, "bob", READ, None)).await.map(drop)),
        (
            "ListOrganizationMembers",
            directory
                .list_organization_members(pb::ListOrganizationMembersRequest {
                    organization_id: organization.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "GetOrganization",
            directory.get_organization(pb::GetOrganizationRequest { id: organization.into() }).await.map(drop),
        ),
        (
            "ListChanges",
            audit
                .list_changes(pb::ListChangesRequest {
                    organization_id: organization.into(),
                    page_size: 10,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
    ]
}

async fn admin_grant(
    server: &TestServer,
    organization: &str,
    user: &str,
    names: &[&str],
    resource: Option<pb::Resource>,
) {
    server
        .grants()
        .add_user_permissions(grant_request(organization, user, names, resource))
        .await
        .unwrap_or_else(|status| panic!("admin grants {names:?} to {user} in {organization}: {status:?}"));
}

fn grant_request(
    organization: &str,
    user: &str,
    names: &[&str],
    resource: Option<pb::Resource>,
) -> pb::AddUserPermissionsRequest {
    pb::AddUserPermissionsRequest {
        organization_id: organization.into(),
        user_id: user.into(),
        permission_names: names.iter().map(|n| (*n).to_owned()).collect(),
        resource,
        ..Default::default()
    }
}

fn list_request(organization: &str, user: &str) -> pb::ListUserPermissionsRequest {
    pb::ListUserPermissionsRequest { organization_id: organization.into(), user_id: user.into(), ..Default::default() }
}

fn check_request(
    organization: &str,
    user: &str,
    name: &str,
    resource: Option<pb::Resource>,
) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        organization_id: organization.into(),
        user_id: user.into(),
        permission: Some(Permission::PermissionName(name.into())),
        resource,
        at_least_revision: 0,
    }
}

fn org_resource(organization: &str, kind: &str, id: &str) -> pb::OrganizationResource {
    pb::OrganizationResource { r#type: kind.into(), id: id.into(), organization_id: organization.into() }
}

fn grants(server: &TestServer, token: &str) -> GrantServiceClient<common::Authed> {
    GrantServiceClient::new(server.channel_as(Bearer::new(token)))
}

fn directory(server: &TestServer, token: &str) -> DirectoryServiceClient<common::Authed> {
    DirectoryServiceClient::new(server.channel_as(Bearer::new(token)))
}

fn audit(server: &TestServer, token: &str) -> AuditServiceClient<common::Authed> {
    AuditServiceClient::new(server.channel_as(Bearer::new(token)))
}

/// Every page of `subject`'s ListUserOrganizations of itself, with a token scoped to
/// `organizations`.
async fn scoped_memberships(server: &TestServer, subject: &str, organizations: &[&str], page_size: i32) -> Vec<String> {
    let mut directory = directory(server, &scoped_token(subject, false, organizations));
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = directory
            .list_user_organizations(pb::ListUserOrganizationsRequest {
                user_id: subject.into(),
                page_size,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("a caller lists its own organizations")
            .into_inner();
        listed.extend(page.memberships.into_iter().map(|m| m.organization_id));
        if page.next_page_token.is_empty() {
            return listed;
        }
        page_token = page.next_page_token;
    }
}

/// A token acting only in `organizations`.
fn scoped_token(subject: &str, admin: bool, organizations: &[&str]) -> String {
    common::mint(TokenRequest {
        subject: subject.to_owned(),
        admin,
        ttl: Duration::from_secs(3600),
        organizations: Some(organizations.iter().map(|o| (*o).to_owned()).collect()),
        issuer: None,
        audience: None,
    })
}

fn sign(claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET),
    )
    .expect("sign")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}
