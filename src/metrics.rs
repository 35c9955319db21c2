//! Prometheus metrics, served on their own listener (`--metrics-listen`) so that the
//! gRPC port stays gRPC-only.
//!
//! The registry is process-wide: requests, latencies and the feed's high-water mark are
//! recorded where they happen; pool gauges are read when scraped.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use axum::{Router, extract::State, routing::get};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::storage::{self, DatabaseConnection};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    shed: IntCounter,
    latency: HistogramVec,
    check_batch: Histogram,
    pool_connections: IntGauge,
    pool_idle: IntGauge,
    latest_revision: IntGauge,
    watch_lag: IntGauge,
    watchers: IntGauge,
    connections: IntGauge,
    connections_refused: IntCounter,
    accept_errors: IntCounter,
}

/// The process's metrics; `None` only if the registry could not be built, which the
/// log then says once.
pub fn global() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| Metrics::new().map_err(|err| tracing::error!(error = %err, "metrics are disabled")).ok())
        .as_ref()
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("grantd".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Finished gRPC requests by method and status code"),
            &["rpc", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "gRPC request latency by method").buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["rpc"],
        )?;
        let check_batch = Histogram::with_opts(
            HistogramOpts::new("check_batch_size", "CheckPermission calls answered by one database statement")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )?;
        let shed = IntCounter::new("requests_shed_total", "Requests refused with RESOURCE_EXHAUSTED by load shedding")?;
        let pool_connections = IntGauge::new("db_pool_connections", "Open database connections")?;
        let pool_idle = IntGauge::new("db_pool_idle_connections", "Idle database connections")?;
        let latest_revision = IntGauge::new(
            "latest_revision",
            "Latest committed revision seen by the change feed (the committed one while nobody watches)",
        )?;
        let watch_lag = IntGauge::new(
            "watch_lag_revisions",
            "Revisions committed in the database that this process's change feed has not read yet",
        )?;
        let watchers = IntGauge::new("watchers", "Open WatchChanges streams")?;
        let connections = IntGauge::new("connections", "Open gRPC connections")?;
        let connections_refused = IntCounter::new(
            "connections_refused_total",
            "Connections closed at once because --max-connections were open",
        )?;
        let accept_errors =
            IntCounter::new("accept_errors_total", "Failed accepts of new connections (out of file descriptors, say)")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(check_batch.clone()))?;
        registry.register(Box::new(pool_connections.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        registry.register(Box::new(latest_revision.clone()))?;
        registry.register(Box::new(watch_lag.clone()))?;
        registry.register(Box::new(watchers.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        Ok(Self {
            registry,
            requests,
            shed,
            latency,
            check_batch,
            pool_connections,
            pool_idle,
            latest_revision,
            watch_lag,
            watchers,
            connections,
            connections_refused,
            accept_errors,
        })
    }

    /// Records one finished request.
    pub fn record(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        self.requests.with_label_values(&[rpc, code_name(code)]).inc();
        self.latency.with_label_values(&[rpc]).observe(elapsed.as_secs_f64());
    }

    /// Records one statement answering `checks` CheckPermission calls.
    pub fn checks_read_together(&self, checks: usize) {
        self.check_batch.observe(checks as f64);
    }

    pub fn request_shed(&self) {
        self.shed.inc();
    }

    pub fn set_latest_revision(&self, revision: i64) {
        self.latest_revision.set(revision);
    }

    pub fn watcher_opened(&self) {
        self.watchers.inc();
    }

    pub fn watcher_closed(&self) {
        self.watchers.dec();
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn accept_failed(&self) {
        self.accept_errors.inc();
    }

    async fn render(&self, db: &DatabaseConnection) -> String {
        match storage::numbering::current_revision(db).await {
            Ok(committed) => {
                // The feed reads nothing while nobody watches (service::feed): it is behind
                // on nothing either.
                if self.watchers.get() == 0 {
                    self.latest_revision.set(committed);
                }
                self.watch_lag.set((committed - self.latest_revision.get()).max(0));
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the committed revision for metrics"),
        }
        let (size, idle) = pool_state(db);
        self.pool_connections.set(size);
        self.pool_idle.set(idle);
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn pool_state(db: &DatabaseConnection) -> (i64, i64) {
    match db {
        DatabaseConnection::SqlxPostgresPoolConnection(_) => {
            let pool = db.get_postgres_connection_pool();
            (i64::from(pool.size()), i64::try_from(pool.num_idle()).unwrap_or(i64::MAX))
        }
        DatabaseConnection::SqlxSqlitePoolConnection(_) => {
            let pool = db.get_sqlite_connection_pool();
            (i64::from(pool.size()), i64::try_from(pool.num_idle()).unwrap_or(i64::MAX))
        }
        _ => (0, 0),
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    db: DatabaseConnection,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(%address, "serving metrics");
    let app = Router::new().route("/metrics", get(scrape)).with_state(db);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn scrape(State(db): State<DatabaseConnection>) -> String {
    match global() {
        Some(metrics) => metrics.render(&db).await,
        None => String::new(),
    }
}
