//! Where write transactions begin, and how: on PostgreSQL each write in a transaction of
//! its own, many at once; on SQLite, whose writes of one process take turns on one
//! connection anyway, the writes that arrive together share one (see `groups`).

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};

use super::{
    connect,
    groups::Groups,
    numbering::Sequenced,
    tx::{self, TxFuture},
};
use crate::domain::Result;

/// Where write transactions begin.
#[derive(Debug, Clone)]
pub struct Writer {
    db: DatabaseConnection,
    /// SQLite's: the writes waiting to share the next transaction.
    groups: Option<Arc<Groups>>,
}

impl Writer {
    /// The connection writes begin on.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The same, to tell it what to log (see `storage::log_statements`).
    pub fn connection_mut(&mut self) -> &mut DatabaseConnection {
        &mut self.db
    }
}

/// The writer of the database `db` is connected to (see `connect::writer_connection`).
pub async fn writer(db: &DatabaseConnection) -> Result<Writer, DbErr> {
    let db = connect::writer_connection(db).await?;
    let groups = (db.get_database_backend() == DatabaseBackend::Sqlite).then(Arc::default);
    Ok(Writer { db, groups })
}

/// Runs `body` in a write transaction, retrying conflicts with jittered exponential
/// backoff; after the last attempt the answer is `Error::Aborted`. On SQLite the
/// transaction may hold other writes beside it (see `groups`); either way `body` happens
/// whole or not at all, and its value is answered once the transaction has committed.
/// On SQLite the transaction numbers the events waiting before it commits, and answers
/// what it numbered beside the value (see `groups`); on PostgreSQL it numbers nothing,
/// and `changes::sequence_committed` does, after the commit.
pub async fn write<T, F>(writer: &Writer, body: F) -> Result<(T, Option<Arc<Sequenced>>)>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T> + Send + Sync + 'static,
{
    match &writer.groups {
        Some(groups) => groups.write(&writer.db, body).await.map(|(value, numbered)| (value, Some(numbered))),
        None => tx::alone(&writer.db, body).await.map(|value| (value, None)),
    }
}

/// A write transaction for the caller to run and end, locked for writing as every write
/// transaction is (a dry run's, which is rolled back). It shares nothing: on SQLite the
/// other writes wait until it ends.
pub async fn begin_write(writer: &Writer) -> Result<DatabaseTransaction> {
    let tx = writer.db.begin().await?;
    tx::lock_for_writing(&tx).await?;
    Ok(tx)
}
