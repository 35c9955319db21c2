//! Numbering committed events: the sequencing that gives each event of the queue
//! (`pending_changes`) its revision and moves it into `changes`.
//!
//! It locks the one-row revision counter first, moves every committed event of the queue
//! into `changes` with its revision, one write's events together and in their order, and
//! moves the counter past them. Sequencings hold the counter's lock until they commit, so
//! they commit in the order of the revisions they give: a reader that sees revision R sees
//! every revision below R, and a change feed reading "above the last revision I saw"
//! skips nothing, whichever write committed first. On PostgreSQL it runs after the
//! writes it numbers have committed (`changes::sequence_committed`), so that writes never
//! hold the counter; on SQLite, whose writes hold the database's one write lock through
//! their commit anyway, at the end of each shared write transaction (`groups`).

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult, Statement, sea_query::Query,
};
use uuid::Uuid;

use super::entities::revision_counter;
use crate::domain::{Error, Result, Revision};

/// The latest revision given: every change up to it has committed and is visible.
pub async fn current_revision(conn: &impl ConnectionTrait) -> Result<Revision> {
    revision_counter::Entity::find_by_id(1i16)
        .one(conn)
        .await?
        .map(|row| row.value)
        .ok_or_else(|| Error::Internal("revision counter row is missing".into()))
}

/// What one sequencing transaction numbered.
#[derive(Debug, Clone, Default)]
pub struct Sequenced {
    /// The counter after it: the latest revision given.
    pub revision: Revision,
    /// Each write it numbered, with the revision of its last event.
    pub writes: Vec<(Uuid, Revision)>,
}

impl Sequenced {
    /// The revision of `write_id`'s last event, when this numbered it.
    pub fn revision_of(&self, write_id: Uuid) -> Option<Revision> {
        self.writes.iter().find(|(id, _)| *id == write_id).map(|(_, last)| *last)
    }
}

/// A write the sequencer numbered, with the revision of its last event.
#[derive(Debug, FromQueryResult)]
struct Numbered {
    write_id: Uuid,
    last: Revision,
}

/// The statement that numbers the queue on PostgreSQL: one statement, so one snapshot
/// and, outside a transaction, a transaction by itself. It locks the counter first
/// (`counter`, which every other part reads: after waiting for another sequencing, it
/// reads the counter that one left), moves exactly the events it numbers (events another
/// sequencing moved meanwhile are gone when its lock is released, and a DELETE skips rows
/// deleted under it; a write that commits meanwhile waits whole for the next
/// sequencing), and moves the counter past them. Answers the counter before it, with each
/// write's last revision (no write when nothing waited).
const POSTGRES_SEQUENCE: &str = "WITH counter AS (SELECT value FROM revision_counter WHERE id = 1 FOR UPDATE), \
     moved AS (DELETE FROM pending_changes RETURNING *), \
     numbered AS (SELECT grouped.*, row_number() OVER (ORDER BY first_id, id) AS ordinal \
       FROM (SELECT moved.*, min(id) OVER (PARTITION BY write_id) AS first_id FROM moved) AS grouped), \
     inserted AS (INSERT INTO changes (revision, write_id, kind, actor, request_id, at, organization_id, user_id, \
         permission_id, resource_type, resource_id) \
       SELECT counter.value + ordinal, write_id, kind, actor, request_id, at, organization_id, user_id, \
         permission_id, resource_type, resource_id FROM numbered CROSS JOIN counter ORDER BY ordinal \
       RETURNING write_id, revision), \
     bumped AS (UPDATE revision_counter SET value = counter.value + (SELECT count(*) FROM numbered) FROM counter \
       WHERE revision_counter.id = 1 AND EXISTS (SELECT 1 FROM numbered)) \
     SELECT counter.value AS before, writes.write_id, writes.last FROM counter \
       LEFT JOIN (SELECT write_id, max(revision) AS last FROM inserted GROUP BY write_id) AS writes ON true";

/// The same on SQLite, where a DELETE cannot feed an INSERT: there the sequencing
/// transaction holds the database's write lock, so nothing commits between its statements.
const SQLITE_SEQUENCE: [&str; 3] = [
    "INSERT INTO changes (revision, write_id, kind, actor, request_id, at, organization_id, user_id, \
       permission_id, resource_type, resource_id) \
     SELECT ?1 + row_number() OVER (ORDER BY first_id, id), write_id, kind, actor, request_id, at, organization_id, \
       user_id, permission_id, resource_type, resource_id \
     FROM (SELECT pending_changes.*, min(id) OVER (PARTITION BY write_id) AS first_id FROM pending_changes) \
     ORDER BY first_id, id",
    // Named, or SQLite may walk all of idx_changes_write, already grouped by write.
    "SELECT write_id, max(revision) AS last FROM changes INDEXED BY idx_changes_revision \
     WHERE revision > ?1 GROUP BY write_id",
    "DELETE FROM pending_changes",
];

/// A row of [`POSTGRES_SEQUENCE`]'s answer.
#[derive(Debug, FromQueryResult)]
struct NumberedFrom {
    before: Revision,
    write_id: Option<Uuid>,
    last: Option<Revision>,
}

/// Numbers every committed event of the queue, after the counter, and moves the counter
/// past them. On PostgreSQL it runs after the writes it numbers have committed, as a
/// transaction of its own (`changes::sequence_committed`), or inside a write that changed
/// nothing; on SQLite at the end of every write transaction (`groups`), which numbers its
/// own writes' events with whatever else waits. The counter's row lock, taken first,
/// keeps sequencings one at a time, and what comes after it sees every write committed
/// before.
///
/// Writes go in the order of their first event, each write's events together and in the
/// order it appended them. Queue ids are drawn when an event is inserted, so a write that
/// saw another's committed grant (it waited for its lock, or found it held) drew its ids
/// after that one's and is numbered after it: its answer covers what it saw.
pub async fn sequence(conn: &impl ConnectionTrait) -> Result<Sequenced> {
    let backend = conn.get_database_backend();
    let (before, numbered) = match backend {
        DatabaseBackend::Postgres => {
            let rows =
                NumberedFrom::find_by_statement(Statement::from_string(backend, POSTGRES_SEQUENCE)).all(conn).await?;
            let before = rows
                .first()
                .map(|row| row.before)
                .ok_or_else(|| Error::Internal("revision counter row is missing".into()))?;
            let numbered = rows
                .into_iter()
                .filter_map(|row| Some(Numbered { write_id: row.write_id?, last: row.last? }))
                .collect::<Vec<_>>();
            (before, numbered)
        }
        _ => sqlite_sequence(conn).await?,
    };
    let revision = numbered.iter().map(|write| write.last).max().unwrap_or(before);
    Ok(Sequenced { revision, writes: numbered.into_iter().map(|write| (write.write_id, write.last)).collect() })
}

/// [`sequence`] on SQLite: the transaction holds the database's write lock, so nothing
/// commits between its statements. Answers the counter before it and what it numbered.
async fn sqlite_sequence(conn: &impl ConnectionTrait) -> Result<(Revision, Vec<Numbered>)> {
    let backend = conn.get_database_backend();
    let before = current_revision(conn).await?;
    let [insert, select, delete] = SQLITE_SEQUENCE;
    let moved = conn.execute(Statement::from_sql_and_values(backend, insert, [before.into()])).await?;
    if moved.rows_affected() == 0 {
        // Nothing waited (a write that changed nothing numbers too): nothing to read or delete.
        return Ok((before, Vec::new()));
    }
    let numbered =
        Numbered::find_by_statement(Statement::from_sql_and_values(backend, select, [before.into()])).all(conn).await?;
    conn.execute(Statement::from_string(backend, delete)).await?;
    if let Some(last) = numbered.iter().map(|write| write.last).max() {
        let bump = Query::update()
            .table(revision_counter::Entity)
            .value(revision_counter::Column::Value, last)
            .and_where(revision_counter::Column::Id.eq(1))
            .to_owned();
        conn.execute(backend.build(&bump)).await?;
    }
    Ok((before, numbered))
}
