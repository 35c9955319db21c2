//! The tonic server: the three grantd services behind message-size limits, plus
//! grpc.health.v1 and server reflection (v1 and v1alpha, so grpcurl needs no .proto
//! files), served until `shutdown` resolves, then drained.

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    service::{Routes, interceptor::InterceptedService},
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_web::GrpcWebLayer;
use tower::Layer;

use crate::{
    admission::AdmissionLayer,
    api::{
        AuditApi, BulkApi, DirectoryApi, GrantApi,
        pb::{
            self, audit_service_server::AuditServiceServer, bulk_service_server::BulkServiceServer,
            directory_service_server::DirectoryServiceServer, grant_service_server::GrantServiceServer,
        },
    },
    auth::Authenticator,
    connections::{self, ActivityLayer, ConnectionLimits},
    console,
    edge::{EdgeLayer, HEADER_LIST_LIMIT},
    service::{Audit, Bulk, ChangeFeed, Directory, Grants, Sequencer, WatchLimits, Writes},
    storage::{self, DatabaseConnection, StatementLog},
};

/// How often the SQLite WAL is checkpointed: often enough that bursts of large adds do
/// not grow it far.
const SQLITE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// How often each process looks for changes that a write committed but never numbered
/// (its process ended in between): the longest such a change waits for the change feed.
const SEQUENCER_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the queue of events waiting for their revision is vacuumed (PostgreSQL):
/// every event passes through it, so its dead rows pile up fast, and every sequencing
/// reads what it holds, dead rows included: vacuumed every second, it holds few.
const PENDING_VACUUM_INTERVAL: Duration = Duration::from_secs(1);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct ServerOptions {
    /// Who may call the grantd services (health and reflection are open).
    pub authenticator: Authenticator,
    /// Largest request accepted after decoding; larger ones are RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// Longest a request may run; a shorter `grpc-timeout` from the client wins.
    pub request_timeout: Duration,
    /// Concurrent requests (HTTP/2 streams) per connection.
    pub max_concurrent_streams: u32,
    /// How many connections, and how long each may wait, idle or not answer pings.
    pub connections: ConnectionLimits,
    /// Requests running at once across all connections; more wait (see `admission`).
    pub max_in_flight: usize,
    /// How long a request beyond `max_in_flight` waits before RESOURCE_EXHAUSTED.
    pub queue_timeout: Duration,
    pub tls: Option<TlsOptions>,
    /// How often the database is pinged to keep health current.
    pub health_probe_interval: Duration,
    /// How often the change log is read for WatchChanges.
    pub watch_poll_interval: Duration,
    /// Changes a watcher may fall behind before its stream ends with ABORTED.
    pub watch_buffer: usize,
    /// What each WatchChanges stream may cost, and how long it lives.
    pub watch_limits: WatchLimits,
    /// Connections for the change feed and the health probe; the request pool when absent.
    pub background_db: Option<DatabaseConnection>,
    /// Told the text of every statement requests send (tests count them).
    pub statement_log: Option<StatementLog>,
    /// Serve the web console at `/console/`, and gRPC-web over HTTP/1.1 for it; without
    /// it the port speaks gRPC over HTTP/2 only.
    pub console: bool,
}

impl ServerOptions {
    pub fn new(authenticator: Authenticator) -> Self {
        Self {
            authenticator,
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: 256,
            connections: ConnectionLimits::default(),
            max_in_flight: 64,
            queue_timeout: Duration::from_secs(1),
            tls: None,
            health_probe_interval: Duration::from_secs(1),
            watch_poll_interval: Duration::from_millis(100),
            watch_buffer: 4_096,
            watch_limits: WatchLimits::default(),
            background_db: None,
            statement_log: None,
            console: true,
        }
    }
}

/// PEM contents for TLS; with `client_ca`, clients must present a certificate it signed.
#[derive(Clone)]
pub struct TlsOptions {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

/// Everything a reflection client needs, google.rpc error details included, so that
/// grpcurl can print them.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Serves on `listener` until `shutdown` resolves; in-flight requests then finish.
pub async fn serve(
    mut db: DatabaseConnection,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let limit = options.max_message_bytes;
    let auth = options.authenticator.clone();
    // Background work (the change feed, the health probe) has its own connections, so a
    // busy request pool neither delays it nor passes for an unreachable database.
    let background = options.background_db.clone().unwrap_or_else(|| db.clone());
    let feed = ChangeFeed::start(background.clone(), options.watch_poll_interval, options.watch_buffer).await?;
    let mut writer = storage::writer(&db).await?;
    // Background work on the writer (the WAL checkpoint) is no request's statement.
    let background_writer = writer.connection().clone();
    if let Some(log) = &options.statement_log {
        storage::log_statements(&mut db, log);
        storage::log_statements(writer.connection_mut(), log);
    }
    let sequencer = Sequencer::new(writer.clone(), db.clone());
    let writes = Writes::new(writer.clone(), sequencer.clone());
    // Each grantd service also speaks gRPC-web (the console's protocol); plain gRPC passes
    // through untouched. Without the console the port accepts no HTTP/1.1, so gRPC-web is
    // then reachable only over HTTP/2.
    let web = GrpcWebLayer::new();
    let grants = web.layer(InterceptedService::new(
        GrantServiceServer::new(GrantApi::new(Grants::new(db.clone(), writes.clone())))
            .max_decoding_message_size(limit),
        auth.clone(),
    ));
    let directory = web.layer(InterceptedService::new(
        DirectoryServiceServer::new(DirectoryApi::new(Directory::new(db.clone(), writes.clone())))
            .max_decoding_message_size(limit),
        auth.clone(),
    ));
    let bulk = web.layer(InterceptedService::new(
        BulkServiceServer::new(BulkApi::new(Bulk::new(db.clone(), writes, options.request_timeout)))
            .max_decoding_message_size(limit),
        auth.clone(),
    ));
    let audit = web.layer(InterceptedService::new(
        AuditServiceServer::new(AuditApi::new(Audit::new(db.clone(), feed.clone(), options.watch_limits)))
            .max_decoding_message_size(limit),
        auth,
    ));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    // The first answer is in place before the port serves, so no check sees an unknown service.
    let serving = reachable(&background, options.health_probe_interval).await;
    report(&health_reporter, serving).await;
    let checkpoints =
        tokio::spawn(storage::checkpoint_sqlite_wal(background.clone(), background_writer, SQLITE_CHECKPOINT_INTERVAL));
    if let Err(err) = sequencer.number_leftovers(&background).await {
        tracing::warn!(error = %err, "cannot number changes left unnumbered; the sweeper will retry");
    }
    let sweeper = tokio::spawn(sequencer.sweep(background.clone(), SEQUENCER_SWEEP_INTERVAL, PENDING_VACUUM_INTERVAL));
    let probe = tokio::spawn(probe_database(background, health_reporter, options.health_probe_interval, serving));

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
        if let Some(ca) = &tls.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config)?;
    }

    let limits = options.connections.within_file_limit();
    let address = listener.local_addr()?;
    tracing::info!(address = %address, tls = options.tls.is_some(), max_connections = limits.max_connections, "serving");
    // The console's files sit beside the services; tonic's own routes answer everything
    // else (an unknown method is UNIMPLEMENTED, as without the console).
    let mut routes = Routes::default();
    if options.console {
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{address}/console/"), "web console");
        let services = std::mem::take(routes.axum_router_mut());
        *routes.axum_router_mut() = services.merge(console::routes());
    }
    builder
        .accept_http1(options.console)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_max_header_list_size(HEADER_LIST_LIMIT)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(ActivityLayer)
        .layer(EdgeLayer::new(options.request_timeout))
        .layer(AdmissionLayer::new(options.max_in_flight, options.queue_timeout))
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(grants)
        .add_service(directory)
        .add_service(audit)
        .add_service(bulk)
        .serve_with_incoming_shutdown(connections::incoming(listener, limits), async {
            shutdown.await;
            // Watch streams would otherwise hold the drain open until the grace ends.
            feed.close();
        })
        .await?;
    probe.abort();
    checkpoints.abort();
    sweeper.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Health follows the database: NOT_SERVING while it cannot be reached, so that load
/// balancers and orchestrators route around a replica that would only answer UNAVAILABLE.
async fn probe_database(db: DatabaseConnection, reporter: HealthReporter, interval: Duration, mut serving: bool) {
    loop {
        tokio::time::sleep(interval).await;
        let now = reachable(&db, interval).await;
        if now != serving {
            if now {
                tracing::info!("database reachable again; serving");
            } else {
                tracing::warn!("database unreachable; health is NOT_SERVING");
            }
            report(&reporter, now).await;
            serving = now;
        }
    }
}

async fn reachable(db: &DatabaseConnection, interval: Duration) -> bool {
    tokio::time::timeout(interval.max(Duration::from_secs(1)), db.ping()).await.is_ok_and(|pinged| pinged.is_ok())
}

async fn report(reporter: &HealthReporter, serving: bool) {
    const SERVICES: [&str; 5] =
        ["", "grants.v1.GrantService", "grants.v1.DirectoryService", "grants.v1.AuditService", "grants.v1.BulkService"];
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
