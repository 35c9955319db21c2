//! The write-transaction loop.
//!
//! sea-orm's `transaction()` runs its closure once, so retrying a PostgreSQL
//! serialization failure or deadlock needs our own begin/commit loop around a closure
//! that can run again. Any other error, and every error after the last attempt, rolls
//! back (by dropping the transaction) and is returned.

use std::{future::Future, pin::Pin, time::Duration};

use rand::Rng;
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    IsolationLevel, TransactionTrait,
    sea_query::{Expr, Query},
};

use super::{connect::pool_limits, entities::revision_counter, error::is_broken_connection};
use crate::domain::{Error, Result};

const MAX_ATTEMPTS: u32 = 5;
const BASE_BACKOFF: Duration = Duration::from_millis(5);

pub type TxFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// Runs `body` in a write transaction of its own on `db`, retrying conflicts with
/// jittered exponential backoff; after `MAX_ATTEMPTS` conflicts the answer is
/// [`Error::Aborted`]. Writes begin through `writes::write`, which chooses this or a
/// shared transaction.
pub(super) async fn alone<T, F>(db: &DatabaseConnection, body: F) -> Result<T>
where
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T>,
{
    retry(db, || attempt_once(db, &body)).await
}

/// Runs `statement`, a transaction by itself (no BEGIN around it), retried as [`write`]
/// retries: conflicts with backoff, an unavailable database (a pooled connection the
/// server closed, say) at once, up to `MAX_ATTEMPTS` in all. Only for statements that
/// are safe to repeat.
pub async fn statement<T, S, Fut>(db: &DatabaseConnection, statement: S) -> Result<T>
where
    S: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempt = || async {
        statement().await.map_err(|err| match err {
            Error::Unavailable(_) => Failure::Begin(err),
            err => Failure::Body(err),
        })
    };
    retry(db, attempt).await
}

pub(super) async fn retry<T, A, Fut>(db: &DatabaseConnection, attempt_once: A) -> Result<T>
where
    A: Fn() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut attempt = 1;
    // After the server ended every session, each pooled connection fails its BEGIN once.
    let mut broken_left = pool_limits(db).0;
    loop {
        match attempt_once().await {
            Ok(value) => return Ok(value),
            Err(Failure::BrokenConnection(err)) if broken_left > 0 => {
                // Nothing was sent for the request yet, so another attempt is safe; sqlx drops the broken
                // connection. Pooled connections are not pinged before use, so one the
                // server has closed fails here. Not an attempt: the next connection may be
                // as old, and a new one is opened once they are gone.
                broken_left -= 1;
                tracing::debug!(broken_left, error = %err, "a pooled connection was broken, retrying");
                continue;
            }
            Err(Failure::Begin(Error::Unavailable(detail))) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, %detail, "could not begin a transaction, retrying");
            }
            Err(Failure::Begin(err) | Failure::BrokenConnection(err)) => return Err(err),
            Err(Failure::Body(Error::Conflict)) if attempt < MAX_ATTEMPTS => {
                let ceiling = BASE_BACKOFF * 2u32.pow(attempt - 1);
                let pause = rand::rng().random_range(Duration::ZERO..=ceiling);
                tracing::debug!(attempt, ?pause, "transaction conflict, retrying");
                tokio::time::sleep(pause).await;
            }
            Err(Failure::Body(Error::Conflict)) => return Err(Error::Aborted { attempts: attempt }),
            Err(Failure::Body(err)) => return Err(err),
        }
        attempt += 1;
    }
}

/// Where an attempt failed: at BEGIN on a connection that turned out broken, at BEGIN
/// otherwise (no connection to be had), or once the transaction had started.
pub(super) enum Failure {
    BrokenConnection(Error),
    Begin(Error),
    Body(Error),
}

pub(super) fn begin_failure(err: DbErr) -> Failure {
    if is_broken_connection(&err) { Failure::BrokenConnection(err.into()) } else { Failure::Begin(err.into()) }
}

async fn attempt_once<T, F>(db: &DatabaseConnection, body: &F) -> Result<T, Failure>
where
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T>,
{
    let tx = db.begin().await.map_err(begin_failure)?;
    let run = async {
        lock_for_writing(&tx).await?;
        let value = body(&tx).await?;
        tx.commit().await?;
        Ok(value)
    };
    run.await.map_err(Failure::Body)
}

pub(super) async fn lock_for_writing(tx: &DatabaseTransaction) -> Result<()> {
    if tx.get_database_backend() == DatabaseBackend::Sqlite {
        // The first statement writes, so the transaction takes SQLite's write lock at
        // once (waiting out the busy timeout) instead of failing with BUSY when a read
        // transaction later tries to upgrade: the effect of BEGIN IMMEDIATE.
        let touch = Query::update()
            .table(revision_counter::Entity)
            .value(revision_counter::Column::Value, Expr::col(revision_counter::Column::Value))
            .and_where(revision_counter::Column::Id.eq(1))
            .to_owned();
        tx.execute(tx.get_database_backend().build(&touch)).await?;
    }
    Ok(())
}

/// A read-only transaction whose reads all see one snapshot: REPEATABLE READ on
/// PostgreSQL; on SQLite (WAL) a read transaction keeps the snapshot of its first read.
pub async fn snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let tx = match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await?
        }
        _ => db.begin().await?,
    };
    Ok(tx)
}
