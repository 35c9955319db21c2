//! The live change feed behind WatchChanges.
//!
//! One poller per process reads the change log for revisions above the last it saw and
//! broadcasts them to this process's watchers. Polling the shared database (rather than
//! listening to this process's own writes) is what makes a change committed through
//! any replica reach the watchers of every replica. It cannot skip a change: writers
//! take their revisions under a lock held until commit, so once revision R is visible
//! every revision below R is too (see `storage::changes`).
//!
//! The broadcast buffer is bounded. A watcher that falls further behind than the buffer
//! loses its place and its stream ends with ABORTED naming the revision to resume
//! after; writers never wait for watchers.

use std::{sync::Arc, time::Duration};

use tokio::sync::{broadcast, watch};

use crate::{
    domain::{Error, Result, Revision, model::Change},
    metrics,
    storage::{self, DatabaseConnection},
};

/// Changes one poll reads at most; more are read by the next poll without waiting.
const BATCH: u64 = 1_000;

pub struct ChangeFeed {
    sender: broadcast::Sender<Arc<Change>>,
    closed: watch::Sender<bool>,
}

impl ChangeFeed {
    /// Starts the poller from the current revision, before any watcher can subscribe; it
    /// runs until [`ChangeFeed::close`].
    pub async fn start(db: DatabaseConnection, poll_interval: Duration, capacity: usize) -> Result<Arc<Self>> {
        let from = storage::changes::current_revision(&db).await?;
        let (sender, _) = broadcast::channel(capacity);
        let (closed, _) = watch::channel(false);
        let feed = Arc::new(Self { sender, closed });
        tokio::spawn(poll(db, poll_interval, feed.clone(), from));
        Ok(feed)
    }

    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Change>>, watch::Receiver<bool>) {
        (self.sender.subscribe(), self.closed.subscribe())
    }

    /// Stops the poller and ends every watcher's stream.
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

async fn poll(db: DatabaseConnection, interval: Duration, feed: Arc<ChangeFeed>, mut last: Revision) {
    let mut closed = feed.closed.subscribe();
    loop {
        match poll_once(&db, &feed, last).await {
            Ok(seen) => {
                if let Some(metrics) = metrics::global() {
                    metrics.set_latest_revision(seen);
                }
                last = seen;
            }
            Err(err) => tracing::warn!(error = %err, "change feed cannot read the change log"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = closed.changed() => return,
        }
    }
}

/// Broadcasts what committed after `last` and answers the new high-water mark. While
/// nobody watches it reads only the revision counter (reading every change cost about 7%
/// of grantd's CPU under 1,000-permission SQLite adds). That skips no change a watcher
/// needs: the counter is read before looking for watchers, so one that subscribes after
/// the look replays from the database up to at least that revision (see
/// `audit::stream_changes`), and the next poll broadcasts what comes after it.
async fn poll_once(db: &DatabaseConnection, feed: &ChangeFeed, mut last: Revision) -> Result<Revision> {
    let latest = storage::changes::current_revision(db).await?;
    if feed.sender.receiver_count() == 0 {
        return Ok(latest);
    }
    loop {
        let changes = storage::changes::list(db, last, None, BATCH).await?;
        let complete = (changes.len() as u64) < BATCH;
        for change in changes {
            last = change.revision;
            // An error only means every watcher left since the look above.
            let _ = feed.sender.send(Arc::new(change));
        }
        if complete {
            return Ok(last);
        }
    }
}

/// Why a watch ended early, for the client.
pub fn fell_behind(last_sent: Revision) -> Error {
    Error::WatchInterrupted {
        lagging: true,
        message: format!("the watcher fell behind the writers; watch again with after_revision = {last_sent}"),
    }
}

pub fn shutting_down(last_sent: Revision) -> Error {
    Error::WatchInterrupted {
        lagging: false,
        message: format!("the server is shutting down; watch again with after_revision = {last_sent}"),
    }
}
