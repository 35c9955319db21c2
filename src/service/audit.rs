//! The change log, read.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};

use super::{
    access::{self, Need},
    feed::{self, ChangeFeed},
};
use crate::{
    domain::{Actor, OrganizationId, Result, Revision, model::Change},
    metrics,
    storage::{self, DatabaseConnection},
};

/// Changes a replaying watcher reads per query.
const REPLAY_PAGE: u64 = 1_000;
/// Changes buffered per watcher between the feed and the client's stream.
const WATCH_BUFFER: usize = 256;

#[derive(Clone)]
pub struct Audit {
    db: DatabaseConnection,
    feed: Arc<ChangeFeed>,
}

impl Audit {
    pub fn new(db: DatabaseConnection, feed: Arc<ChangeFeed>) -> Self {
        Self { db, feed }
    }

    async fn authorize(&self, actor: &Actor, organization_id: Option<&OrganizationId>) -> Result<()> {
        match organization_id {
            Some(organization) => access::require(&self.db, actor, organization, Need::View).await,
            None => access::require_admin(actor, "reading the changes of every organization"),
        }
    }

    /// Every change after `after` (of one organization, or all): the stored ones, then
    /// new ones as they commit, until the client leaves, falls behind or the server stops.
    pub async fn watch(
        &self,
        actor: Actor,
        after: Revision,
        organization_id: Option<OrganizationId>,
    ) -> Result<mpsc::Receiver<Result<Change>>> {
        self.authorize(&actor, organization_id.as_ref()).await?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        // Subscribe before replaying, so nothing committed during the replay is missed;
        // what both deliver is skipped by revision.
        let (live, closed) = self.feed.subscribe().await?;
        let db = self.db.clone();
        let organization_id = organization_id.map(OrganizationId::into_string);
        tokio::spawn(async move {
            let metrics = metrics::global();
            metrics.inspect(|m| m.watcher_opened());
            if let Err(err) = stream_changes(db, after, organization_id, live, closed, &sender).await {
                let _ = sender.send(Err(err)).await;
            }
            metrics.inspect(|m| m.watcher_closed());
        });
        Ok(receiver)
    }

    /// Up to `limit` changes after `after`, and the latest revision read before them, so
    /// a caller can tell an empty page from being caught up.
    pub async fn list_changes(
        &self,
        actor: Actor,
        after: Revision,
        organization_id: Option<&OrganizationId>,
        limit: u64,
    ) -> Result<(Vec<Change>, Revision)> {
        self.authorize(&actor, organization_id).await?;
        let latest = storage::changes::current_revision(&self.db).await?;
        let changes = storage::changes::list(&self.db, after, organization_id.map(|o| o.as_str()), limit).await?;
        Ok((changes, latest))
    }
}

/// Feeds one watcher: replay from the database, then the live feed. Ends quietly when
/// the client leaves; with an error when the watcher fell behind or the server stops.
async fn stream_changes(
    db: DatabaseConnection,
    after: Revision,
    organization_id: Option<String>,
    mut live: broadcast::Receiver<Arc<Change>>,
    mut closed: watch::Receiver<bool>,
    sender: &mpsc::Sender<Result<Change>>,
) -> Result<()> {
    let mut last = after;
    if *closed.borrow_and_update() {
        return Err(feed::shutting_down(last));
    }
    loop {
        let page = storage::changes::list(&db, last, organization_id.as_deref(), REPLAY_PAGE).await?;
        let complete = (page.len() as u64) < REPLAY_PAGE;
        for change in page {
            last = change.revision;
            if sender.send(Ok(change)).await.is_err() {
                return Ok(());
            }
        }
        if complete {
            break;
        }
    }
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(change) if change.revision <= last => {}
                Ok(change) if organization_id.is_some() && change.organization_id != organization_id => {}
                Ok(change) => {
                    last = change.revision;
                    if sender.send(Ok(Change::clone(&change))).await.is_err() {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(feed::fell_behind(last)),
                Err(broadcast::error::RecvError::Closed) => return Err(feed::shutting_down(last)),
            },
            _ = closed.changed() => return Err(feed::shutting_down(last)),
            () = sender.closed() => return Ok(()),
        }
    }
}
