//! The change log, read: a page at a time, or as a stream (see `watch`).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{
    feed::ChangeFeed,
    watch::{self, BUFFER, WatchLimits, Watcher, Watchers},
};
use crate::{
    domain::{Actor, OrganizationId, Result, Revision, model::Change},
    storage::{self, DatabaseConnection},
};

#[derive(Clone)]
pub struct Audit {
    db: DatabaseConnection,
    feed: Arc<ChangeFeed>,
    watchers: Arc<Watchers>,
}

impl Audit {
    pub fn new(db: DatabaseConnection, feed: Arc<ChangeFeed>, limits: WatchLimits) -> Self {
        Self { db, feed, watchers: Watchers::new(limits) }
    }

    /// Every change after `after` (of one organization, or all): the stored ones, then
    /// new ones as they commit, until the client leaves or the stream ends (see `watch`).
    pub async fn watch(
        &self,
        actor: Actor,
        after: Revision,
        organization_id: Option<OrganizationId>,
    ) -> Result<mpsc::Receiver<Result<Change>>> {
        watch::authorize(&self.db, &actor, organization_id.as_ref()).await?;
        let slot = self.watchers.admit(&actor.subject)?;
        // One more than the buffer: the place kept for the status that ends the stream.
        let (sender, receiver) = mpsc::channel(BUFFER + 1);
        let (live, closed) = self.feed.subscribe().await?;
        let watcher =
            Watcher { db: self.db.clone(), actor, organization_id, limits: self.watchers.limits(), last: after };
        tokio::spawn(async move {
            watcher.run(live, closed, sender).await;
            drop(slot);
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
        watch::authorize(&self.db, &actor, organization_id).await?;
        let latest = storage::numbering::current_revision(&self.db).await?;
        let changes = storage::changes::list(&self.db, after, organization_id.map(|o| o.as_str()), limit).await?;
        Ok((changes, latest))
    }
}
