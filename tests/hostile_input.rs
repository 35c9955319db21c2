//! Hostile and malformed input over SQLite and PostgreSQL: every such request is rejected
//! with the right code and field, writes nothing, and leaves the server serving. Then
//! hostile connections (silent, unfinished, too many, out of file descriptors), which
//! involve no storage and run over SQLite only.

mod common;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use common::{
    ADMIN, Backend, Snapshot, TestServer, add_member, bad_request_fields, create_org, create_permission, proto as pb,
    resource, snapshot, wire,
};
use pb::directory_service_client::DirectoryServiceClient;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status};

backend_tests!(
    malformed_organization_ids_are_rejected,
    malformed_user_ids_are_rejected,
    malformed_permission_ids_are_rejected,
    malformed_resources_are_rejected,
    quoted_ids_are_data_not_sql,
    empty_and_oversized_permission_lists_are_rejected,
    a_thousand_unknown_permissions_answer_not_found,
    batch_limit_counts_distinct_permissions,
    oversized_text_fields_are_rejected,
    ten_megabyte_requests_are_resource_exhausted,
    raw_junk_on_the_wire_does_not_stop_the_server,
    undecodable_requests_are_invalid_argument_with_a_request_id,
    refusals_before_a_handler_carry_the_request_id,
    permission_ids_have_one_canonical_form,
    revisions_beyond_what_the_database_numbers_are_named_as_sent,
);

/// An organization `acme` with member `alice` and a permission `documents:read`, so that
/// the malformed field is the only thing wrong with a request.
async fn fixture(server: &TestServer) -> String {
    create_org(server, "acme").await;
    add_member(server, "acme", "alice").await;
    create_permission(server, "documents:read").await
}

/// The server still answers a normal read and a normal write.
async fn still_serving(server: &TestServer) {
    let org = server
        .directory()
        .get_organization(pb::GetOrganizationRequest { id: "acme".into() })
        .await
        .expect("a normal read after hostile input")
        .into_inner()
        .organization
        .expect("organization");
    assert_eq!(org.id, "acme");
    let added = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_names: vec!["documents:read".into()],
            resource: resource("folder", "after-hostile-input"),
            ..Default::default()
        })
        .await
        .expect("a normal write after hostile input")
        .into_inner();
    assert_eq!(added.added.len(), 1);
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let fields = bad_request_fields(&status);
    assert!(fields.iter().any(|f| f == field), "{what}: details name {field}, got {fields:?}");
}

/// Ids that the contract rejects: not 1-128 bytes of printable ASCII without spaces.
fn malformed_ids() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("space", "ac me".into()),
        ("leading space", " acme".into()),
        ("tab", "acme\t".into()),
        ("newline", "acme\n".into()),
        ("129 bytes", "a".repeat(129)),
        ("NUL", "acme\0".into()),
        ("Cyrillic a", "\u{430}cme".into()),
        ("fullwidth", "\u{ff41}cme".into()),
        ("zero-width space", "ac\u{200b}me".into()),
        ("SQL with spaces", "x' OR '1'='1".into()),
        ("SQL statement", "acme'; DROP TABLE grants; --".into()),
        ("DEL", "acme\u{7f}".into()),
    ]
}

async fn malformed_organization_ids_are_rejected(server: TestServer) {
    let read = fixture(&server).await;
    let before = snapshot(&server).await;
    let (mut grants, mut directory) = (server.grants(), server.directory());

    for (what, id) in malformed_ids() {
        let result = grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: id.clone(),
                user_id: "alice".into(),
                permission_ids: vec![read.clone()],
                ..Default::default()
            })
            .await;
        assert_invalid(result, "organization_id", &format!("AddUserPermissions, {what}"));
        let result = grants
            .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
                organization_id: id.clone(),
                user_id: "alice".into(),
                allow_missing: true,
            })
            .await;
        assert_invalid(result, "organization_id", &format!("RemoveUserFromOrganization, {what}"));
        let result = directory
            .create_organization(pb::CreateOrganizationRequest { id: id.clone(), display_name: String::new() })
            .await;
        assert_invalid(result, "id", &format!("CreateOrganization, {what}"));
        let result =
            directory.delete_organization(pb::DeleteOrganizationRequest { id: id.clone(), allow_missing: true }).await;
        assert_invalid(result, "id", &format!("DeleteOrganization, {what}"));
        let result = directory.get_organization(pb::GetOrganizationRequest { id: id.clone() }).await;
        assert_invalid(result, "id", &format!("GetOrganization, {what}"));
        let result = directory
            .add_user_to_organization(pb::AddUserToOrganizationRequest {
                organization_id: id.clone(),
                user_id: "bob".into(),
            })
            .await;
        assert_invalid(result, "organization_id", &format!("AddUserToOrganization, {what}"));
    }

    // 128 bytes is still an id: this one is merely unknown.
    let status = directory
        .get_organization(pb::GetOrganizationRequest { id: "a".repeat(128) })
        .await
        .expect_err("unknown organization");
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

async fn malformed_user_ids_are_rejected(server: TestServer) {
    let read = fixture(&server).await;
    let before = snapshot(&server).await;
    let (mut grants, mut directory) = (server.grants(), server.directory());

    for (what, id) in malformed_ids() {
        let result = grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: id.clone(),
                permission_ids: vec![read.clone()],
                ..Default::default()
            })
            .await;
        assert_invalid(result, "user_id", &format!("AddUserPermissions, {what}"));
        let result = directory
            .add_user_to_organization(pb::AddUserToOrganizationRequest {
                organization_id: "acme".into(),
                user_id: id.clone(),
            })
            .await;
        assert_invalid(result, "user_id", &format!("AddUserToOrganization, {what}"));
        let result = grants
            .check_permission(pb::CheckPermissionRequest {
                organization_id: "acme".into(),
                user_id: id.clone(),
                permission: Some(pb::check_permission_request::Permission::PermissionId(read.clone())),
                resource: None,
                at_least_revision: 0,
            })
            .await;
        assert_invalid(result, "user_id", &format!("CheckPermission, {what}"));
    }

    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

async fn malformed_permission_ids_are_rejected(server: TestServer) {
    let read = fixture(&server).await;
    let before = snapshot(&server).await;
    let mut grants = server.grants();

    let bad_ids = [
        "not-a-uuid",
        "",
        "' OR 1=1 --",
        "00000000-0000-0000-0000-00000000000g",
        "3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60-extra",
        "3f1e5a4c\0-0b7d-4c43-9f53-2f1c3d4e5f60",
    ];
    for bad in bad_ids {
        let result = grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission_ids: vec![bad.to_owned()],
                ..Default::default()
            })
            .await;
        assert_invalid(result, "permission_ids[0]", &format!("{bad:?} first"));
        let result = grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission_ids: vec![read.clone(), bad.to_owned()],
                ..Default::default()
            })
            .await;
        assert_invalid(result, "permission_ids[1]", &format!("{bad:?} second"));
    }
    // Names: the same, under their own field.
    for bad in ["Documents:read", "documents read", "documents:read'--", ""] {
        let result = grants
            .remove_user_permissions(pb::RemoveUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission_names: vec!["documents:read".into(), bad.to_owned()],
                ..Default::default()
            })
            .await;
        assert_invalid(result, "permission_names[1]", &format!("name {bad:?}"));
    }
    // Every problem of one request is named in the one answer.
    let status = grants
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "ac me".into(),
            user_id: String::new(),
            permission_ids: vec!["nope".into()],
            resource: resource("Folder", "f1"),
            ..Default::default()
        })
        .await
        .expect_err("four bad fields");
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = bad_request_fields(&status);
    fields.sort();
    assert_eq!(fields, vec!["organization_id", "permission_ids[0]", "resource.type", "user_id"]);

    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

async fn malformed_resources_are_rejected(server: TestServer) {
    let read = fixture(&server).await;
    let before = snapshot(&server).await;
    let mut grants = server.grants();
    let add = |kind: &str, id: &str| pb::AddUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        permission_ids: vec![read.clone()],
        resource: resource(kind, id),
        ..Default::default()
    };

    let too_long = "x".repeat(65);
    let bad_types = ["Folder", "9x", "", "folder ", "fold-er", "f\u{f6}lder", "_folder", too_long.as_str()];
    for kind in bad_types {
        assert_invalid(grants.add_user_permissions(add(kind, "f1")).await, "resource.type", &format!("type {kind:?}"));
    }
    for (what, id) in malformed_ids() {
        assert_invalid(grants.add_user_permissions(add("folder", &id)).await, "resource.id", &format!("id {what}"));
    }
    // An organization resource names this organization or nothing.
    assert_invalid(grants.add_user_permissions(add("organization", "globex")).await, "resource.id", "other org");

    let result = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![pb::OrganizationResource {
                r#type: "folder".into(),
                id: "f1".into(),
                organization_id: String::new(),
            }],
            all_users: false,
        })
        .await;
    assert_invalid(result, "resources[0].organization_id", "missing organization_id");
    let result = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: vec![
                pb::OrganizationResource { r#type: "folder".into(), id: "f1".into(), organization_id: "acme".into() },
                pb::OrganizationResource { r#type: "9x".into(), id: "f1".into(), organization_id: "acme".into() },
            ],
            all_users: false,
        })
        .await;
    assert_invalid(result, "resources[1].type", "bad type in the second resource");

    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

async fn quoted_ids_are_data_not_sql(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let mut directory = server.directory();

    // Quotes are printable ASCII: these are valid ids, stored and read back as sent.
    let quoted = "x'--";
    let created = directory
        .create_organization(pb::CreateOrganizationRequest {
            id: quoted.into(),
            display_name: "Robert'); DROP TABLE organizations;--".into(),
        })
        .await
        .expect("a quoted id is valid")
        .into_inner()
        .organization
        .expect("organization");
    assert_eq!(created.id, quoted);
    let got = directory
        .get_organization(pb::GetOrganizationRequest { id: quoted.into() })
        .await
        .expect("get")
        .into_inner()
        .organization
        .expect("organization");
    assert_eq!(got.id, created.id);
    assert_eq!(got.display_name, "Robert'); DROP TABLE organizations;--");

    let listed: Vec<String> = directory
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .organizations
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(listed, vec!["acme", quoted]);
    let after = snapshot(&server).await;
    assert_eq!(
        after,
        Snapshot { revision: before.revision + 1, organizations: before.organizations + 1, ..before },
        "one organization and one event, nothing else"
    );

    // An always-true predicate is only a string that names nothing.
    for probe in ["x'OR'1'='1", "acme'--", "acme\"", "%", "_", "acm_", "acme%"] {
        let status =
            directory.get_organization(pb::GetOrganizationRequest { id: probe.into() }).await.expect_err(probe);
        assert_eq!(status.code(), Code::NotFound, "{probe}");
        let check = server
            .grants()
            .check_permission(pb::CheckPermissionRequest {
                organization_id: "acme".into(),
                user_id: probe.into(),
                permission: Some(pb::check_permission_request::Permission::PermissionName("documents:read".into())),
                resource: None,
                at_least_revision: 0,
            })
            .await
            .expect("check")
            .into_inner();
        assert!(!check.allowed, "{probe}");
    }

    // A quoted member and a quoted resource id round-trip through a grant.
    add_member(&server, quoted, "o'brien").await;
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: quoted.into(),
            user_id: "o'brien".into(),
            permission_names: vec!["documents:read".into()],
            resource: resource("document", "d'1\"--"),
            ..Default::default()
        })
        .await
        .expect("grant");
    let listed = server
        .grants()
        .list_user_permissions(pb::ListUserPermissionsRequest {
            organization_id: quoted.into(),
            user_id: "o'brien".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .grants;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].organization_id.as_str(), listed[0].user_id.as_str()), (quoted, "o'brien"));
    assert_eq!(listed[0].resource, resource("document", "d'1\"--"));
    assert_eq!(server.count_rows("grants").await, before.grants + 1);

    // The audit trail keeps them as given too (SQLite carries a write's events as JSON).
    let tricky = "d\\\"[]\\u0000";
    add_member(&server, quoted, tricky).await;
    server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: quoted.into(),
            user_id: tricky.into(),
            permission_names: vec!["documents:read".into()],
            resource: resource("document", tricky),
            ..Default::default()
        })
        .await
        .expect("grant to a user whose id looks like JSON");
    let changes = server
        .audit()
        .list_changes(pb::ListChangesRequest { organization_id: quoted.into(), page_size: 100, ..Default::default() })
        .await
        .expect("list changes")
        .into_inner()
        .changes;
    let granted: Vec<(&str, &str, Option<&pb::Resource>)> = changes
        .iter()
        .filter(|c| c.kind == pb::ChangeKind::GrantAdded as i32)
        .map(|c| (c.organization_id.as_str(), c.user_id.as_str(), c.resource.as_ref()))
        .collect();
    assert_eq!(
        granted,
        vec![
            (quoted, "o'brien", resource("document", "d'1\"--").as_ref()),
            (quoted, tricky, resource("document", tricky).as_ref())
        ]
    );
    still_serving(&server).await;
}

async fn empty_and_oversized_permission_lists_are_rejected(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let mut grants = server.grants();
    let add = |ids: Vec<String>, names: Vec<String>| pb::AddUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        permission_ids: ids,
        permission_names: names,
        ..Default::default()
    };

    assert_invalid(grants.add_user_permissions(add(Vec::new(), Vec::new())).await, "permission_ids", "empty");
    let result = grants
        .remove_user_permissions(pb::RemoveUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            ..Default::default()
        })
        .await;
    assert_invalid(result, "permission_ids", "empty remove");
    let result = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources: Vec::new(),
            all_users: false,
        })
        .await;
    assert_invalid(result, "resources", "no resources");

    let ids: Vec<String> = (0..1_001).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    assert_invalid(grants.add_user_permissions(add(ids, Vec::new())).await, "permission_ids", "1,001 ids");
    let names: Vec<String> = (0..1_001).map(|i| format!("p{i}")).collect();
    assert_invalid(grants.add_user_permissions(add(Vec::new(), names)).await, "permission_ids", "1,001 names");
    let (ids, names) =
        ((0..501).map(|_| uuid::Uuid::new_v4().to_string()).collect(), (0..500).map(|i| format!("p{i}")).collect());
    assert_invalid(grants.add_user_permissions(add(ids, names)).await, "permission_ids", "501 ids + 500 names");
    let names: Vec<String> = (0..100_000).map(|i| format!("permission:{i}")).collect();
    let status = grants.add_user_permissions(add(Vec::new(), names)).await.expect_err("100,000 names");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["permission_ids"], "one violation, not one per entry");
    assert!(status.message().contains("1000"), "the limit is reported: {}", status.message());

    let resources: Vec<pb::OrganizationResource> = (0..1_001)
        .map(|i| pb::OrganizationResource {
            r#type: "folder".into(),
            id: format!("f{i}"),
            organization_id: "acme".into(),
        })
        .collect();
    let result = grants
        .remove_resource_permissions(pb::RemoveResourcePermissionsRequest {
            user_id: "alice".into(),
            resources,
            all_users: false,
        })
        .await;
    assert_invalid(result, "resources", "1,001 resources");

    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

/// Exactly 1,000 distinct permissions pass validation: these names are simply unknown,
/// and the contract says NOT_FOUND "details list every missing id". The answer must reach
/// the client as NOT_FOUND, and the connection must survive it.
async fn a_thousand_unknown_permissions_answer_not_found(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let names: Vec<String> = (0..1_000).map(|i| format!("p{i}")).collect();
    let status = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_names: names,
            ..Default::default()
        })
        .await
        .expect_err("unknown names");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("p0"), "the missing names are listed: {}", status.message());
    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

/// The contract: "up to 1,000 permissions per request; duplicates in one list count once"
/// (the proto: "together 1-1,000 distinct permissions").
async fn batch_limit_counts_distinct_permissions(server: TestServer) {
    let read = fixture(&server).await;
    let before = snapshot(&server).await;
    // 1,001 entries naming one permission.
    let result = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_ids: vec![read.clone()],
            permission_names: vec!["documents:read".into(); 1_000],
            ..Default::default()
        })
        .await;
    let added = result.expect("1,001 entries naming one distinct permission are within the limit").into_inner();
    assert_eq!(added.added, vec![read]);
    assert_eq!(snapshot(&server).await.grants, before.grants + 1);
}

async fn oversized_text_fields_are_rejected(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let mut directory = server.directory();

    let result = directory
        .create_organization(pb::CreateOrganizationRequest { id: "big".into(), display_name: "x".repeat(201) })
        .await;
    assert_invalid(result, "display_name", "201 characters");
    let result = directory
        .create_organization(pb::CreateOrganizationRequest { id: "big".into(), display_name: "\u{e9}".repeat(201) })
        .await;
    assert_invalid(result, "display_name", "201 two-byte characters");
    let result = directory
        .create_organization(pb::CreateOrganizationRequest { id: "big".into(), display_name: "a\0b".into() })
        .await;
    assert_invalid(result, "display_name", "NUL in display_name");
    let result = directory
        .create_permission(pb::CreatePermissionRequest { name: "big".into(), description: "x".repeat(1025) })
        .await;
    assert_invalid(result, "description", "1,025 characters");
    let result = directory
        .create_permission(pb::CreatePermissionRequest { name: "big".into(), description: "x".repeat(100_000) })
        .await;
    assert_invalid(result, "description", "100,000 characters");
    assert_eq!(snapshot(&server).await, before);

    // The limits themselves are accepted, counted in characters, not bytes.
    let org = directory
        .create_organization(pb::CreateOrganizationRequest { id: "big".into(), display_name: "\u{e9}".repeat(200) })
        .await
        .expect("200 characters")
        .into_inner()
        .organization
        .expect("organization");
    assert_eq!(org.display_name, "\u{e9}".repeat(200));
    let permission = directory
        .create_permission(pb::CreatePermissionRequest { name: "big".into(), description: "\u{1f600}".repeat(1024) })
        .await
        .expect("1,024 characters")
        .into_inner()
        .permission
        .expect("permission");
    assert_eq!(permission.description, "\u{1f600}".repeat(1024));
    still_serving(&server).await;
}

async fn ten_megabyte_requests_are_resource_exhausted(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let mut codes = Vec::new();

    // 80,000 names of 128 bytes: about 10 MB.
    let names: Vec<String> = (0..80_000).map(|i| format!("{i:0>128}")).collect();
    let status = server
        .grants()
        .add_user_permissions(pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission_names: names,
            ..Default::default()
        })
        .await
        .expect_err("10 MB request");
    codes.push(("AddUserPermissions with 10 MB of names", status.code(), status.message().to_owned()));

    let mut directory = DirectoryServiceClient::new(server.admin_channel()).max_encoding_message_size(64 << 20);
    let status = directory
        .create_organization(pb::CreateOrganizationRequest { id: "huge".into(), display_name: "x".repeat(10 << 20) })
        .await
        .expect_err("10 MB display name");
    codes.push(("CreateOrganization with a 10 MB display_name", status.code(), status.message().to_owned()));

    // Several at once on one connection, then normal traffic on the same channel.
    let calls = (0..4).map(|_| {
        let mut directory = directory.clone();
        async move {
            directory
                .create_organization(pb::CreateOrganizationRequest {
                    id: "huge".into(),
                    display_name: "y".repeat(10 << 20),
                })
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        let status = result.expect_err("10 MB");
        codes.push(("concurrent CreateOrganization", status.code(), status.message().to_owned()));
    }

    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
    for (what, code, message) in codes {
        assert_eq!(code, Code::ResourceExhausted, "{what}: {message}");
    }
}

async fn raw_junk_on_the_wire_does_not_stop_the_server(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    let mut junk = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let mut frames_after_preface = PREFACE.to_vec();
    // A SETTINGS frame claiming a huge length, then garbage.
    frames_after_preface.extend_from_slice(&[0xff, 0xff, 0xff, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]);
    frames_after_preface.extend_from_slice(&junk[..4096]);
    let mut http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    http1.extend_from_slice(&junk[..512]);
    let payloads: Vec<Vec<u8>> = vec![
        junk.clone(),
        PREFACE[..10].to_vec(),
        frames_after_preface,
        http1,
        Vec::new(),
        b"\0\0\0\0\0\0\0\0".to_vec(),
    ];

    for payload in &payloads {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        // The server may hang up in the middle of the junk; that is its right.
        let _ = stream.write_all(payload).await;
        let _ = stream.shutdown().await;
        drop(stream);
    }

    // A connection left half-open with a truncated preface does not block others.
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled.write_all(&PREFACE[..10]).await.expect("write");
    still_serving(&server).await;
    // A fresh connection works too, not only the one the harness opened before.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("a new connection");
    let org = DirectoryServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        common::Bearer::new(&common::token(common::ADMIN, true)),
    ))
    .get_organization(pb::GetOrganizationRequest { id: "acme".into() })
    .await
    .expect("a normal call on a new connection")
    .into_inner();
    assert_eq!(org.organization.expect("organization").id, "acme");

    // Junk after a valid preface is answered (if at all) by HTTP/2, and the server lives on.
    let mut after_preface = TcpStream::connect(server.addr).await.expect("connect");
    let _ = after_preface.write_all(PREFACE).await;
    let _ = after_preface.write_all(&junk[..1024]).await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), after_preface.read(&mut buf)).await;
    drop(after_preface);
    drop(stalled);

    let after = snapshot(&server).await;
    assert_eq!(after.grants, before.grants + 1, "only still_serving's grant");
    assert_eq!(after.revision, before.revision + 1, "only still_serving's grant");
    let health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// Bytes that are no request of the method's type. tonic's decoder answers them INTERNAL
/// with its own text (wire types, offsets), before any handler logs or names the request;
/// they are the client's mistake.
async fn undecodable_requests_are_invalid_argument_with_a_request_id(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let authorization = format!("Bearer {}", common::token(ADMIN, true));
    // GetOrganizationRequest is `string id = 1`.
    let mut long_varint = vec![0x10];
    long_varint.extend_from_slice(&[0xff; 10]);
    long_varint.push(0x01);
    let mut truncated_frame = wire::frame(b"\x0a\x04acme");
    truncated_frame[4] = 100;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8 in a string field", wire::frame(&[0x0a, 0x02, 0xff, 0xfe])),
        ("a varint where a string belongs", wire::frame(&[0x08, 0x01])),
        ("a field longer than the message", wire::frame(&[0x0a, 0x10, b'a'])),
        ("an 11-byte varint", wire::frame(&long_varint)),
        ("a gRPC frame shorter than its length", truncated_frame),
    ];
    let mut problems = Vec::new();
    for (i, (what, body)) in cases.into_iter().enumerate() {
        let sent_id = format!("undecodable-{i}");
        let metadata = [("authorization", authorization.as_str()), ("x-request-id", sent_id.as_str())];
        let answer = wire::call(server.addr, "/grants.v1.DirectoryService/GetOrganization", &metadata, body).await;
        let message = answer.status.message().to_lowercase();
        if answer.status.code() != Code::InvalidArgument {
            problems.push(format!("{what}: {:?} {:?}", answer.status.code(), answer.status.message()));
        }
        if message.len() > 100 || ["wire type", "utf", "buffer", "varint", "eof"].iter().any(|w| message.contains(w)) {
            problems.push(format!("{what}: the decoder's own text reached the client: {message:?}"));
        }
        if answer.request_id.as_deref() != Some(sent_id.as_str()) {
            problems.push(format!("{what}: request id {:?}, sent {sent_id}", answer.request_id));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

/// README: every response carries `x-request-id`, the caller's own when it sent a valid
/// one. These are answered before a grantd handler runs.
async fn refusals_before_a_handler_carry_the_request_id(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    let request_id = |metadata: &tonic::metadata::MetadataMap| {
        metadata.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    let mut problems = Vec::new();

    let mut anonymous = DirectoryServiceClient::new(server.channel.clone());
    let mut request = tonic::Request::new(pb::ListPermissionsRequest::default());
    request.metadata_mut().insert("x-request-id", "no-token-1".parse().expect("ASCII"));
    let status = anonymous.list_permissions(request).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    if request_id(status.metadata()).as_deref() != Some("no-token-1") {
        problems.push(format!("UNAUTHENTICATED echoes the caller's request id: {:?}", status.metadata()));
    }
    let status =
        anonymous.list_permissions(pb::ListPermissionsRequest::default()).await.expect_err("no token, no request id");
    if request_id(status.metadata()).is_none_or(|id| uuid::Uuid::parse_str(&id).is_err()) {
        problems.push(format!("UNAUTHENTICATED without a request id gets a fresh one: {:?}", status.metadata()));
    }
    // A request id that is no valid id is replaced.
    let mut request = tonic::Request::new(pb::ListPermissionsRequest::default());
    request.metadata_mut().insert("x-request-id", "has spaces".parse().expect("ASCII"));
    let status = anonymous.list_permissions(request).await.expect_err("no token");
    if request_id(status.metadata()).is_none_or(|id| id == "has spaces") {
        problems.push(format!("an invalid request id is replaced: {:?}", status.metadata()));
    }

    let mut directory = DirectoryServiceClient::new(server.admin_channel()).max_encoding_message_size(64 << 20);
    let status = directory
        .create_organization(pb::CreateOrganizationRequest { id: "huge".into(), display_name: "x".repeat(10 << 20) })
        .await
        .expect_err("10 MB display name");
    assert_eq!(status.code(), Code::ResourceExhausted);
    if request_id(status.metadata()).is_none() {
        problems.push(format!("RESOURCE_EXHAUSTED for an oversized request: {:?}", status.metadata()));
    }

    let authorization = format!("Bearer {}", common::token(ADMIN, true));
    let answer = wire::call(
        server.addr,
        "/grants.v1.DirectoryService/NoSuchMethod",
        &[("authorization", &authorization), ("x-request-id", "unknown-method-1")],
        wire::frame(&[]),
    )
    .await;
    assert_eq!(answer.status.code(), Code::Unimplemented);
    if answer.request_id.as_deref() != Some("unknown-method-1") {
        problems.push(format!("UNIMPLEMENTED: {answer:?}"));
    }

    let health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health");
    if request_id(health.metadata()).is_none() {
        problems.push(format!("a health answer: {:?}", health.metadata()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(snapshot(&server).await, before);
}

/// A permission id has one spelling, the one grantd answers with; `Uuid::parse_str`
/// alone also takes braces, `urn:uuid:`, no hyphens and uppercase.
async fn permission_ids_have_one_canonical_form(server: TestServer) {
    let read = fixture(&server).await;
    let before = snapshot(&server).await;
    let spellings = [
        format!("{{{read}}}"),
        format!("urn:uuid:{read}"),
        read.replace('-', ""),
        read.to_uppercase(),
        format!(" {read}"),
    ];
    let mut grants = server.grants();
    let mut directory = server.directory();
    for spelling in spellings {
        let result = grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission_ids: vec![spelling.clone()],
                ..Default::default()
            })
            .await;
        assert_invalid(result, "permission_ids[0]", &format!("AddUserPermissions {spelling:?}"));
        let result = grants
            .check_permission(pb::CheckPermissionRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission: Some(pb::check_permission_request::Permission::PermissionId(spelling.clone())),
                resource: None,
                at_least_revision: 0,
            })
            .await;
        assert_invalid(result, "permission_id", &format!("CheckPermission {spelling:?}"));
        let result = directory
            .get_permission(pb::GetPermissionRequest {
                permission: Some(pb::get_permission_request::Permission::Id(spelling.clone())),
            })
            .await;
        assert_invalid(result, "id", &format!("GetPermission {spelling:?}"));
        let result = directory
            .delete_permission(pb::DeletePermissionRequest { id: spelling.clone(), force: true, allow_missing: true })
            .await;
        assert_invalid(result, "id", &format!("DeletePermission {spelling:?}"));
    }
    assert_eq!(snapshot(&server).await, before);
    still_serving(&server).await;
}

/// Revisions are numbered in a signed 64-bit column; a client may still send any u64,
/// and the answer must name the revision it sent, not one it did not.
async fn revisions_beyond_what_the_database_numbers_are_named_as_sent(server: TestServer) {
    fixture(&server).await;
    let before = snapshot(&server).await;
    for sent in [1u64 << 63, u64::MAX] {
        let outcomes = [
            server
                .grants()
                .check_permission(pb::CheckPermissionRequest {
                    organization_id: "acme".into(),
                    user_id: "alice".into(),
                    permission: Some(pb::check_permission_request::Permission::PermissionName("documents:read".into())),
                    resource: None,
                    at_least_revision: sent,
                })
                .await
                .map(drop),
            server
                .grants()
                .list_user_permissions(pb::ListUserPermissionsRequest {
                    organization_id: "acme".into(),
                    user_id: "alice".into(),
                    at_least_revision: sent,
                    ..Default::default()
                })
                .await
                .map(drop),
            server
                .directory()
                .list_organization_members(pb::ListOrganizationMembersRequest {
                    organization_id: "acme".into(),
                    at_least_revision: sent,
                    ..Default::default()
                })
                .await
                .map(drop),
            server
                .directory()
                .list_user_organizations(pb::ListUserOrganizationsRequest {
                    user_id: "alice".into(),
                    at_least_revision: sent,
                    ..Default::default()
                })
                .await
                .map(drop),
        ];
        for outcome in outcomes {
            let status = outcome.expect_err("ahead of every revision");
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert!(status.message().contains(&sent.to_string()), "{sent} in {:?}", status.message());
        }
    }
    assert_eq!(snapshot(&server).await, before);
}

// ---------------------------------------------------------------------------------------
// Connections that cost without asking anything
// ---------------------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 0x04, 0, 0, 0, 0, 0];

/// Whether the server closes `stream` within `limit`, reading (and dropping) whatever it
/// sends meanwhile.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, reading).await.is_ok()
}

/// A replica of a SQLite test server with connection limits of its own.
async fn server_with(
    test: &str,
    tune: impl FnOnce(&mut grantd::connections::ConnectionLimits),
) -> (TestServer, TestServer) {
    let server = TestServer::start(Backend::Sqlite, test).await.expect("a SQLite server");
    let replica = server.replica(|options| tune(&mut options.connections)).await;
    (server, replica)
}

/// Connections that send nothing, half a preface, only SETTINGS, or a header block that
/// never ends held a file descriptor each for as long as the peer liked; so did one that
/// made a request and then went quiet. None of them is owed anything; a connection with
/// a stream open is, however long the stream is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unfinished_connections_are_closed() {
    let (server, replica) = server_with("hostile_input::silent_connections", |limits| {
        limits.handshake_timeout = Duration::from_millis(500);
        limits.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let unfinished_headers: Vec<u8> = [PREFACE, EMPTY_SETTINGS, &[0, 0, 2, 0x01, 0, 0, 0, 0, 1, 0x83, 0x86]].concat();
    let openings: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", Vec::new()),
        ("half a preface", PREFACE[..10].to_vec()),
        ("only SETTINGS", [PREFACE, EMPTY_SETTINGS].concat()),
        ("HEADERS without END_HEADERS", unfinished_headers),
    ];
    let mut held = Vec::new();
    for (what, opening) in openings {
        let mut stream = TcpStream::connect(replica.addr).await.expect("connect");
        stream.write_all(&opening).await.expect("send the opening");
        held.push((what, stream));
    }
    for (what, stream) in &mut held {
        assert!(closed_by_server(stream, Duration::from_secs(10)).await, "a connection that sent {what} stays open");
    }

    // One request, then quiet: closed once idle.
    let tcp = TcpStream::connect(replica.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{}/grpc.health.v1.Health/Check", replica.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(wire::frame(&[]).into(), true).expect("body");
    let mut answer = response.await.expect("health answers").into_body();
    while answer.data().await.is_some() {}
    assert!(
        tokio::time::timeout(Duration::from_secs(10), connection).await.is_ok(),
        "a connection idle after its request stays open"
    );

    // A stream that sends nothing for longer than the idle timeout keeps its connection.
    let mut stream = replica
        .audit()
        .watch_changes(pb::WatchChangesRequest { after_revision: 0, organization_id: String::new() })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    create_org(&server, "acme").await;
    let change = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a change within the wait")
        .expect("the stream is open")
        .expect("a change, not an error");
    assert_eq!(change.change.expect("change").organization_id, "acme");
}

/// A peer that stops answering (a cable pulled, a process frozen) is found by HTTP/2
/// PINGs it leaves unanswered, not only when its handshake or idle time runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_leave_pings_unanswered_are_dropped() {
    let (_server, replica) = server_with("hostile_input::unanswered_pings", |limits| {
        limits.handshake_timeout = Duration::from_secs(60);
        limits.idle_timeout = Duration::from_secs(60);
        limits.keepalive_interval = Duration::from_millis(200);
        limits.keepalive_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = TcpStream::connect(replica.addr).await.expect("connect");
    stream.write_all(&[PREFACE, EMPTY_SETTINGS].concat()).await.expect("preface");
    // Acknowledge the server's SETTINGS (its first frame), then answer nothing more.
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.expect("the server's SETTINGS");
    assert_eq!(header[3], 0x04, "SETTINGS first: {header:?}");
    let length = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.expect("settings payload");
    stream.write_all(&[0, 0, 0, 0x04, 0x01, 0, 0, 0, 0]).await.expect("SETTINGS ACK");
    assert!(closed_by_server(&mut stream, Duration::from_secs(10)).await, "a peer that answers no PING stays");
}

/// At most `max_connections` at once: beyond them a connection is closed as it arrives
/// (the client fails fast and may try another replica), counted and logged; when some
/// close, new ones are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_counted() {
    let (server, replica) = server_with("hostile_input::connection_limit", |limits| {
        limits.max_connections = 3;
        limits.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_address = metrics_listener.local_addr().expect("address");
    tokio::spawn(grantd::metrics::serve(metrics_listener, server.db.clone(), std::future::pending()));
    let refused = || async {
        metrics::sample(&metrics::scrape(metrics_address).await, "grantd_connections_refused_total ").unwrap_or(0.0)
    };
    let refused_before = refused().await;

    // The replica's own client channel is one of the three.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(replica.addr).await.expect("connect"));
    }
    // Let the server accept them before the next one arrives.
    replica.grants().check_permission(pb::CheckPermissionRequest::default()).await.expect_err("invalid");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut beyond = TcpStream::connect(replica.addr).await.expect("the kernel accepts the TCP connection");
    assert!(closed_by_server(&mut beyond, Duration::from_secs(10)).await, "a fourth connection is served");
    let status = DirectoryServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", replica.addr)).expect("uri").connect_lazy(),
    )
    .list_permissions(pb::ListPermissionsRequest::default())
    .await
    .expect_err("no room for another connection");
    // Which code tonic gives a connection closed during its handshake depends on how
    // far the handshake got (UNKNOWN, CANCELLED, UNAVAILABLE): a transport failure, at
    // once, is what matters, not a call left waiting on a server with no room.
    assert!(std::error::Error::source(&status).is_some(), "a transport failure, not a server's answer: {status:?}");
    assert!(refused().await >= refused_before + 2.0, "refused connections are counted");

    drop(silent);
    let mut served = false;
    for _ in 0..100 {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", replica.addr)).expect("uri");
        if let Ok(channel) = channel.connect().await {
            let health = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await;
            if health.is_ok() {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "once connections close, new ones are served again");
}

/// Out of file descriptors, a failing accept was retried at once, forever: the process
/// spun at 90% CPU doing nothing. It must back off, and serve again once descriptors
/// are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_spin() {
    let database = process::TestDatabase::sqlite();
    let secret = process::SecretFile::new();
    let metrics_address = format!("127.0.0.1:{}", process::free_port());
    let mut grantd = process::Grantd::start(
        "fd-exhaustion",
        &database.url,
        &secret,
        &["--handshake-timeout-ms", "6000", "--db-max-connections", "4", "--metrics-listen", &metrics_address],
    )
    .await;
    // Fewer descriptors than the connection limit allows for: accept itself fails.
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &grantd.pid().to_string(), "--nofile=96:96"])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(lowered.success(), "prlimit failed");
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(grantd.addr).await.expect("the kernel accepts the TCP connection"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(grantd.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_seconds(grantd.pid()) - before;
    assert!(used < 0.5, "grantd used {used:.2} s of CPU in 2 s with nothing to do:\n{}", grantd.log_tail(2000));

    drop(silent);
    let mut served = false;
    for _ in 0..100 {
        if process::health(grantd.addr, "").await.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "grantd serves again once descriptors are free:\n{}", grantd.log_tail(2000));
    let scraped = metrics::scrape(metrics_address.parse().expect("address")).await;
    let failed = metrics::sample(&scraped, "grantd_accept_errors_total ").unwrap_or(0.0);
    assert!(failed > 0.0, "failed accepts are counted:\n{scraped}");
    assert!(grantd.log_tail(20_000).contains("cannot accept connections"), "{}", grantd.log_tail(2000));
    assert!(grantd.try_exit().is_none(), "grantd is still running");
}

/// User plus system CPU time the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let (_, after_name) = stat.rsplit_once(')').expect("stat has (comm)");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; the state (3rd) is fields[0] here.
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on every Linux that grantd runs on.
    ticks / 100.0
}
