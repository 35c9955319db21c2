//! The change log and the revision counter.
//!
//! A write transaction appends its events last: it bumps the one-row counter by the
//! number of events (taking that row's lock until commit) and inserts the events at the
//! revisions it got. Because the lock is held until commit, a transaction that takes a
//! higher revision always commits after every lower one, so a reader that sees revision
//! R has seen every revision below R.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::{Expr, Query},
};
use uuid::Uuid;

use super::{entities::change, entities::revision_counter, grants::GrantKey, json_array};
use crate::domain::{
    Actor, Error, Result, Revision,
    model::{Change, ChangeKind},
};

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
    match conn.get_database_backend() {
        DatabaseBackend::Postgres => append_in_one_statement(conn, actor, at, &events, count).await,
        _ => append_in_two_statements(conn, actor, at, &events, count).await,
    }
}

/// PostgreSQL: bumps the counter and inserts every event in one statement, so the
/// counter's row lock is held for one round trip plus the commit. The events travel as
/// arrays; sea-query binds arrays without NULL elements, so an absent value travels as
/// '' (or the nil UUID) and NULLIF turns it back: no id grantd stores is empty or nil.
async fn append_in_one_statement(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    at: DateTime<Utc>,
    events: &[NewChange],
    count: i64,
) -> Result<Revision> {
    let text = |value: Option<&str>| value.unwrap_or_default().to_owned();
    let kinds: Vec<i16> = events.iter().map(|e| e.kind.code()).collect();
    let organizations: Vec<String> = events.iter().map(|e| text(e.organization_id.as_deref())).collect();
    let users: Vec<String> = events.iter().map(|e| text(e.user_id.as_deref())).collect();
    let permissions: Vec<Uuid> = events.iter().map(|e| e.permission_id.unwrap_or(Uuid::nil())).collect();
    let resource_types: Vec<String> = events.iter().map(|e| text(e.resource.as_ref().map(|r| r.0.as_str()))).collect();
    let resource_ids: Vec<String> = events.iter().map(|e| text(e.resource.as_ref().map(|r| r.1.as_str()))).collect();
    let statement = Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "WITH bump AS (UPDATE revision_counter SET value = value + $1 WHERE id = 1 RETURNING value), \
         appended AS (INSERT INTO changes \
           (revision, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) \
           SELECT bump.value - $1 + e.ordinal, e.kind, $2, $3, $4, NULLIF(e.organization_id, ''), \
             NULLIF(e.user_id, ''), NULLIF(e.permission_id, '00000000-0000-0000-0000-000000000000'::uuid), \
             NULLIF(e.resource_type, ''), NULLIF(e.resource_id, '') \
           FROM bump, UNNEST($5::smallint[], $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[]) \
             WITH ORDINALITY AS e(kind, organization_id, user_id, permission_id, resource_type, resource_id, ordinal)) \
         SELECT value FROM bump",
        [
            count.into(),
            actor.subject.as_str().into(),
            actor.request_id.as_str().into(),
            at.into(),
            kinds.into(),
            organizations.into(),
            users.into(),
            permissions.into(),
            resource_types.into(),
            resource_ids.into(),
        ],
    );
    conn.query_one(statement)
        .await?
        .ok_or_else(|| Error::Internal("revision counter row is missing".into()))?
        .try_get("", "value")
        .map_err(Error::from)
}

/// The events of [`append`] and [`append_sqlite`] on SQLite: the first event's revision,
/// the time, then a JSON array of `[actor, request id, how many events come before, [events]]`,
/// each event `[kind, organization, user, permission (32 hex digits), resource type,
/// resource id]`. MATERIALIZED, as in `grants::SQLITE_INSERT`: an author's fields are
/// read from its JSON once, not once per event.
pub const SQLITE_APPEND: &str = "WITH author AS MATERIALIZED (SELECT value ->> 0 AS actor, value ->> 1 AS request_id, \
      value ->> 2 AS events_before, value -> 3 AS listed FROM json_each(?3)) \
    INSERT INTO changes \
    (revision, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) \
    SELECT ?1 + author.events_before + listed.key, listed.value ->> 0, author.actor, author.request_id, ?2, \
      listed.value ->> 1, listed.value ->> 2, unhex(listed.value ->> 3), listed.value ->> 4, listed.value ->> 5 \
    FROM author, json_each(author.listed) AS listed";

/// Adds `count` to the revision counter, locking its row until commit; answers the new
/// value, the revision of the last of the `count` events.
pub(super) async fn bump(conn: &impl ConnectionTrait, count: i64) -> Result<Revision> {
    let bump = Query::update()
        .table(revision_counter::Entity)
        .value(revision_counter::Column::Value, Expr::col(revision_counter::Column::Value).add(count))
        .and_where(revision_counter::Column::Id.eq(1))
        .returning_col(revision_counter::Column::Value)
        .to_owned();
    Ok(conn
        .query_one(conn.get_database_backend().build(&bump))
        .await?
        .ok_or_else(|| Error::Internal("revision counter row is missing".into()))?
        .try_get("", "value")?)
}

/// SQLite: bump the counter, then insert every event in one statement, [`SQLITE_APPEND`].
async fn append_in_two_statements(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    at: DateTime<Utc>,
    events: &[NewChange],
    count: i64,
) -> Result<Revision> {
    let last = bump(conn, count).await?;
    insert_sqlite(conn, last - count + 1, at, &[Authored { actor, events }]).await?;
    Ok(last)
}

/// One caller's events, for [`append_sqlite`].
#[derive(Debug, Clone, Copy)]
pub struct Authored<'a> {
    pub actor: &'a Actor,
    pub events: &'a [NewChange],
}

/// SQLite: appends the events of several callers at consecutive new revisions, in order,
/// each event recording its own caller and request id; answers the revision the counter
/// stood at before them. Two statements however many callers and events.
pub async fn append_sqlite(
    conn: &impl ConnectionTrait,
    at: DateTime<Utc>,
    authored: &[Authored<'_>],
) -> Result<Revision> {
    let total: usize = authored.iter().map(|a| a.events.len()).sum();
    if total == 0 {
        return current_revision(conn).await;
    }
    let count = i64::try_from(total).map_err(|_| Error::Internal("too many events".into()))?;
    let last = bump(conn, count).await?;
    insert_sqlite(conn, last - count + 1, at, authored).await?;
    Ok(last - count)
}

async fn insert_sqlite(
    conn: &impl ConnectionTrait,
    first: Revision,
    at: DateTime<Utc>,
    authored: &[Authored<'_>],
) -> Result<()> {
    let mut before = 0usize;
    let listed: Vec<_> = authored
        .iter()
        .map(|author| {
            let events: Vec<_> = author
                .events
                .iter()
                .map(|event| {
                    let (resource_type, resource_id) = event.resource.as_ref().map(|(t, i)| (t, i)).unzip();
                    (
                        event.kind.code(),
                        &event.organization_id,
                        &event.user_id,
                        event.permission_id.map(|id| id.simple().to_string()),
                        resource_type,
                        resource_id,
                    )
                })
                .collect();
            let entry = (author.actor.subject.as_str(), author.actor.request_id.as_str(), before, events);
            before += author.events.len();
            entry
        })
        .collect();
    let insert = Statement::from_sql_and_values(
        DatabaseBackend::Sqlite,
        SQLITE_APPEND,
        [first.into(), at.into(), json_array(&listed)?.into()],
    );
    conn.execute(insert).await?;
    Ok(())
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
