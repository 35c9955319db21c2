//! One WatchChanges stream: what it may cost, and when it ends.
//!
//! A stream outlives the request that opened it, so the checks a request passes once
//! are repeated while it runs: the caller's right is read again every
//! `reauthorize_every`, and before the first change delivered after a revocation in its
//! organization; the stream ends when the token expires, and after a longest lifetime.
//! Each end names the revision to resume after. Streams are counted per caller and per
//! process, and each has a buffer of [`BUFFER`] changes: a client that takes none of
//! them for `stall_timeout` is ended instead of holding them (and HTTP/2's buffers
//! behind them) for as long as it likes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{broadcast, mpsc, watch},
    time::Instant,
};

use super::access::{self, Need};
use crate::{
    domain::{
        Actor, Error, Interruption, OrganizationId, Result, Revision,
        model::{Change, ChangeKind},
    },
    metrics,
    storage::{self, DatabaseConnection},
};

/// Changes a replaying watcher reads per query.
const REPLAY_PAGE: u64 = 1_000;
/// Changes buffered per watcher between the feed and the client's stream.
pub const BUFFER: usize = 256;

/// The bounds of every stream; `serve`'s flags set them.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// Open streams of one caller (token subject) in this process.
    pub per_caller: usize,
    /// Open streams in this process.
    pub per_process: usize,
    /// A stream ends after between 90% and 100% of this, so that streams opened together
    /// (after a deployment) do not all come back together.
    pub max_lifetime: Duration,
    /// Longest a stream goes without reading its caller's right again.
    pub reauthorize_every: Duration,
    /// Longest a full buffer may wait for its client to take a change.
    pub stall_timeout: Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            per_caller: 64,
            per_process: 1_024,
            max_lifetime: Duration::from_secs(30 * 60),
            reauthorize_every: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// The open streams of this process, by caller.
#[derive(Debug)]
pub struct Watchers {
    limits: WatchLimits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// A stream's place among the open ones, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    watchers: Arc<Watchers>,
    caller: String,
}

impl Watchers {
    pub fn new(limits: WatchLimits) -> Arc<Self> {
        Arc::new(Self { limits, open: Mutex::new(Open::default()) })
    }

    pub fn limits(&self) -> WatchLimits {
        self.limits
    }

    /// A place for one more stream of `caller`, unless that passes a limit.
    pub fn admit(self: &Arc<Self>, caller: &str) -> Result<Slot> {
        let WatchLimits { per_caller, per_process, .. } = self.limits;
        let mut open = self.open.lock().map_err(|_| Error::Internal("watcher count lock poisoned".into()))?;
        if open.total >= per_process {
            return Err(Error::Exhausted(format!(
                "this server already serves {per_process} WatchChanges streams, its limit; retry later or on \
                 another replica"
            )));
        }
        let mine = open.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= per_caller {
            return Err(Error::Exhausted(format!(
                "caller {caller} already has {per_caller} WatchChanges streams open on this server, the most one \
                 caller may; close one first"
            )));
        }
        open.total += 1;
        open.by_caller.insert(caller.to_owned(), mine + 1);
        Ok(Slot { watchers: self.clone(), caller: caller.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut open) = self.watchers.open.lock() else { return };
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
    }
}

/// Watching one organization needs the right to read it; watching all of them, an
/// administrator's token that is not scoped to organizations.
pub async fn authorize(db: &DatabaseConnection, actor: &Actor, organization_id: Option<&OrganizationId>) -> Result<()> {
    match organization_id {
        Some(organization) => access::require(db, actor, organization, Need::View).await,
        None => access::require_admin(actor, "reading the changes of every organization"),
    }
}

/// The state of one stream, fed by [`Watcher::run`] until the client leaves or the
/// stream ends for a reason the client is told.
pub struct Watcher {
    pub db: DatabaseConnection,
    pub actor: Actor,
    pub organization_id: Option<OrganizationId>,
    pub limits: WatchLimits,
    /// The revision of the last change delivered (or the client's `after_revision`).
    pub last: Revision,
}

/// When the stream must look at its caller again, or end.
struct Clock {
    reauthorize_at: Instant,
    /// Every revocation up to this revision was committed before the last check read the
    /// caller's right, so that check covers it.
    checked_through: Revision,
    expires_at: Option<Instant>,
    ends_at: Instant,
}

impl Watcher {
    /// Feeds the stream: replay from the database, then the live feed. `live` was
    /// subscribed before the replay starts, so nothing committed meanwhile is missed;
    /// what both deliver is skipped by revision.
    pub async fn run(
        mut self,
        live: broadcast::Receiver<Arc<Change>>,
        closed: watch::Receiver<bool>,
        sender: mpsc::Sender<Result<Change>>,
    ) {
        let metrics = metrics::global();
        metrics.inspect(|m| m.watcher_opened());
        if let Err(err) = self.stream(live, closed, &sender).await {
            // Room is always left for this (see `deliver`), after every change before it.
            let _ = sender.try_send(Err(err));
        }
        metrics.inspect(|m| m.watcher_closed());
    }

    async fn stream(
        &mut self,
        mut live: broadcast::Receiver<Arc<Change>>,
        mut closed: watch::Receiver<bool>,
        sender: &mpsc::Sender<Result<Change>>,
    ) -> Result<()> {
        let mut clock = self.clock();
        if *closed.borrow_and_update() {
            return Err(self.interrupted(Interruption::Unavailable, "the server is shutting down"));
        }
        loop {
            self.keep_going(&mut clock, None).await?;
            let organization = self.organization_id.as_ref().map(OrganizationId::as_str);
            let page = storage::changes::list(&self.db, self.last, organization, REPLAY_PAGE).await?;
            let complete = (page.len() as u64) < REPLAY_PAGE;
            for change in page {
                if !self.deliver(&mut clock, sender, change).await? {
                    return Ok(());
                }
            }
            if complete {
                break;
            }
        }
        loop {
            let wake_at = clock.ends_at.min(clock.reauthorize_at).min(clock.expires_at.unwrap_or(clock.ends_at));
            tokio::select! {
                received = live.recv() => match received {
                    Ok(change) if change.revision <= self.last => {}
                    Ok(change) if self.organization_id.as_ref().is_some_and(|o| change.organization_id.as_deref() != Some(o.as_str())) => {}
                    Ok(change) => {
                        if !self.deliver(&mut clock, sender, Change::clone(&change)).await? {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(self.fell_behind()),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(self.interrupted(Interruption::Unavailable, "the server is shutting down"));
                    }
                },
                _ = closed.changed() => {
                    return Err(self.interrupted(Interruption::Unavailable, "the server is shutting down"));
                }
                () = sender.closed() => return Ok(()),
                () = tokio::time::sleep_until(wake_at) => self.keep_going(&mut clock, None).await?,
            }
        }
    }

    fn clock(&self) -> Clock {
        let now = Instant::now();
        let lifetime = self.limits.max_lifetime.mul_f64(rand::random_range(0.9..=1.0));
        let expires_at = self.actor.valid_until.map(|valid_until| {
            let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
            // The token is accepted through its last second, so it expires after it.
            now + Duration::from_secs(valid_until.saturating_sub(unix_now) + 1)
        });
        Clock {
            reauthorize_at: now + self.limits.reauthorize_every,
            checked_through: 0,
            expires_at,
            ends_at: now + lifetime,
        }
    }

    /// Ends the stream when its token expired or its lifetime is over, and reads the
    /// caller's right again when it is due or when `next` is a revocation that no check
    /// has covered yet.
    async fn keep_going(&self, clock: &mut Clock, next: Option<&Change>) -> Result<()> {
        let now = Instant::now();
        if clock.expires_at.is_some_and(|expires_at| now >= expires_at) {
            return Err(Error::WatchInterrupted {
                reason: Interruption::TokenExpired,
                message: format!(
                    "the caller's token has expired; watch again with a fresh token and after_revision = {}",
                    self.last
                ),
            });
        }
        if now >= clock.ends_at {
            return Err(self.interrupted(
                Interruption::Unavailable,
                "the stream reached the longest lifetime this server gives one",
            ));
        }
        let revoked = next.is_some_and(|change| is_revocation(change) && change.revision > clock.checked_through);
        if revoked || now >= clock.reauthorize_at {
            // Read before the right, so the right read is at least as new as this revision.
            let latest = storage::numbering::current_revision(&self.db).await.map_err(|err| self.unavailable(err))?;
            authorize(&self.db, &self.actor, self.organization_id.as_ref()).await.map_err(|err| match err {
                Error::PermissionDenied(why) => Error::PermissionDenied(format!(
                    "{why}; once it may again, watch again with after_revision = {}",
                    self.last
                )),
                other => self.unavailable(other),
            })?;
            clock.checked_through = latest;
            clock.reauthorize_at = Instant::now() + self.limits.reauthorize_every;
        }
        Ok(())
    }

    /// Hands one change to the client's stream; `false` when the client has left. One
    /// place in the buffer always stays free for the status that ends the stream.
    async fn deliver(
        &mut self,
        clock: &mut Clock,
        sender: &mpsc::Sender<Result<Change>>,
        change: Change,
    ) -> Result<bool> {
        self.keep_going(clock, Some(&change)).await?;
        let mut permits = match tokio::time::timeout(self.limits.stall_timeout, sender.reserve_many(2)).await {
            Ok(Ok(permits)) => permits,
            Ok(Err(_)) => return Ok(false),
            Err(_) => return Err(self.fell_behind()),
        };
        let revision = change.revision;
        if let Some(permit) = permits.next() {
            permit.send(Ok(change));
        }
        self.last = revision;
        Ok(true)
    }

    fn fell_behind(&self) -> Error {
        self.interrupted(Interruption::FellBehind, "the watcher fell behind the writers")
    }

    /// A database error while streaming: the client resumes, here or elsewhere.
    fn unavailable(&self, err: Error) -> Error {
        match err {
            Error::Unavailable(_) => self.interrupted(Interruption::Unavailable, "the database is unavailable"),
            other => other,
        }
    }

    fn interrupted(&self, reason: Interruption, why: &str) -> Error {
        Error::WatchInterrupted { reason, message: format!("{why}; watch again with after_revision = {}", self.last) }
    }
}

/// A change after which the watcher may no longer hold its right.
fn is_revocation(change: &Change) -> bool {
    matches!(change.kind, ChangeKind::GrantRemoved | ChangeKind::MemberRemoved | ChangeKind::OrganizationDeleted)
}
