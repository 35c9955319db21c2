//! Adding grants: insert the ones not held yet and record one GrantAdded event per grant
//! inserted, so that no grant row is ever written without its event.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, FromQueryResult, Statement};

use super::{
    changes::{self, Author, NewChange},
    grants::{self, GrantKey, NewGrant},
};
use crate::domain::{Result, model::ChangeKind};

/// Inserts the grants, keeping rows that already exist (and the first of repeated ones),
/// and appends `author`'s `GrantAdded` event, at `at`, for each one inserted; answers the
/// keys it inserted. One statement on PostgreSQL, whose events are written from the rows
/// the insert returns, in the order it returns them (as bulk revocations write theirs
/// from the rows they delete); two on SQLite, which has no data-modifying CTEs, with the
/// events in the order of `grants`.
pub async fn insert(
    conn: &impl ConnectionTrait,
    grants: &[NewGrant],
    author: &Author,
    at: DateTime<Utc>,
) -> Result<HashSet<GrantKey>> {
    if grants.is_empty() {
        return Ok(HashSet::new());
    }
    let backend = conn.get_database_backend();
    let insert = grants::insert_statement(backend, grants)?;
    if backend == DatabaseBackend::Postgres {
        let others = insert.values.map(|values| values.0).unwrap_or_default();
        let (events, values) = changes::events_from(backend, "inserted", others, author, ChangeKind::GrantAdded, at);
        let sql = format!("WITH inserted AS ({}), appended AS ({events}) SELECT * FROM inserted", insert.sql);
        let inserted: HashSet<GrantKey> =
            GrantKey::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
                .all(conn)
                .await?
                .into_iter()
                .collect();
        author.note_appended(inserted.len() as u64);
        return Ok(inserted);
    }
    let inserted: HashSet<GrantKey> = GrantKey::find_by_statement(insert).all(conn).await?.into_iter().collect();
    let events = grants
        .iter()
        .filter(|grant| inserted.contains(&grant.key))
        .map(|grant| NewChange::grant(ChangeKind::GrantAdded, grant.key.clone()))
        .collect();
    changes::append(conn, author, at, events).await?;
    Ok(inserted)
}
