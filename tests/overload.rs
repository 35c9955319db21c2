//! Load shedding: with every request slot taken, a new request waits at most the queue
//! timeout and is refused with RESOURCE_EXHAUSTED; health is never refused; once a slot
//! frees up the server serves again and the admitted request completes.

mod common;

use std::time::Duration;

use common::{
    Backend, TestServer, add_member, create_org, create_permission, hold_membership_lock, proto as pb, resource,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn check_alice() -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        permission: Some(pb::check_permission_request::Permission::PermissionName("documents:read".into())),
        resource: resource("document", "d1"),
        at_least_revision: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_requests_are_shed_with_resource_exhausted_and_health_is_not() {
    // One slot, held by a write that waits on a row lock taken from outside (PostgreSQL:
    // SQLite's whole-database write lock cannot be held by a second connection here).
    let Some(server) = TestServer::start(Backend::Postgres, "overload::shed").await else { return };
    let limited = server
        .replica(|options| {
            options.max_in_flight = 1;
            options.queue_timeout = Duration::from_millis(100);
        })
        .await;
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;

    let blocker = hold_membership_lock(&server.db, "acme", "alice").await;
    let mut grants = limited.grants();
    let admitted = tokio::spawn(async move {
        grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission_names: vec!["documents:read".into()],
                resource: resource("document", "d1"),
                ..Default::default()
            })
            .await
    });

    // Until the write has its slot, a check may still get in; then it must be refused.
    let mut refused = None;
    for _ in 0..50 {
        match limited.grants().check_permission(check_alice()).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let refused = refused.expect("a check is refused while the only slot is taken");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("overloaded"), "{refused:?}");

    let health = HealthClient::new(limited.channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health is answered under overload");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);

    blocker.rollback().await.expect("release the lock");
    let added = admitted.await.expect("join").expect("the admitted write completes");
    assert_eq!(added.into_inner().added.len(), 1);
    let answer = limited.grants().check_permission(check_alice()).await.expect("served again");
    assert!(answer.into_inner().allowed);
}
