//! GrantService behaviour over SQLite and PostgreSQL.

mod common;

use common::{TestServer, add_member, create_org, create_permission, proto as pb, resource};
use tonic::Code;

backend_tests!(add_check_list_and_remove_round_trip);

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
