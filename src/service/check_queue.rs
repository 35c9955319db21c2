//! Checks that arrive while the database is busy with earlier ones go together, in one
//! statement.
//!
//! Under a check load most of a check's cost is per statement, not per row: in grantd
//! the trip through sqlx and the kernel's loopback send and wakeup, in PostgreSQL the
//! bind and executor start-up. Nothing waits on purpose: a check that finds the
//! queue empty and no statement in flight is read at once, alone, in the caller's own
//! task, so an idle server answers as fast as it would without a queue. A check that
//! finds a statement in flight queues, and when that statement ends, the queue (up to
//! [`MAX_BATCH`] checks) goes in the next one. The busier the server, the more each
//! statement carries. Another statement runs alongside once [`MIN_BATCH_ALONGSIDE`]
//! checks wait: then PostgreSQL works on two statements at once, on both cores.
//! Before it takes the queue, a lane yields once to the runtime: requests already
//! received but not yet run (their tasks ready) queue their checks first and ride in the
//! same statement, instead of waiting for the next one. That is no timer: with nothing
//! else ready, the lane runs again at once.
//! Every check is still read from a snapshot taken after it arrived: the statement that
//! answers it starts after it was queued.
//!
//! Queued checks are read by a task of their own, so a caller that goes away (a
//! cancelled RPC) takes only its own answer with it, never a statement others wait on.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{
    domain::{Error, Result},
    metrics,
    storage::{
        DatabaseConnection,
        checks::{self, Check, CheckRead},
    },
};

/// Most checks one statement carries: past a few dozen the statement's fixed cost is
/// already small beside its rows, and a bigger batch only makes its first check wait.
const MAX_BATCH: usize = 64;

/// Fewest waiting checks that start a statement beside those in flight: a second
/// statement is worth its own fixed cost only once it carries enough checks (bigger
/// statements mean fewer statements, wakeups and writes); smaller thresholds answered
/// fewer checks per second for more CPU, larger ones no more.
const MIN_BATCH_ALONGSIDE: usize = 16;

#[derive(Clone)]
pub struct CheckQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CheckQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckQueue")
            .field("reads", &self.shared.reads)
            .field("free_lanes", &self.shared.lanes.available_permits())
            .finish_non_exhaustive()
    }
}

struct Shared {
    reads: DatabaseConnection,
    waiting: Mutex<Vec<Waiting>>,
    /// One permit per statement that may be in flight: `capacity` in all.
    lanes: Arc<Semaphore>,
    capacity: usize,
}

struct Waiting {
    check: Check,
    answer: oneshot::Sender<Result<CheckRead>>,
}

impl CheckQueue {
    /// At most [`checks::statements_at_once`] statements in flight on `reads`.
    pub fn new(reads: DatabaseConnection) -> Self {
        let capacity = checks::statements_at_once(&reads);
        let lanes = Arc::new(Semaphore::new(capacity));
        let shared = Shared { reads, waiting: Mutex::new(Vec::new()), lanes, capacity };
        Self { shared: Arc::new(shared) }
    }

    pub async fn check(&self, check: Check) -> Result<CheckRead> {
        if let Some(lane) = Shared::lane_at_rest(&self.shared) {
            let read = self.shared.read(std::slice::from_ref(&check)).await;
            drop(lane);
            return read?.pop().ok_or_else(|| Error::Internal("a check got no answer".into()));
        }
        let (answer, answered) = oneshot::channel();
        let waiting = {
            let mut waiting = self.shared.waiting();
            waiting.push(Waiting { check, answer });
            waiting.len()
        };
        Shared::start_lane(&self.shared, waiting);
        answered
            .await
            .map_err(|_| Error::Internal("the statement reading a check ended without answering it".into()))?
    }
}

/// The right to have one statement in flight. Dropped, it hands the checks that queued
/// meanwhile to a new lane, so none is left waiting with no statement to come.
struct Lane {
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        drop(self.permit.take());
        // Looked at after the release: a check queued before it saw this lane busy and
        // started none.
        let waiting = self.shared.waiting().len();
        if waiting > 0 {
            Shared::start_lane(&self.shared, waiting);
        }
    }
}

impl Lane {
    async fn drain(self) {
        loop {
            tokio::task::yield_now().await;
            let batch = self.shared.take_batch();
            if batch.is_empty() {
                return;
            }
            self.shared.answer(batch).await;
        }
    }
}

impl Shared {
    /// The queue holds plain values and nothing panics while it is locked, so a poisoned
    /// lock still guards a whole queue.
    fn waiting(&self) -> MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn busy_lanes(&self) -> usize {
        self.capacity - self.lanes.available_permits()
    }

    /// A lane for the caller itself, when nothing waits and no statement is in flight.
    fn lane_at_rest(shared: &Arc<Self>) -> Option<Lane> {
        let waiting = shared.waiting();
        if !waiting.is_empty() || shared.busy_lanes() > 0 {
            return None;
        }
        let permit = Arc::clone(&shared.lanes).try_acquire_owned().ok()?;
        drop(waiting);
        Some(Lane { shared: Arc::clone(shared), permit: Some(permit) })
    }

    /// Starts a task reading the queue when no statement is in flight, or when enough
    /// checks wait beside the ones in flight.
    fn start_lane(shared: &Arc<Self>, waiting: usize) {
        if shared.busy_lanes() > 0 && waiting < MIN_BATCH_ALONGSIDE {
            return;
        }
        // Without a runtime (it is shutting down) there is nothing to read on.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if let Ok(permit) = Arc::clone(&shared.lanes).try_acquire_owned() {
            runtime.spawn(Lane { shared: Arc::clone(shared), permit: Some(permit) }.drain());
        }
    }

    async fn read(&self, wanted: &[Check]) -> Result<Vec<CheckRead>> {
        if let Some(metrics) = metrics::global() {
            metrics.checks_read_together(wanted.len());
        }
        checks::read(&self.reads, wanted).await
    }

    /// The oldest waiting checks whose callers still wait.
    fn take_batch(&self) -> Vec<Waiting> {
        let mut waiting = self.waiting();
        waiting.retain(|check| !check.answer.is_closed());
        let taken = waiting.len().min(MAX_BATCH);
        waiting.drain(..taken).collect()
    }

    async fn answer(&self, batch: Vec<Waiting>) {
        let (wanted, answers): (Vec<Check>, Vec<_>) = batch.into_iter().map(|w| (w.check, w.answer)).unzip();
        // A caller that has gone away no longer needs its answer: `send` failing is fine.
        match self.read(&wanted).await {
            Ok(reads) => {
                for (answer, read) in answers.into_iter().zip(reads) {
                    let _ = answer.send(Ok(read));
                }
            }
            Err(err) => {
                for answer in answers {
                    let _ = answer.send(Err(err.clone()));
                }
            }
        }
    }
}
