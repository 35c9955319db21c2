//! Prometheus metrics, scraped over HTTP as Prometheus would.

mod common;
#[path = "common/metrics.rs"]
mod metrics;

use common::{Backend, TestServer, create_org, proto as pb};
use metrics::{sample, scrape};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_latencies_pool_and_revision_are_exported() {
    let Some(server) = TestServer::start(Backend::Sqlite, "metrics::exported").await else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(grantd::metrics::serve(listener, server.db.clone(), std::future::pending()));

    create_org(&server, "acme").await;
    let status = server
        .directory()
        .create_organization(pb::CreateOrganizationRequest { id: "acme".into(), display_name: String::new() })
        .await
        .expect_err("taken");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);

    // While nobody watches, the feed reads nothing and is behind on nothing.
    let metrics = scrape(address).await;
    assert_eq!(sample(&metrics, "grantd_latest_revision "), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "grantd_watch_lag_revisions "), Some(0.0), "{metrics}");
    let mut watch = server
        .audit()
        .watch_changes(pb::WatchChangesRequest { after_revision: 0, organization_id: String::new() })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("first change").expect("a change");

    let metrics = scrape(address).await;
    let ok = r#"grantd_requests_total{code="OK",rpc="CreateOrganization"}"#;
    let taken = r#"grantd_requests_total{code="ALREADY_EXISTS",rpc="CreateOrganization"}"#;
    assert!(sample(&metrics, ok) >= Some(1.0), "{metrics}");
    assert!(sample(&metrics, taken) >= Some(1.0), "{metrics}");
    assert!(
        sample(&metrics, r#"grantd_request_duration_seconds_count{rpc="CreateOrganization"}"#) >= Some(2.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "grantd_db_pool_connections ") >= Some(1.0), "{metrics}");
    assert!(sample(&metrics, "grantd_db_pool_idle_connections ").is_some(), "{metrics}");
    assert!(sample(&metrics, "grantd_watchers ") >= Some(1.0), "{metrics}");
    assert!(sample(&metrics, "grantd_watch_lag_revisions ").is_some(), "{metrics}");

    // The feed's high-water mark follows commits.
    let mut revision = None;
    for _ in 0..50 {
        revision = sample(&scrape(address).await, "grantd_latest_revision ");
        if revision >= Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(revision, Some(1.0));
    // Once the feed has read revision 1, nothing committed is left unread.
    assert_eq!(sample(&scrape(address).await, "grantd_watch_lag_revisions "), Some(0.0));
}
