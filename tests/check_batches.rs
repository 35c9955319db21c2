//! Checks that arrive together are read together, seen in the metrics. A test binary of
//! its own: the metrics registry is process-wide, and other tests' requests would count.

mod common;
#[path = "common/metrics.rs"]
mod metrics;

use common::{Backend, TestServer, add_member, create_org, create_permission, proto as pb};
use metrics::{sample, scrape};
use tokio::net::TcpListener;

/// Checks that arrive while another is being read go together in one statement: under a
/// burst, some statement must have answered more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_arrive_together_are_read_together() {
    let Some(server) = TestServer::start(Backend::Sqlite, "check_batches::burst").await else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(grantd::metrics::serve(listener, server.db.clone(), std::future::pending()));
    create_org(&server, "acme").await;
    add_member(&server, "acme", "alice").await;
    create_permission(&server, "documents:read").await;

    let check = pb::CheckPermissionRequest {
        organization_id: "acme".into(),
        user_id: "alice".into(),
        permission: Some(pb::check_permission_request::Permission::PermissionName("documents:read".into())),
        resource: Some(pb::Resource { r#type: "folder".into(), id: "f1".into() }),
        at_least_revision: 0,
    };
    let burst = (0..200).map(|_| {
        let mut grants = server.grants();
        let check = check.clone();
        async move { grants.check_permission(check).await }
    });
    for answer in futures::future::join_all(burst).await {
        assert!(!answer.expect("check").into_inner().allowed);
    }
    let metrics = scrape(address).await;
    let statements = sample(&metrics, "grantd_check_batch_size_count ").expect("batch size count");
    let checks = sample(&metrics, "grantd_check_batch_size_sum ").expect("batch size sum");
    assert_eq!(checks, 200.0, "{metrics}");
    assert!(statements < checks, "200 concurrent checks took {statements} statements: {metrics}");
}
