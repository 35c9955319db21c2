//! Opening the database and migrating it.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr, SqlxSqliteConnector,
    Statement, TransactionTrait,
};
use sqlx::sqlite::{SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Arbitrary, but fixed: every grantd replica takes this advisory lock to migrate.
const MIGRATION_LOCK_KEY: i64 = 0x6772_616e_7464; // "grantd"

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// How long a SQLite writer waits for the write lock.
    pub sqlite_busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects to `url` (`sqlite://...` or `postgres://...`). SQLite gets WAL mode, a busy
/// timeout, NORMAL synchronous (durable in WAL mode except on power loss), foreign keys,
/// and no automatic checkpoints: [`checkpoint_sqlite_wal`] runs them in the background.
pub async fn connect(url: &str, pool: &PoolOptions) -> Result<DatabaseConnection, DbErr> {
    let busy_timeout = pool.sqlite_busy_timeout;
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(pool.max_connections)
        .min_connections(1)
        .acquire_timeout(pool.acquire_timeout)
        .connect_timeout(pool.acquire_timeout)
        .sqlx_logging(false)
        // sqlx would otherwise ping every connection it hands out: one more round trip
        // per statement outside a transaction. A connection the server dropped fails its
        // next statement instead, which writes retry (see `tx::retry`).
        .test_before_acquire(false)
        .map_sqlx_sqlite_opts(move |sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
                // An automatic checkpoint runs inside the commit that crosses 1,000 WAL
                // pages, fsyncs included, which large adds would pay for; a background
                // task checkpoints instead.
                .pragma("wal_autocheckpoint", "0")
                // The WAL file keeps its largest size unless told.
                .pragma("journal_size_limit", "67108864")
                // Statement journals (a multi-row write inside a transaction keeps one
                // so it can undo itself alone) in memory instead of in a temporary file:
                // large adds spent much of their time writing that file.
                // Their size is that of the pages one statement changes, freed after it.
                .pragma("temp_store", "memory")
        });
    Database::connect(options).await
}

/// The page cache of SQLite's writer connection, in KiB (SQLite's default is 2,000): a
/// 1,000-permission add changes about a thousand pages of `grants.permission_id`'s index
/// in a grown file, which a cache this size holds from one add to the next; a larger one
/// only held more memory.
const SQLITE_WRITER_CACHE_KIB: u32 = 8 * 1024;

/// Where write transactions begin: on PostgreSQL, `db` itself; on SQLite, one connection
/// of its own, opened as `db`'s are but with a bigger page cache, and kept. In WAL mode a
/// connection drops its whole page cache when another connection committed since its last
/// transaction, so writes spread over the pool began on a cold cache and read again every
/// page they touched; the one connection that writes keeps its cache from write to write.
pub(super) async fn writer_connection(db: &DatabaseConnection) -> Result<DatabaseConnection, DbErr> {
    if db.get_database_backend() != DatabaseBackend::Sqlite {
        return Ok(db.clone());
    }
    let pool = db.get_sqlite_connection_pool();
    let options = (*pool.connect_options()).clone().pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}"));
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .map_err(|err| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(err)))?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(writer))
}

/// The size of `db`'s pool and how long a request waits for one of its connections;
/// nothing for a connection without a pool.
pub(super) fn pool_limits(db: &DatabaseConnection) -> (u32, Duration) {
    match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            let options = db.get_postgres_connection_pool().options();
            (options.get_max_connections(), options.get_acquire_timeout())
        }
        DatabaseBackend::Sqlite => {
            let options = db.get_sqlite_connection_pool().options();
            (options.get_max_connections(), options.get_acquire_timeout())
        }
        _ => (0, Duration::ZERO),
    }
}

/// Moves what the SQLite WAL holds into the database file every `interval`, until the
/// task is dropped; does nothing on PostgreSQL. A first PASSIVE pass copies pages while
/// writers go on; a second, on the writer connection (see [`writer_connection`]), so that no writer
/// of this process runs meanwhile, copies what they added, so the checkpoint is complete
/// and the next writer starts the WAL over instead of growing it. When the last
/// connection closes, SQLite checkpoints what is left.
pub async fn checkpoint_sqlite_wal(db: DatabaseConnection, writes: DatabaseConnection, interval: Duration) {
    if db.get_database_backend() != DatabaseBackend::Sqlite {
        return;
    }
    let passive = || Statement::from_string(DatabaseBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
    loop {
        tokio::time::sleep(interval).await;
        let checkpoint = async {
            db.execute(passive()).await?;
            writes.execute(passive()).await
        };
        if let Err(err) = checkpoint.await {
            tracing::warn!(error = %err, "SQLite WAL checkpoint failed; retrying at the next interval");
        }
    }
}

/// Applies every pending migration, all in one transaction (both databases' DDL is
/// transactional: a migration that fails leaves nothing half done). On PostgreSQL it holds
/// an advisory lock, so replicas starting together migrate once and the others wait.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    lock_for_migration(&tx).await?;
    Migrator::up(&tx, None).await?;
    tx.commit().await
}

/// Reverts the latest `steps` migrations (all when `None`), as [`migrate_up`] applies them.
pub async fn migrate_down(db: &DatabaseConnection, steps: Option<u32>) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    lock_for_migration(&tx).await?;
    Migrator::down(&tx, steps).await?;
    tx.commit().await
}

/// Every known migration and whether it is applied.
pub async fn migrate_status(db: &DatabaseConnection) -> Result<Vec<(String, bool)>, DbErr> {
    let migrations = Migrator::get_migration_with_status(db).await?;
    Ok(migrations.iter().map(|m| (m.name().to_owned(), m.status() == migration::MigrationStatus::Applied)).collect())
}

async fn lock_for_migration(tx: &impl ConnectionTrait) -> Result<(), DbErr> {
    if tx.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    tx.execute(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [MIGRATION_LOCK_KEY.into()],
    ))
    .await
    .map(drop)
}
