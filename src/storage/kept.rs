//! Connections kept out of sqlx's pool for one-statement work: CheckPermission's reads,
//! and on PostgreSQL an administrator's add (`storage::adds`), its own transaction.
//!
//! sqlx tests every connection that returns to its pool (on PostgreSQL a `Sync` and a
//! wait for `ReadyForQuery`, on SQLite a round trip to the connection's thread), and sqlx
//! 0.8 cannot be told not to. For a check, which is one statement, that doubled the
//! round trips: perf put 16% of grantd's CPU time in that test under a check load; an add
//! at one client took 0.53-0.55 ms p50 with it and 0.43-0.45 without. These connections
//! are taken from the pool once and handed from one statement to the next without it. A
//! statement that fails or is cancelled drops its connection, which goes back to sqlx's
//! pool, is tested there and closed if broken. A pool of one connection keeps none:
//! transactions need that connection between two statements.
//!
//! PostgreSQL plans the first executions of a prepared statement for their parameters
//! and keeps planning anew while that looks cheaper than its one generic plan. For the
//! check statement, whose checks travel as arrays, it always does: the generic plan
//! assumes a hundred checks per array. Planning every call took a check at one client
//! from 0.37 to 0.88-0.93 ms p50; the plan is index probes whatever the arrays hold, so
//! connections use the generic plan (`plan_cache_mode`, set in `connect`).

use std::{
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, QueryResult, RuntimeErr, Statement,
    Values, sqlx,
};
use sea_query_binder::SqlxValues;
use sqlx::{Connection as _, Executor as _, Postgres, Sqlite, pool::PoolConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{StatementLog, connect::pool_limits, error::is_broken_connection};

/// One attempt per connection a restarted server may have closed, within reason.
const MAX_ATTEMPTS: u32 = 5;

/// PostgreSQL keeps a prepared statement's generic plan as long as the connection lives,
/// unless an ANALYZE of its tables invalidates it. A plan made while the tables were small
/// (sequential scans) outlived their growth: with autovacuum off, a check at one client
/// took 3.61 ms p50 instead of 0.405 ms once 50,000 permissions had been added (a new
/// process: 0.386 ms). So a kept connection's plans are remade at least this often.
pub const PLAN_LIFETIME: Duration = Duration::from_secs(10);

pub struct KeptConnections {
    pool: Pool,
    /// Connections between two statements; never more than `permits` allows.
    idle: Mutex<Vec<Connection>>,
    /// How many connections may be kept at once: the rest of the pool stays for
    /// transactions and the other RPCs.
    permits: Semaphore,
    capacity: usize,
    /// Whether connections are kept between statements at all (not with a pool of one).
    keeps: bool,
    acquire_timeout: Duration,
    log: Option<StatementLog>,
}

impl fmt::Debug for KeptConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptConnections")
            .field("backend", &self.backend())
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

enum Pool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

enum Connection {
    /// With the time its prepared statements were last forgotten.
    Postgres(PoolConnection<Postgres>, Instant),
    Sqlite(PoolConnection<Sqlite>),
}

/// A connection lent to one statement, with its place among the `permits`. Dropped without
/// [`Lease::give_back`], the connection goes to sqlx's pool instead of `idle`.
struct Lease<'a> {
    lender: &'a KeptConnections,
    connection: Option<Connection>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn give_back(mut self) {
        if !self.lender.keeps {
            return;
        }
        if let (Some(connection), Ok(mut idle)) = (self.connection.take(), self.lender.idle.lock()) {
            idle.push(connection);
        }
    }
}

impl KeptConnections {
    /// Kept connections may be up to half of `db`'s pool (at least one), and wait for
    /// one as long as the pool's acquire timeout.
    pub fn new(db: &DatabaseConnection, log: Option<StatementLog>) -> Result<Self, DbErr> {
        let pool = match db.get_database_backend() {
            DatabaseBackend::Postgres => Pool::Postgres(db.get_postgres_connection_pool().clone()),
            DatabaseBackend::Sqlite => Pool::Sqlite(db.get_sqlite_connection_pool().clone()),
            other => return Err(DbErr::Custom(format!("grantd does not read from {other:?}"))),
        };
        let (max_connections, acquire_timeout) = pool_limits(db);
        let permits = usize::try_from(max_connections / 2).unwrap_or(1).max(1);
        Ok(Self {
            pool,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(permits),
            capacity: permits,
            keeps: max_connections > 1,
            acquire_timeout,
            log,
        })
    }

    /// How many connections may be kept at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn backend(&self) -> DatabaseBackend {
        match self.pool {
            Pool::Postgres(_) => DatabaseBackend::Postgres,
            Pool::Sqlite(_) => DatabaseBackend::Sqlite,
        }
    }

    /// Runs one statement, which must be safe to repeat (a read, or a write that finds
    /// what an earlier run of it wrote). When the connection, not the statement, fails
    /// (the server may have closed it while it waited idle, here or in sqlx's pool, and
    /// that shows in the statement or in setting the connection up) the statement runs
    /// again on another.
    pub async fn query_all(&self, statement: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut attempt = 1;
        loop {
            let answer = match self.lease().await {
                Ok(lease) => run(lease, statement).await,
                Err(err) => Err(err),
            };
            match answer {
                Err(err) if attempt < MAX_ATTEMPTS && is_broken_connection(&err) => {
                    tracing::debug!(attempt, error = %err, "a kept connection failed, retrying on another");
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    /// A connection within the acquire timeout, counting both waits: for a permit, then
    /// for sqlx's pool when no connection is idle here.
    async fn lease(&self) -> Result<Lease<'_>, DbErr> {
        let lease = async {
            let permit =
                self.permits.acquire().await.map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let connection = match idle {
                Some(connection) => connection,
                None => match &self.pool {
                    Pool::Postgres(pool) => {
                        Connection::Postgres(pool.acquire().await.map_err(acquire_error)?, Instant::now())
                    }
                    Pool::Sqlite(pool) => Connection::Sqlite(pool.acquire().await.map_err(acquire_error)?),
                },
            };
            Ok(Lease { lender: self, connection: Some(with_fresh_plans(connection).await?), _permit: permit })
        };
        tokio::time::timeout(self.acquire_timeout, lease)
            .await
            .unwrap_or(Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)))
    }
}

async fn run(mut lease: Lease<'_>, statement: &Statement) -> Result<Vec<QueryResult>, DbErr> {
    if let Some(log) = &lease.lender.log {
        log(&statement.sql);
    }
    let values = SqlxValues(statement.values.clone().unwrap_or(Values(Vec::new())));
    let rows = match lease.connection.as_mut() {
        Some(Connection::Postgres(connection, _)) => sqlx::query_with(&statement.sql, values)
            .fetch_all(&mut **connection)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect()),
        Some(Connection::Sqlite(connection)) => sqlx::query_with(&statement.sql, values)
            .fetch_all(&mut **connection)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect()),
        None => return Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
    }
    .map_err(|err| DbErr::Query(RuntimeErr::SqlxError(err)))?;
    lease.give_back();
    Ok(rows)
}

/// A PostgreSQL connection whose plans are older than [`PLAN_LIFETIME`] drops them first,
/// so that the next execution of each statement plans anew.
///
/// `DISCARD PLANS` reaches the plans PostgreSQL caches for itself too, not only those of
/// the prepared statements: an insert into `grants` checks its foreign keys on plans the
/// connection made at its first insert (generic ones, as `plan_cache_mode` asks), and kept
/// them. Made while `memberships` held a page or two, that check scanned it whole: with
/// 1,400 memberships an add cost PostgreSQL 330 µs of CPU instead of 200, more as members
/// were added (BENCHMARKS.md, Writes). An engine without `DISCARD PLANS` forgets the
/// prepared statements instead.
async fn with_fresh_plans(connection: Connection) -> Result<Connection, DbErr> {
    match connection {
        Connection::Postgres(mut connection, since) if since.elapsed() >= PLAN_LIFETIME => {
            let discarded = (&mut *connection).execute("DISCARD PLANS").await;
            match discarded {
                Ok(_) => {}
                Err(sqlx::Error::Database(err)) => {
                    tracing::debug!(error = %err, "DISCARD PLANS refused; forgetting prepared statements instead");
                    connection.clear_cached_statements().await.map_err(exec_error)?;
                }
                Err(err) => return Err(exec_error(err)),
            }
            Ok(Connection::Postgres(connection, Instant::now()))
        }
        connection => Ok(connection),
    }
}

fn exec_error(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err))
}

fn acquire_error(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Conn(RuntimeErr::SqlxError(other)),
    }
}
