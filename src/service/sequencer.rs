//! Numbering committed writes, and answering each write its revision.
//!
//! On PostgreSQL a write commits its events without revisions; then it needs a sequencing
//! transaction ([`storage::numbering::sequence`]) that started after its commit, since that one sees
//! its events and numbers them (unless another replica's got there first). Under load
//! many writes commit while one sequencing transaction runs, and one more after it
//! covers them all: so this process runs one at a time, and a write that finds that one
//! started after its own commit has finished only reads its answer. Nothing here is
//! authoritative: the revisions live in the database, and a process that ends between a
//! commit and its sequencing leaves events that the next sequencing anywhere numbers
//! (and [`Sequencer::sweep`] looks for such events every second). On SQLite each write
//! transaction numbers its own events before it commits (`storage::writes::write`), and
//! this numbers only what another process left.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use uuid::Uuid;

use crate::{
    domain::{Error, Result, Revision},
    storage::{self, DatabaseConnection, Writer},
};

#[derive(Debug)]
pub struct Sequencer {
    /// Where sequencing transactions run (the writes' connection).
    writes: Writer,
    /// Where writes look up a revision another process gave them.
    reads: DatabaseConnection,
    /// Held while this process sequences: one sequencing transaction at a time.
    turn: tokio::sync::Mutex<()>,
    /// Sequencing transactions begun by this process, counted before each begins.
    begun: AtomicU64,
    answers: Mutex<Answers>,
}

#[derive(Debug, Default)]
struct Answers {
    /// The last sequencing transaction that finished, by its number in `begun`.
    finished: u64,
    /// Writes waiting for their answer, with their revision once known.
    waiting: HashMap<Uuid, Option<Revision>>,
}

impl Sequencer {
    pub fn new(writes: Writer, reads: DatabaseConnection) -> Arc<Self> {
        Arc::new(Self {
            writes,
            reads,
            turn: tokio::sync::Mutex::new(()),
            begun: AtomicU64::new(0),
            answers: Mutex::new(Answers::default()),
        })
    }

    /// The revision of `write_id`'s last event, once it is numbered. Call once the write,
    /// which appended events, has committed.
    pub async fn revision_of(&self, write_id: Uuid) -> Result<Revision> {
        self.answers().waiting.insert(write_id, None);
        let answer = self.wait_for_sequencing(write_id).await;
        let numbered = self.answers().waiting.remove(&write_id).flatten();
        answer?;
        match numbered {
            Some(revision) => Ok(revision),
            // Numbered by another process.
            None => self.numbered(write_id).await,
        }
    }

    /// The revision of `write_id`'s last event, read from the change log: for a write
    /// whose events are numbered, by whichever sequencing.
    pub async fn numbered(&self, write_id: Uuid) -> Result<Revision> {
        storage::changes::revision_of(&self.reads, write_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("write {write_id} committed events that were not numbered")))
    }

    /// Returns once a sequencing transaction begun after this call has finished.
    async fn wait_for_sequencing(&self, write_id: Uuid) -> Result<()> {
        let committed_before = self.begun.load(Ordering::SeqCst);
        let _turn = self.turn.lock().await;
        if self.answers().finished > committed_before {
            return Ok(());
        }
        tracing::trace!(%write_id, "sequencing");
        self.sequence().await
    }

    /// One sequencing transaction; the caller holds `turn`.
    async fn sequence(&self) -> Result<()> {
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let sequenced = storage::changes::sequence_committed(&self.writes).await?;
        let mut answers = self.answers();
        for (write_id, revision) in sequenced.writes {
            if let Some(waiting) = answers.waiting.get_mut(&write_id) {
                *waiting = Some(revision);
            }
        }
        answers.finished = number;
        Ok(())
    }

    /// Numbers events left without a revision by a process that ended between a write's
    /// commit and its sequencing, every `interval`, and vacuums the queue of events every
    /// `vacuum_every`, for as long as the task runs.
    pub async fn sweep(self: Arc<Self>, probe: DatabaseConnection, interval: Duration, vacuum_every: Duration) {
        let mut vacuumed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            if let Err(err) = self.number_leftovers(&probe).await {
                tracing::warn!(error = %err, "cannot number committed changes; retrying at the next interval");
            }
            if vacuumed.elapsed() >= vacuum_every {
                vacuumed = tokio::time::Instant::now();
                if let Err(err) = storage::changes::vacuum_pending(&probe).await {
                    tracing::warn!(error = %err, "cannot vacuum the queue of changes; retrying later");
                }
            }
        }
    }

    /// Numbers events left without a revision, if there are any: looks on `probe` (one
    /// row of the queue) before it sequences. A process runs this before it
    /// serves, so that a restarted replica's feed shows what its last life committed.
    pub async fn number_leftovers(&self, probe: &DatabaseConnection) -> Result<()> {
        if storage::changes::any_unsequenced(probe).await? {
            let _turn = self.turn.lock().await;
            self.sequence().await?;
        }
        Ok(())
    }

    /// The answers hold plain values and nothing panics while they are locked, so a
    /// poisoned lock still guards whole answers.
    fn answers(&self) -> MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
