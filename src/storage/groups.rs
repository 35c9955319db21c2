//! SQLite's writes, several to a transaction.
//!
//! SQLite lets one transaction write at a time, and a process's writes already take
//! turns on its one writer connection (`connect::writer_connection`). A turn costs its
//! statements and its commit, which appends every page the transaction changed (a few
//! per index of every table it wrote) to the WAL: a one-grant add paid for a dozen. Here
//! the writes that arrive while a transaction runs wait for the next one and share it, and each
//! learns its answer only once the shared transaction has committed. Each statement is a
//! hand-off to SQLite's connection thread and back, which is most of what a write costs,
//! so a group first runs its writes one after another straight in the transaction. Writes
//! rarely fail; when one does, that attempt is rolled back whole and the group runs again
//! with each write in a savepoint of its own (two statements more per write), so that a
//! failed write rolls back its savepoint alone and still happens not at all, and the
//! others whole. A conflict or a failed commit runs or fails the whole group again, as
//! `tx::retry` retries a transaction of one write.
//!
//! Each shared transaction numbers what its writes appended (and whatever else waits in
//! the queue) just before it commits (`numbering::sequence`): it holds SQLite's write
//! lock anyway, so nothing commits between the numbering and its own commit, and each
//! write learns its revision with its answer instead of waiting for a sequencing of its own.

use std::{
    mem,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{
    numbering::{self, Sequenced},
    tx::{self, Failure, TxFuture},
};
use crate::domain::{Error, Result};

/// The most writes one transaction takes: enough that a group's commit is a small part
/// of its cost, few enough that the first write of a group does not wait long for the
/// last one.
const MOST_PER_GROUP: usize = 64;

/// The writes waiting for the next shared transaction, and whether a task runs groups.
#[derive(Default)]
pub(super) struct Groups {
    waiting: Mutex<Waiting>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").field("waiting", &self.waiting().jobs.len()).finish()
    }
}

#[derive(Default)]
struct Waiting {
    jobs: Vec<Job>,
    running: bool,
}

/// One write of a group: `run` does its work in the group's transaction (see
/// [`Isolation`]), keeping its outcome; `answer` tells its caller, once the group ended,
/// with what the group numbered.
struct Job {
    run: Box<Run>,
    answer: Box<dyn FnOnce(Result<Arc<Sequenced>>) + Send + Sync>,
}

/// A write's value and what its transaction numbered, once the transaction has ended.
type Answer<T> = Result<(T, Arc<Sequenced>)>;

/// Runs a write, keeping its outcome; answers whether it succeeded.
type Run = dyn for<'c> Fn(&'c DatabaseTransaction, Isolation) -> TxFuture<'c, bool> + Send + Sync;

/// How the writes of a group's transaction are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// Not at all: a write that fails ends the attempt, rolled back whole.
    Together,
    /// Each write in a savepoint, which a write that fails rolls back alone.
    Savepoints,
}

impl Groups {
    /// Runs `body` in the next transaction on `db`, beside the other writes waiting then;
    /// answers its value and what the transaction numbered.
    pub(super) async fn write<T, F>(self: &Arc<Self>, db: &DatabaseConnection, body: F) -> Answer<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T> + Send + Sync + 'static,
    {
        let (job, answer) = job(body);
        let start_runner = {
            let mut waiting = self.waiting();
            waiting.jobs.push(job);
            !mem::replace(&mut waiting.running, true)
        };
        if start_runner {
            tokio::spawn(Arc::clone(self).run_groups(db.clone()));
        }
        answer.await.map_err(|_| Error::Internal("a write's group ended without an answer".into()))?
    }

    /// Runs groups until no write waits.
    async fn run_groups(self: Arc<Self>, db: DatabaseConnection) {
        while let Some(jobs) = self.next_group() {
            let mut ended = tx::retry(&db, || attempt(&db, &jobs, Isolation::Together)).await;
            if let Ok(None) = ended {
                ended = tx::retry(&db, || attempt(&db, &jobs, Isolation::Savepoints)).await;
            }
            let ended = ended.and_then(|numbered| {
                numbered.ok_or_else(|| Error::Internal("a group failed with each write in a savepoint".into()))
            });
            for job in jobs {
                (job.answer)(ended.clone());
            }
        }
    }

    fn next_group(&self) -> Option<Vec<Job>> {
        let mut waiting = self.waiting();
        if waiting.jobs.is_empty() {
            waiting.running = false;
            return None;
        }
        let taken = waiting.jobs.len().min(MOST_PER_GROUP);
        Some(waiting.jobs.drain(..taken).collect())
    }

    /// Jobs are plain values and nothing panics while they are locked.
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One attempt at a group: one write transaction, numbered at its end. None when a write
/// failed with the writes [`Isolation::Together`]: then nothing was committed.
async fn attempt(
    db: &DatabaseConnection,
    jobs: &[Job],
    isolation: Isolation,
) -> Result<Option<Arc<Sequenced>>, Failure> {
    let tx = db.begin().await.map_err(tx::begin_failure)?;
    let run = async {
        tx::lock_for_writing(&tx).await?;
        for job in jobs {
            let succeeded = (job.run)(&tx, isolation).await?;
            if !succeeded && isolation == Isolation::Together {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
        }
        let numbered = numbering::sequence(&tx).await?;
        tx.commit().await?;
        Ok(Some(Arc::new(numbered)))
    };
    run.await.map_err(Failure::Body)
}

/// `body` as a job, and where its answer arrives.
fn job<T, F>(body: F) -> (Job, oneshot::Receiver<Answer<T>>)
where
    T: Send + 'static,
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T> + Send + Sync + 'static,
{
    let (sender, receiver) = oneshot::channel();
    let outcome: Arc<Mutex<Option<Result<T>>>> = Arc::default();
    let kept = Arc::clone(&outcome);
    let body = Arc::new(body);
    // The group's task runs it: what it logs belongs to the request that wrote it.
    let span = tracing::Span::current();
    let run = for_each_transaction(move |tx, isolation| {
        let (body, kept) = (Arc::clone(&body), Arc::clone(&kept));
        Box::pin(
            async move {
                let result = match isolation {
                    Isolation::Together => match body(tx).await {
                        Err(Error::Conflict) => return Err(Error::Conflict),
                        result => result,
                    },
                    Isolation::Savepoints => in_savepoint(tx, &*body).await?,
                };
                let succeeded = result.is_ok();
                *kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                Ok(succeeded)
            }
            .instrument(span.clone()),
        )
    });
    let answer = move |ended: Result<Arc<Sequenced>>| {
        let result = ended.and_then(|numbered| {
            let value = outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| Err(Error::Internal("a write's group committed without running it".into())))?;
            Ok((value, numbered))
        });
        // The caller may have gone; its write's outcome stands.
        let _ = sender.send(result);
    };
    (Job { run: Box::new(run), answer: Box::new(answer) }, receiver)
}

/// Tells the compiler that `run` takes a transaction of any lifetime.
fn for_each_transaction<F>(run: F) -> F
where
    F: for<'c> Fn(&'c DatabaseTransaction, Isolation) -> TxFuture<'c, bool>,
{
    run
}

/// The write's own outcome, its savepoint released or rolled back; an error when the
/// group cannot go on (the savepoint failed, or a conflict that the group retries).
async fn in_savepoint<T, F>(tx: &DatabaseTransaction, body: &F) -> Result<Result<T>>
where
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxFuture<'c, T>,
{
    let savepoint = tx.begin().await?;
    match body(&savepoint).await {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(Ok(value))
        }
        Err(Error::Conflict) => Err(Error::Conflict),
        Err(err) => {
            savepoint.rollback().await?;
            Ok(Err(err))
        }
    }
}
