//! The change log: every write's events, and where they are read.
//!
//! A write transaction queues its events in `pending_changes`, without a revision,
//! tagged with its write id ([`append`], and [`events_from`] for events read from deleted
//! grants). Nothing in it touches a row that other writes share, so writes of different
//! users never wait for each other. A sequencing (`numbering`) then moves every
//! committed event of the queue into `changes` with its revision. Each event reaches
//! `changes` once, numbered; the queue holds only what waits.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{
    entities::change,
    grants::GrantKey,
    json_array,
    numbering::{self, Sequenced},
    tx,
    writes::{self, Writer},
};
use crate::domain::{
    Actor, Error, Result, Revision,
    model::{Change, ChangeKind},
};

/// Who writes: the caller, and the id that ties one write's events together until the
/// sequencer numbers them (new for every write, the same across its retries). Counts the
/// events one attempt appends.
#[derive(Debug, Clone)]
pub struct Author {
    pub actor: Actor,
    pub write_id: Uuid,
    appended: Arc<AtomicU64>,
}

impl Author {
    /// The author of one attempt of a write: it has appended nothing yet.
    pub fn new(actor: Actor, write_id: Uuid) -> Self {
        Self { actor, write_id, appended: Arc::default() }
    }

    /// Whether this attempt has appended any event.
    pub fn appended_any(&self) -> bool {
        self.appended.load(Ordering::Relaxed) > 0
    }

    pub(super) fn note_appended(&self, events: u64) {
        self.appended.fetch_add(events, Ordering::Relaxed);
    }
}

/// An event about to be appended; its revision is given by [`sequence`].
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

/// The columns an event is written with, after its write id.
const EVENT_COLUMNS: &str =
    "write_id, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id";

/// Appends `events`, in order, to `author`'s write. One statement whatever their number:
/// they travel as arrays (PostgreSQL) or one JSON array (SQLite).
pub async fn append(
    conn: &impl ConnectionTrait,
    author: &Author,
    at: DateTime<Utc>,
    events: Vec<NewChange>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    let [write_id, actor, request_id] = author_values(author);
    let statement = match backend {
        DatabaseBackend::Postgres => {
            // sea-query binds arrays without NULL elements, so an absent value travels as
            // '' (or the nil UUID) and NULLIF turns it back: no id grantd stores is empty or nil.
            let text = |value: Option<&str>| value.unwrap_or_default().to_owned();
            let kinds: Vec<i16> = events.iter().map(|e| e.kind.code()).collect();
            let organizations: Vec<String> = events.iter().map(|e| text(e.organization_id.as_deref())).collect();
            let users: Vec<String> = events.iter().map(|e| text(e.user_id.as_deref())).collect();
            let permissions: Vec<Uuid> = events.iter().map(|e| e.permission_id.unwrap_or(Uuid::nil())).collect();
            let types: Vec<String> = events.iter().map(|e| text(e.resource.as_ref().map(|r| r.0.as_str()))).collect();
            let ids: Vec<String> = events.iter().map(|e| text(e.resource.as_ref().map(|r| r.1.as_str()))).collect();
            Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO pending_changes ({EVENT_COLUMNS}) \
                     SELECT $1, e.kind, $2, $3, $4, NULLIF(e.organization_id, ''), NULLIF(e.user_id, ''), \
                       NULLIF(e.permission_id, '00000000-0000-0000-0000-000000000000'::uuid), \
                       NULLIF(e.resource_type, ''), NULLIF(e.resource_id, '') \
                     FROM UNNEST($5::smallint[], $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[]) \
                       WITH ORDINALITY AS e(kind, organization_id, user_id, permission_id, resource_type, resource_id, \
                       ordinal) \
                     ORDER BY e.ordinal"
                ),
                [
                    write_id,
                    actor,
                    request_id,
                    at.into(),
                    kinds.into(),
                    organizations.into(),
                    users.into(),
                    permissions.into(),
                    types.into(),
                    ids.into(),
                ],
            )
        }
        _ => {
            let listed: Vec<_> = events
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
            Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO pending_changes ({EVENT_COLUMNS}) \
                     SELECT ?1, e.value ->> 0, ?2, ?3, ?4, e.value ->> 1, e.value ->> 2, unhex(e.value ->> 3), \
                       e.value ->> 4, e.value ->> 5 \
                     FROM json_each(?5) AS e ORDER BY e.key"
                ),
                [write_id, actor, request_id, at.into(), json_array(&listed)?.into()],
            )
        }
    };
    let appended = conn.execute(statement).await?.rows_affected();
    author.note_appended(appended);
    Ok(())
}

/// `INSERT INTO pending_changes ... SELECT` one event of `kind` per row of `source` (a table, a
/// CTE or a parenthesized query with the grant key columns), for statements that write
/// events from the grants they delete (`revocations`). `others` are the values of the
/// rest of the statement, whose own placeholders are `$1..$n` (PostgreSQL) or unnumbered
/// `?` (SQLite), as sea-query writes them; answers the text and every value of the
/// statement, in binding order.
pub(super) fn events_from(
    backend: DatabaseBackend,
    source: &str,
    others: Vec<Value>,
    author: &Author,
    kind: ChangeKind,
    at: DateTime<Utc>,
) -> (String, Vec<Value>) {
    let [write_id, actor, request_id] = author_values(author);
    let ours = [write_id, kind.code().into(), actor, request_id, at.into()];
    // sqlx binds SQLite's unnumbered `?` in the order they appear, so there ours, written
    // before the others', take the first values; PostgreSQL's are numbered, ours after.
    let (p, values): (Vec<String>, Vec<Value>) = match backend {
        DatabaseBackend::Postgres => {
            let first = others.len() + 1;
            ((first..first + 5).map(|n| format!("${n}")).collect(), others.into_iter().chain(ours).collect())
        }
        _ => (vec!["?".to_owned(); 5], ours.into_iter().chain(others).collect()),
    };
    let sql = format!(
        "INSERT INTO pending_changes ({EVENT_COLUMNS}) \
         SELECT {}, {}, {}, {}, {}, organization_id, user_id, permission_id, resource_type, resource_id FROM {source}",
        p[0], p[1], p[2], p[3], p[4]
    );
    (sql, values)
}

fn author_values(author: &Author) -> [Value; 3] {
    [author.write_id.into(), author.actor.subject.as_str().into(), author.actor.request_id.as_str().into()]
}

/// Numbers what has committed (see `numbering::sequence`) as a transaction of its own,
/// retried like a write: on PostgreSQL the one statement alone, on SQLite a write transaction.
/// Safe to repeat: a sequencing that failed numbered nothing, one whose answer was lost
/// left nothing for the next to number twice.
pub async fn sequence_committed(writer: &Writer) -> Result<Sequenced> {
    match writer.connection().get_database_backend() {
        DatabaseBackend::Postgres => {
            tx::statement(writer.connection(), || numbering::sequence(writer.connection())).await
        }
        // Every shared transaction numbers what waits before it commits: an empty write is enough.
        _ => {
            let ((), numbered) = writes::write(writer, |_| Box::pin(async { Ok(()) })).await?;
            numbered
                .map(Arc::unwrap_or_clone)
                .ok_or_else(|| Error::Internal("a SQLite write transaction was not numbered".into()))
        }
    }
}

/// The revision of the last event of the write, once numbered; none before, or when it
/// appended no event.
pub async fn revision_of(conn: &impl ConnectionTrait, write_id: Uuid) -> Result<Option<Revision>> {
    let revision = change::Entity::find()
        .select_only()
        .expr(Expr::col(change::Column::Revision).max())
        .filter(change::Column::WriteId.eq(write_id))
        .into_tuple::<Option<Revision>>()
        .one(conn)
        .await?;
    Ok(revision.flatten())
}

/// Whether any committed event waits for a revision (a write whose process ended
/// before it sequenced leaves some).
pub async fn any_unsequenced(conn: &impl ConnectionTrait) -> Result<bool> {
    let probe = Statement::from_string(conn.get_database_backend(), "SELECT 1 AS found FROM pending_changes LIMIT 1");
    Ok(conn.query_one(probe).await?.is_some())
}

/// Removes what sequencing left of the queue's rows on PostgreSQL. Every event passes
/// through the queue, so without autovacuum (or between its runs) reading the queue would
/// cost as much as every event ever queued; vacuuming a queue that holds only what waits
/// is quick. Cannot run inside a transaction. Skipped while another process vacuums it.
pub async fn vacuum_pending(conn: &impl ConnectionTrait) -> Result<()> {
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_unprepared("VACUUM (SKIP_LOCKED) pending_changes").await?;
    }
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
    let revision = row.revision.ok_or_else(|| Error::Internal(format!("change {} listed unnumbered", row.id)))?;
    let kind = ChangeKind::from_code(row.kind)
        .ok_or_else(|| Error::Internal(format!("unknown change kind {} at revision {revision}", row.kind)))?;
    Ok(Change {
        revision,
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

/// How far a resumed export got, for [`touched_since`].
#[derive(Debug, Clone, Copy)]
pub enum ExportPlace<'a> {
    /// Still in the organizations or the catalog: everything is left.
    Beginning,
    /// In the memberships, after this `(organization, user)` (from the first when `None`).
    Memberships { after: Option<(&'a str, &'a str)> },
    /// In the grants, after this key (from the first when `None`).
    Grants { after: Option<&'a GrantKey> },
}

/// Whether a change after `revision`, or one committed but not numbered yet, touches
/// what an export of `organization_id` (everything when `None`) resumed at `place` has
/// left to send.
pub async fn touched_since(
    conn: &impl ConnectionTrait,
    revision: Revision,
    organization_id: Option<&str>,
    place: ExportPlace<'_>,
) -> Result<bool> {
    let backend = conn.get_database_backend();
    let p = |n: usize| if backend == DatabaseBackend::Postgres { format!("${n}") } else { format!("?{n}") };
    let mut values: Vec<Value> = vec![revision.into()];
    let mut conditions = Vec::new();
    if let Some(organization_id) = organization_id {
        values.push(organization_id.into());
        conditions.push(format!("(c.organization_id = {} OR c.organization_id IS NULL)", p(values.len())));
    }
    let (grant_kinds, member_kinds) = (
        format!("({}, {})", ChangeKind::GrantAdded.code(), ChangeKind::GrantRemoved.code()),
        format!("({}, {})", ChangeKind::MemberAdded.code(), ChangeKind::MemberRemoved.code()),
    );
    match place {
        ExportPlace::Beginning => {}
        ExportPlace::Memberships { after: None } => {
            conditions.push(format!("(c.kind IN {grant_kinds} OR c.kind IN {member_kinds})"));
        }
        ExportPlace::Memberships { after: Some((organization, user)) } => {
            values.extend([organization.into(), user.into()]);
            let n = values.len();
            conditions.push(format!(
                "(c.kind IN {grant_kinds} OR (c.kind IN {member_kinds} AND (c.organization_id, c.user_id) > ({}, {})))",
                p(n - 1),
                p(n)
            ));
        }
        ExportPlace::Grants { after: None } => conditions.push(format!("c.kind IN {grant_kinds}")),
        ExportPlace::Grants { after: Some(after) } => {
            values.extend([
                after.organization_id.as_str().into(),
                after.user_id.as_str().into(),
                after.resource_type.as_str().into(),
                after.resource_id.as_str().into(),
                after.permission_id.into(),
            ]);
            let n = values.len();
            conditions.push(format!(
                "c.kind IN {grant_kinds} AND (c.organization_id, c.user_id, c.resource_type, c.resource_id, \
                 c.permission_id) > ({}, {}, {}, {}, {})",
                p(n - 4),
                p(n - 3),
                p(n - 2),
                p(n - 1),
                p(n)
            ));
        }
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let columns = "kind, organization_id, user_id, resource_type, resource_id, permission_id";
    let sql = format!(
        "SELECT 1 AS touched FROM (SELECT {columns} FROM changes WHERE revision > {} \
         UNION ALL SELECT {columns} FROM pending_changes) c {filter} LIMIT 1",
        p(1)
    );
    let found = conn.query_one(Statement::from_sql_and_values(backend, sql, values)).await?;
    Ok(found.is_some())
}
