//! The change log, read.

use super::access::{self, Need};
use crate::{
    domain::{Actor, OrganizationId, Result, Revision, model::Change},
    storage::{self, DatabaseConnection},
};

#[derive(Debug, Clone)]
pub struct Audit {
    db: DatabaseConnection,
}

impl Audit {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
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
        match organization_id {
            Some(organization) => access::require(&self.db, &actor, organization, Need::View).await?,
            None => access::require_admin(&actor, "ListChanges of every organization")?,
        }
        let latest = storage::changes::current_revision(&self.db).await?;
        let changes = storage::changes::list(&self.db, after, organization_id.map(|o| o.as_str()), limit).await?;
        Ok((changes, latest))
    }
}
