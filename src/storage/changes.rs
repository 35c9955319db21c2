//! The change log and the revision counter.
//!
//! A write transaction appends its events last: it bumps the one-row counter by the
//! number of events (taking that row's lock until commit) and inserts the events at the
//! revisions it got. Because the lock is held until commit, a transaction that takes a
//! higher revision always commits after every lower one, so a reader that sees revision
//! R has seen every revision below R.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Query},
};
use uuid::Uuid;

use super::{entities::change, entities::revision_counter, grants::GrantKey};
use crate::domain::{
    Actor, Error, Result, Revision,
    model::{Change, ChangeKind},
};

/// Rows per INSERT: 10 columns each keeps a statement under SQLite's 32,766 parameters.
const ROWS_PER_INSERT: usize = 3_000;

/// An event about to be appended; its revision is assigned by [`append`].
#[derive(Debug, Clone)]
pub struct NewChange {
    pub kind: ChangeKind,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    pub permission_id: Option<Uuid>,
    pub resource: Option<(String, String)>,
}

impl NewChange {
    pub fn grant(kind: ChangeKind, key: GrantKey) -> Self {
        Self {
            kind,
            organization_id: Some(key.organization_id),
            user_id: Some(key.user_id),
            permission_id: Some(key.permission_id),
            resource: Some((key.resource_type, key.resource_id)),
        }
    }

    pub fn member(kind: ChangeKind, organization_id: &str, user_id: &str) -> Self {
        Self {
            kind,
            organization_id: Some(organization_id.to_owned()),
            user_id: Some(user_id.to_owned()),
            permission_id: None,
            resource: None,
        }
    }

    pub fn organization(kind: ChangeKind, organization_id: &str) -> Self {
        Self {
            kind,
            organization_id: Some(organization_id.to_owned()),
            user_id: None,
            permission_id: None,
            resource: None,
        }
    }

    pub fn permission(kind: ChangeKind, permission_id: Uuid) -> Self {
        Self { kind, organization_id: None, user_id: None, permission_id: Some(permission_id), resource: None }
    }
}

/// Makes the first statement of a SQLite transaction a write, so it queues for the
/// database's write lock right away (see `tx::write`).
pub async fn take_sqlite_write_lock(conn: &impl ConnectionTrait) -> Result<()> {
    let touch = Query::update()
        .table(revision_counter::Entity)
        .value(revision_counter::Column::Value, Expr::col(revision_counter::Column::Value))
        .and_where(revision_counter::Column::Id.eq(1))
        .to_owned();
    conn.execute(conn.get_database_backend().build(&touch)).await?;
    Ok(())
}

/// The latest committed revision.
pub async fn current_revision(conn: &impl ConnectionTrait) -> Result<Revision> {
    revision_counter::Entity::find_by_id(1i16)
        .one(conn)
        .await?
        .map(|row| row.value)
        .ok_or_else(|| Error::Internal("revision counter row is missing".into()))
}

/// Appends `events` at consecutive new revisions and answers the last one; with no
/// events it changes nothing and answers the current revision.
pub async fn append(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    at: DateTime<Utc>,
    events: Vec<NewChange>,
) -> Result<Revision> {
    if events.is_empty() {
        return current_revision(conn).await;
    }
    let count = i64::try_from(events.len()).map_err(|_| Error::Internal("too many events".into()))?;
    let bump = Query::update()
        .table(revision_counter::Entity)
        .value(revision_counter::Column::Value, Expr::col(revision_counter::Column::Value).add(count))
        .and_where(revision_counter::Column::Id.eq(1))
        .returning_col(revision_counter::Column::Value)
        .to_owned();
    let last: Revision = conn
        .query_one(conn.get_database_backend().build(&bump))
        .await?
        .ok_or_else(|| Error::Internal("revision counter row is missing".into()))?
        .try_get("", "value")?;

    let mut revision = last - count;
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut insert = Query::insert();
        insert.into_table(change::Entity).columns([
            change::Column::Revision,
            change::Column::Kind,
            change::Column::Actor,
            change::Column::RequestId,
            change::Column::At,
            change::Column::OrganizationId,
            change::Column::UserId,
            change::Column::PermissionId,
            change::Column::ResourceType,
            change::Column::ResourceId,
        ]);
        for event in chunk {
            revision += 1;
            let (resource_type, resource_id) = event.resource.clone().unzip();
            insert.values_panic([
                revision.into(),
                event.kind.code().into(),
                actor.subject.as_str().into(),
                actor.request_id.as_str().into(),
                at.into(),
                event.organization_id.clone().into(),
                event.user_id.clone().into(),
                event.permission_id.into(),
                resource_type.into(),
                resource_id.into(),
            ]);
        }
        conn.execute(conn.get_database_backend().build(&insert)).await?;
    }
    Ok(last)
}

/// Up to `limit` changes after `after`, in revision order, optionally of one organization.
pub async fn list(
    conn: &impl ConnectionTrait,
    after: Revision,
    organization_id: Option<&str>,
    limit: u64,
) -> Result<Vec<Change>> {
    let mut query = change::Entity::find()
        .filter(change::Column::Revision.gt(after))
        .order_by_asc(change::Column::Revision)
        .limit(limit);
    if let Some(organization_id) = organization_id {
        query = query.filter(change::Column::OrganizationId.eq(organization_id));
    }
    query.all(conn).await?.into_iter().map(to_change).collect()
}

fn to_change(row: change::Model) -> Result<Change> {
    let kind = ChangeKind::from_code(row.kind)
        .ok_or_else(|| Error::Internal(format!("unknown change kind {} at revision {}", row.kind, row.revision)))?;
    Ok(Change {
        revision: row.revision,
        kind,
        actor: row.actor,
        request_id: row.request_id,
        at: row.at,
        organization_id: row.organization_id,
        user_id: row.user_id,
        permission_id: row.permission_id,
        resource: row.resource_type.zip(row.resource_id),
    })
}
