//! The live change feed behind WatchChanges.
//!
//! One poller per process reads the change log for revisions above the last it saw and
//! broadcasts them to this process's watchers. Polling the shared database (rather than
//! listening to this process's own writes) is what makes a change committed through
//! any replica reach the watchers of every replica. It cannot skip a change: writers
//! take their revisions under a lock held until commit, so once revision R is visible
//! every revision below R is too (see `storage::changes`).
//!
//! While nobody watches, the poller sleeps until a watcher subscribes instead of waking
//! on a timer: a periodic wakeup costs a single client's writes, and an idle replica has
//! nothing to broadcast.
//!
//! The broadcast buffer is bounded. A watcher that falls further behind than the buffer
//! loses its place and its stream ends with ABORTED naming the revision to resume
//! after; writers never wait for watchers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Notify, broadcast, watch};

use crate::{
    domain::{Result, Revision, model::Change},
    metrics,
    storage::{self, DatabaseConnection},
};

/// Changes one poll reads at most; more are read by the next poll without waiting.
const BATCH: u64 = 1_000;

pub struct ChangeFeed {
    db: DatabaseConnection,
    sender: broadcast::Sender<Arc<Change>>,
    closed: watch::Sender<bool>,
    /// The lowest committed revision read by a watcher that subscribed since the poller
    /// last looked: a poller that slept from an older revision resumes from it.
    resume_from: Mutex<Option<Revision>>,
    subscribed: Notify,
}

impl ChangeFeed {
    /// Starts the poller from the current revision, before any watcher can subscribe; it
    /// runs until [`ChangeFeed::close`].
    pub async fn start(db: DatabaseConnection, poll_interval: Duration, capacity: usize) -> Result<Arc<Self>> {
        let from = storage::numbering::current_revision(&db).await?;
        let (sender, _) = broadcast::channel(capacity);
        let (closed, _) = watch::channel(false);
        let feed = Arc::new(Self { db, sender, closed, resume_from: Mutex::new(None), subscribed: Notify::new() });
        tokio::spawn(poll(poll_interval, feed.clone(), from));
        Ok(feed)
    }

    /// Subscribes a watcher, which must then replay the change log from the database:
    /// the feed broadcasts every change after the committed revision read here, which
    /// that replay, started after this returns, reaches.
    pub async fn subscribe(&self) -> Result<(broadcast::Receiver<Arc<Change>>, watch::Receiver<bool>)> {
        let live = self.sender.subscribe();
        let committed = storage::numbering::current_revision(&self.db).await?;
        if let Ok(mut resume_from) = self.resume_from.lock() {
            *resume_from = Some(resume_from.map_or(committed, |earlier| earlier.min(committed)));
        }
        self.subscribed.notify_one();
        Ok((live, self.closed.subscribe()))
    }

    /// Stops the poller and ends every watcher's stream.
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

async fn poll(interval: Duration, feed: Arc<ChangeFeed>, mut last: Revision) {
    let mut closed = feed.closed.subscribe();
    loop {
        let watched = match poll_once(&feed, last).await {
            Ok(Polled { seen, watched }) => {
                if let Some(metrics) = metrics::global() {
                    metrics.set_latest_revision(seen);
                }
                last = seen;
                watched
            }
            Err(err) => {
                tracing::warn!(error = %err, "change feed cannot read the change log");
                true
            }
        };
        let next_poll = async {
            if watched {
                tokio::time::sleep(interval).await;
            } else {
                feed.subscribed.notified().await;
            }
        };
        tokio::select! {
            () = next_poll => {}
            _ = closed.changed() => return,
        }
        // Waking from sleep, the poller skips to the lowest revision the new watchers read:
        // their replays deliver what comes before it, and broadcasting that too (all that
        // committed while nobody watched) would overflow the buffer they must keep up with.
        // Nobody else can need it: whoever watched before the last look has left. While
        // others watch, they need every change, so the poller skips nothing.
        let resume_from = feed.resume_from.lock().ok().and_then(|mut resume_from| resume_from.take());
        if let (false, Some(from)) = (watched, resume_from) {
            last = last.max(from);
        }
    }
}

struct Polled {
    /// The revision every change up to which has been broadcast or needs no broadcast.
    seen: Revision,
    /// Whether anyone was watching when the poll looked.
    watched: bool,
}

/// Broadcasts what committed after `last`. While nobody watches it reads only the
/// revision counter (reading every change would cost CPU under large adds for nobody).
/// That skips no change a watcher needs: the counter is
/// read before looking for watchers, so one that subscribes after the look replays from
/// the database up to at least that revision (see `audit::stream_changes`), and the next
/// poll broadcasts what comes after it.
async fn poll_once(feed: &ChangeFeed, mut last: Revision) -> Result<Polled> {
    let latest = storage::numbering::current_revision(&feed.db).await?;
    if feed.sender.receiver_count() == 0 {
        return Ok(Polled { seen: latest, watched: false });
    }
    loop {
        let changes = storage::changes::list(&feed.db, last, None, BATCH).await?;
        let complete = (changes.len() as u64) < BATCH;
        for change in changes {
            last = change.revision;
            // An error only means every watcher left since the look above.
            let _ = feed.sender.send(Arc::new(change));
        }
        if complete {
            return Ok(Polled { seen: last, watched: true });
        }
    }
}
