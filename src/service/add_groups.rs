//! AddUserPermissions by administrators on SQLite, written in groups.
//!
//! SQLite has one writer, and sqlx hands every statement to the connection's own thread
//! and the answer back: an add costs eight such hand-offs however little it adds, and
//! writers queue behind one another anyway. So adds that arrive while a group is being
//! written wait, and the next group writes all of them (up to [`MAX_GROUP`], and up to
//! [`MAX_BATCH`] permissions) with the same eight statements, in arrival order, in one
//! transaction, as if each had run alone in that order.
//!
//! Each add still happens entirely or not at all: one that fails its checks is answered
//! with its error and writes nothing while the others go on, and when the transaction
//! itself fails every add of the group fails with it, none having happened. Each event
//! records its own caller and request id; each answer carries the revision its own last
//! event took. Adds by callers that are not administrators run alone: their right to
//! grant is read from grants, which an earlier add of the same group could be adding.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    access::{self, Need},
    grants::{AddOutcome, added_events, not_a_member, target},
    resolve,
};
use crate::{
    domain::{self, Actor, Error, MAX_BATCH, Result, commands::ChangeUserPermissions},
    storage::{
        self, DatabaseConnection, DatabaseTransaction,
        changes::Authored,
        grants::{GrantKey, NewGrants},
    },
};

/// At most this many adds share one transaction.
const MAX_GROUP: usize = 64;

/// The queue of adds waiting for the next group.
#[derive(Debug, Clone)]
pub struct AddGroups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: DatabaseConnection,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<Pending>,
    /// A task is writing groups; it takes whatever waits until nothing does.
    writing: bool,
}

#[derive(Debug)]
struct Pending {
    actor: Actor,
    cmd: ChangeUserPermissions,
    answer: oneshot::Sender<Result<AddOutcome>>,
}

type Request = (Actor, ChangeUserPermissions);

impl AddGroups {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { inner: Arc::new(Inner { db, state: Mutex::default() }) }
    }

    /// Adds as [`super::Grants::add_user_permissions`] does, in the next group.
    pub async fn add(&self, actor: Actor, cmd: ChangeUserPermissions) -> Result<AddOutcome> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut state = self.inner.state();
            state.waiting.push_back(Pending { actor, cmd, answer });
            !std::mem::replace(&mut state.writing, true)
        };
        if start {
            // Detached: a group runs to its end even when the callers hang up.
            tokio::spawn(write_groups(self.inner.clone()));
        }
        answered.await.map_err(|_| Error::Internal("the add was dropped before it was answered".into()))?
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; should it, the queue is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes groups until nothing waits.
async fn write_groups(inner: Arc<Inner>) {
    loop {
        let group = {
            let mut state = inner.state();
            if state.waiting.is_empty() {
                state.writing = false;
                return;
            }
            next_group(&mut state.waiting)
        };
        let (answers, requests): (Vec<_>, Vec<Request>) =
            group.into_iter().map(|pending| (pending.answer, (pending.actor, pending.cmd))).unzip();
        let db = inner.db.clone();
        let size = requests.len();
        // A task of its own, so that a panic fails this group's adds and not the queue.
        let written = tokio::spawn(async move { write_group(&db, Arc::new(requests)).await }).await;
        tracing::debug!(adds = size, "add group written");
        match written {
            Ok(Ok(outcomes)) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
            }
            Ok(Err(err)) => {
                for answer in answers {
                    let _ = answer.send(Err(err.clone()));
                }
            }
            Err(err) => {
                for answer in answers {
                    let _ = answer.send(Err(Error::Internal(format!("add group failed: {err}"))));
                }
            }
        }
    }
}

/// The first waiting add, and those behind it while the group stays within its limits.
fn next_group(waiting: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut group = Vec::new();
    let mut permissions = 0;
    while let Some(next) = waiting.front() {
        let more = next.cmd.permissions.ids.len() + next.cmd.permissions.names.len();
        if !group.is_empty() && (group.len() == MAX_GROUP || permissions + more > MAX_BATCH) {
            break;
        }
        permissions += more;
        group.extend(waiting.pop_front());
    }
    group
}

async fn write_group(db: &DatabaseConnection, requests: Arc<Vec<Request>>) -> Result<Vec<Result<AddOutcome>>> {
    storage::tx::write(db, move |tx| {
        let requests = requests.clone();
        Box::pin(async move { write_in(tx, &requests).await })
    })
    .await
}

/// One group's transaction: checks, then the grants, then the events, each one
/// statement for the whole group.
async fn write_in(tx: &DatabaseTransaction, requests: &[Request]) -> Result<Vec<Result<AddOutcome>>> {
    let pairs: Vec<(&str, &str)> =
        requests.iter().map(|(_, cmd)| (cmd.organization_id.as_str(), cmd.user_id.as_str())).collect();
    let members = storage::memberships::members_among_sqlite(tx, &pairs).await?;
    let ids: Vec<Uuid> = requests.iter().flat_map(|(_, cmd)| cmd.permissions.ids.iter().copied()).collect();
    let names: Vec<&str> =
        requests.iter().flat_map(|(_, cmd)| cmd.permissions.names.iter().map(|name| name.as_str())).collect();
    let found = storage::permissions::resolve(tx, &ids, &names).await?;

    let mut wanted: Vec<Result<Vec<Uuid>>> = Vec::with_capacity(requests.len());
    for (actor, cmd) in requests {
        wanted.push(checked(tx, actor, cmd, &members, &found).await);
    }

    let now = domain::now();
    let batches: Vec<NewGrants<'_>> = requests
        .iter()
        .zip(&wanted)
        .filter_map(|((actor, cmd), wanted)| {
            let permission_ids = wanted.as_ref().ok()?;
            Some(NewGrants { target: target(cmd), granted_by: &actor.subject, permission_ids })
        })
        .collect();
    let mut unclaimed: HashSet<GrantKey> = if batches.is_empty() {
        HashSet::new()
    } else {
        storage::grants::insert_sqlite(tx, &batches, now).await?.into_iter().collect()
    };

    // In arrival order, each add claims the inserted grants it listed: a grant two adds
    // listed went in with the first, and is already held for the second.
    let mut outcomes: Vec<Result<(Vec<Uuid>, Vec<Uuid>)>> = Vec::with_capacity(requests.len());
    for ((_, cmd), wanted) in requests.iter().zip(wanted) {
        let target = target(cmd);
        outcomes.push(wanted.map(|ids| ids.into_iter().partition(|id| unclaimed.remove(&target.key(*id)))));
    }

    let events: Vec<_> = requests
        .iter()
        .zip(&outcomes)
        .map(|((_, cmd), outcome)| {
            outcome.as_ref().map(|(added, _)| added_events(target(cmd), added)).unwrap_or_default()
        })
        .collect();
    let authored: Vec<Authored<'_>> =
        requests.iter().zip(&events).map(|((actor, _), events)| Authored { actor, events }).collect();
    let mut revision = storage::changes::append_sqlite(tx, now, &authored).await?;

    Ok(outcomes
        .into_iter()
        .zip(&events)
        .map(|(outcome, events)| {
            let (added, already_held) = outcome?;
            revision += i64::try_from(events.len()).map_err(|_| Error::Internal("too many events".into()))?;
            Ok(AddOutcome { added, already_held, revision })
        })
        .collect())
}

/// The checks of one add, in the order an add alone makes them; the permission ids it
/// asks for.
async fn checked(
    tx: &DatabaseTransaction,
    actor: &Actor,
    cmd: &ChangeUserPermissions,
    members: &HashSet<(String, String)>,
    found: &[domain::model::Permission],
) -> Result<Vec<Uuid>> {
    access::require(tx, actor, &cmd.organization_id, Need::Edit).await?;
    if !members.contains(&(cmd.organization_id.to_string(), cmd.user_id.to_string())) {
        resolve::organization(tx, &cmd.organization_id).await?;
        return Err(not_a_member(cmd));
    }
    let permissions = resolve::named_in(found, &cmd.permissions)?;
    access::require_holds(tx, actor, &cmd.organization_id, &cmd.resource, &permissions).await?;
    Ok(resolve::ids(&permissions))
}
