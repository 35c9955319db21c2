//! Persistence: sea-orm entities and set-based queries over SQLite or PostgreSQL.
//!
//! Query functions take any [`ConnectionTrait`] and never begin or commit: a use-case
//! opens one transaction with [`writes::write`] (on SQLite part of a transaction it may
//! share, see `groups`) and composes them inside it; its events are numbered
//! (`numbering`) after it commits on PostgreSQL, before its shared transaction commits on
//! SQLite. sea-orm types stay in this module; callers see `domain` types.

pub mod additions;
pub mod changes;
pub mod checks;
mod connect;
mod entities;
mod error;
pub mod grants;
mod groups;
mod lock;
pub mod memberships;
pub mod numbering;
pub mod organizations;
pub mod permissions;
pub mod revocations;
pub mod tx;
pub mod writes;

pub use connect::{PoolOptions, checkpoint_sqlite_wal, connect, migrate_down, migrate_status, migrate_up};
pub use lock::Lock;
pub use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
pub use writes::{Writer, writer};

/// Told the text of each statement sent (see [`log_statements`]).
pub type StatementLog = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Tells `log` the text of every statement `db` sends from now on.
pub fn log_statements(db: &mut DatabaseConnection, log: &StatementLog) {
    let log = std::sync::Arc::clone(log);
    db.set_metric_callback(move |info| log(&info.statement.sql));
}

/// Gathers the planner's statistics of the tables an import fills, as PostgreSQL's and
/// SQLite's manuals advise after loading much data: until autovacuum gets to them (never,
/// where it is off), plans made for the empty tables would scan the loaded ones.
pub async fn analyze_loaded_tables(conn: &impl ConnectionTrait) -> crate::domain::Result<()> {
    let sql = match conn.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "ANALYZE organizations, permissions, memberships, grants",
        _ => "ANALYZE",
    };
    conn.execute_unprepared(sql).await?;
    Ok(())
}

/// Whether `url` names an in-memory SQLite database, which lives as long as the pool
/// that opened it and is seen by that pool's connections only.
pub fn is_in_memory(url: &str) -> bool {
    url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory"))
}

/// A list as one SQLite parameter, for `json_each`: the statement text stays the same
/// whatever the list's length, and no list meets SQLite's parameter limit.
fn json_array<T: serde::Serialize>(items: &[T]) -> crate::domain::Result<String> {
    serde_json::to_string(items).map_err(|err| crate::domain::Error::Internal(format!("encoding a list: {err}")))
}

/// `INSERT ... ON CONFLICT (key) DO NOTHING RETURNING ...` of many rows in one statement:
/// `rows` selects them from arrays (PostgreSQL, `UNNEST`) or one JSON parameter (SQLite,
/// `json_each`), with their values, so the text is the same whatever their number.
fn insert_missing(
    backend: sea_orm::DatabaseBackend,
    into: &str,
    (rows, values): (&str, Vec<sea_orm::Value>),
    key: &str,
    returning: &str,
) -> sea_orm::Statement {
    // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
    let sql = format!("INSERT INTO {into} {rows} WHERE true ON CONFLICT ({key}) DO NOTHING RETURNING {returning}");
    sea_orm::Statement::from_sql_and_values(backend, sql, values)
}

/// A timestamp inside a SQLite JSON parameter, written as sqlx binds one, so that rows
/// inserted from JSON read back like any other.
fn sqlite_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Ids as one SQLite JSON array of 32-hex-digit strings, which `unhex` turns back into
/// the 16-byte blobs sea-orm stores.
fn json_ids(ids: &[uuid::Uuid]) -> crate::domain::Result<String> {
    json_array(&ids.iter().map(|id| id.simple().to_string()).collect::<Vec<_>>())
}
