//! Use-cases: each public method is one RPC's rules, run as one transaction or one read.
//! Every write runs the same way ([`Writes::run`]), for every caller and both databases.

mod access;
mod audit;
mod bulk;
mod catalog;
mod check_queue;
mod directory;
mod feed;
mod grants;
mod resolve;
mod sequencer;
mod watch;

use std::{future::Future, sync::Arc};

use tracing::Instrument;

pub use audit::Audit;
pub use bulk::{Bulk, ExportChunk, ExportItem, Rehearsal};
pub use catalog::PermissionDeletion;
pub use directory::{Directory, MembershipOutcome, OrganizationDeletion};
pub use feed::ChangeFeed;
pub use grants::{AddOutcome, CheckOutcome, Grants, RemoveOutcome, RemovedFromOrganization, ResourceRemovals};
pub use sequencer::Sequencer;
use uuid::Uuid;
pub use watch::WatchLimits;

use crate::{
    domain::{Actor, Error, Result, Revision},
    storage::{self, DatabaseTransaction, Writer, changes::Author, tx::TxFuture, writes},
};

/// A page of a list answer.
#[derive(Debug, Clone)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// The one way writes run: where their transactions begin, and what numbers their events.
#[derive(Debug, Clone)]
pub struct Writes {
    writer: Writer,
    sequencer: Arc<Sequencer>,
}

impl Writes {
    /// Transactions begin through `writer` (see `storage::writer`); `sequencer` numbers their events.
    pub fn new(writer: Writer, sequencer: Arc<Sequencer>) -> Self {
        Self { writer, sequencer }
    }

    /// One write use-case: `body` runs as a retried write transaction (`writes::write`),
    /// getting fresh copies of the author and the command on every attempt. The answer is
    /// its value with a revision:
    /// - a write that appended events answers the revision of its last one, numbered
    ///   after its commit (see [`Sequencer`]);
    /// - a write that changed nothing numbers, before it commits and while it still holds
    ///   its locks, every event committed so far (on SQLite, with those of the writes
    ///   before it in its shared transaction), and answers the latest revision: it covers
    ///   everything the write saw, and a write it held off is numbered after it; the
    ///   numbering at the end of a shared transaction would also cover the writes after it;
    /// - on SQLite a write that appended events answers the revision its transaction gave
    ///   its last one before committing (see `storage::writes::write`).
    ///
    /// All of it runs in a task of its own (see [`detached`]).
    async fn run<C, T, F>(&self, actor: Actor, command: C, body: F) -> Result<(T, Revision)>
    where
        C: Clone + Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c DatabaseTransaction, Author, C) -> TxFuture<'c, T> + Send + Sync + 'static,
    {
        let Writes { writer, sequencer } = self.clone();
        let write_id = Uuid::new_v4();
        detached(async move {
            let ((value, unchanged_at), numbered) = writes::write(&writer, move |tx| {
                let author = Author::new(actor.clone(), write_id);
                let work = body(tx, author.clone(), command.clone());
                Box::pin(async move {
                    let value = work.await?;
                    let unchanged_at = match author.appended_any() {
                        true => None,
                        false => Some(storage::numbering::sequence(tx).await?.revision),
                    };
                    Ok((value, unchanged_at))
                })
            })
            .await?;
            let revision = match (unchanged_at, numbered) {
                (Some(revision), _) => revision,
                (None, Some(numbered)) => match numbered.revision_of(write_id) {
                    Some(revision) => revision,
                    // A write after it in the same transaction numbered it (one that changed nothing).
                    None => sequencer.numbered(write_id).await?,
                },
                (None, None) => sequencer.revision_of(write_id).await?,
            };
            Ok((value, revision))
        })
        .await
    }
}

/// Runs a write to its end even when the client hangs up: tonic drops a cancelled
/// handler's future, and a commit that already happened must not be reported as lost
/// by a half-finished retry loop, nor left unnumbered.
async fn detached<T: Send + 'static>(work: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .map_err(|err| Error::Internal(format!("write task failed: {err}")))?
}
