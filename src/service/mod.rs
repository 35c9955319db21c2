//! Use-cases: each public method is one RPC's rules, run as one transaction (writes
//! through `storage::tx::write`, which also appends the change events) or one read.

mod access;
mod add_groups;
mod audit;
mod catalog;
mod check_queue;
mod directory;
mod feed;
mod grants;
mod resolve;

use std::future::Future;

pub use audit::Audit;
pub use catalog::PermissionDeletion;
pub use directory::{Directory, MembershipOutcome, OrganizationDeletion};
pub use feed::ChangeFeed;
pub use grants::{AddOutcome, CheckOutcome, Grants, RemoveOutcome, RemovedFromOrganization, ResourceRemovals};

use crate::{
    domain::{Actor, Error, Result},
    storage::{
        DatabaseConnection, DatabaseTransaction,
        tx::{self, TxFuture},
    },
};

/// A page of a list answer.
#[derive(Debug, Clone)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// One write use-case: `body` runs as a retried write transaction (`tx::write`) in a task
/// of its own (see [`detached`]), getting fresh copies of the caller and the command on
/// every attempt.
async fn write<C, T, F>(db: &DatabaseConnection, actor: Actor, command: C, body: F) -> Result<T>
where
    C: Clone + Send + Sync + 'static,
    T: Send + 'static,
    F: for<'c> Fn(&'c DatabaseTransaction, Actor, C) -> TxFuture<'c, T> + Send + Sync + 'static,
{
    let db = db.clone();
    detached(async move { tx::write(&db, |tx| body(tx, actor.clone(), command.clone())).await }).await
}

/// Runs a write to its end even when the client hangs up: tonic drops a cancelled
/// handler's future, and a commit that already happened must not be reported as lost
/// by a half-finished retry loop.
async fn detached<T: Send + 'static>(work: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(work).await.map_err(|err| Error::Internal(format!("write task failed: {err}")))?
}
