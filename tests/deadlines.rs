//! A client's deadline is honoured even while the request waits on the database, and a
//! write whose caller gave up still finishes as a whole (it runs in its own task).

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestServer, add_member, create_org, create_permission, hold_membership_lock, proto as pb};
use tonic::{Code, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_cuts_a_waiting_request_short_and_the_write_still_lands_whole() {
    // A row lock held from outside makes the write wait; SQLite would instead wait for
    // its whole-database write lock, which a second connection cannot hold here.
    let Some(server) = TestServer::start(Backend::Postgres, "deadlines::client_deadline").await else { return };
    create_org(&server, "acme").await;
    create_permission(&server, "documents:read").await;
    add_member(&server, "acme", "alice").await;

    let blocker = hold_membership_lock(&server.db, "acme", "alice").await;

    let mut request = Request::new(pb::AddUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        permission_names: vec!["documents:read".into()],
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = server.grants().add_user_permissions(request).await.expect_err("the deadline passes first");
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the call returned instead of waiting for the lock");

    // Other requests are served meanwhile.
    let orgs = server.directory().list_organizations(pb::ListOrganizationsRequest::default()).await.expect("list");
    assert_eq!(orgs.into_inner().organizations.len(), 1);

    blocker.rollback().await.expect("release the lock");
    // The abandoned write finishes on its own: it commits whole (grant and change event).
    let list = pb::ListUserPermissionsRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        ..Default::default()
    };
    let mut granted = Vec::new();
    for _ in 0..100 {
        granted = server.grants().list_user_permissions(list.clone()).await.expect("list").into_inner().grants;
        if !granted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(granted.len(), 1, "the write committed after its caller left");
    // A grant is readable as soon as it commits; its event is numbered just after (see
    // docs/consistency.md, "Revisions"), so the revision may lag the table for a moment.
    let mut latest = 0;
    for _ in 0..100 {
        latest = server.latest_revision().await;
        if latest >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(latest, 4, "org, permission, member, then exactly one grant event");
}
