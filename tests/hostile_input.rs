//! Hostile and malformed input over SQLite and PostgreSQL: every such request is rejected
//! with the right code and field, writes nothing, and leaves the server serving.

mod common;

use common::{
    Snapshot, TestServer, add_member, bad_request_fields, create_org, create_permission, proto as pb, resource,
    snapshot,
};
use pb::directory_service_client::DirectoryServiceClient;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
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
