//! Bulk revocation: delete a selection of grants and record one GrantRemoved event per
//! grant, both inside the database. No removed grant passes through this process, so
//! its memory stays flat whether the selection holds ten grants or a million.

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, FromQueryResult, Statement,
    sea_query::{Alias, Expr, Query},
};

use super::{
    changes::{self, Author},
    entities::grant,
    grants::{self, Selection},
};
use crate::domain::{Error, Result, model::ChangeKind};

/// How many grants a revocation took from one `(organization, resource type, resource id)`.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct RevokedOn {
    pub organization_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub revoked: i64,
}

/// What a revocation did: per resource it touched, how many grants went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    pub per_resource: Vec<RevokedOn>,
}

impl Revoked {
    pub fn count(&self) -> u64 {
        self.per_resource.iter().map(|on| u64::try_from(on.revoked).unwrap_or(0)).sum()
    }
}

/// Revokes every grant of `selection`, appending one event per grant to `author`'s write.
pub async fn revoke(
    conn: &impl ConnectionTrait,
    author: &Author,
    at: DateTime<Utc>,
    selection: &Selection,
) -> Result<Revoked> {
    let per_resource = match conn.get_database_backend() {
        DatabaseBackend::Postgres => revoke_in_one_statement(conn, author, at, selection).await?,
        _ => revoke_under_the_write_lock(conn, author, at, selection).await?,
    };
    let revoked = Revoked { per_resource };
    author.note_appended(revoked.count());
    Ok(revoked)
}

/// PostgreSQL: one statement whose data-modifying CTEs delete and write the events from
/// exactly the rows deleted, so concurrent writers cannot make the two disagree.
async fn revoke_in_one_statement(
    conn: &impl ConnectionTrait,
    author: &Author,
    at: DateTime<Utc>,
    selection: &Selection,
) -> Result<Vec<RevokedOn>> {
    let backend = DatabaseBackend::Postgres;
    let delete = grants::delete_returning_keys(backend, selection)?;
    let others = delete.values.map(|values| values.0).unwrap_or_default();
    let (events, values) = changes::events_from(backend, "deleted", others, author, ChangeKind::GrantRemoved, at);
    let sql = format!(
        "WITH deleted AS ({delete}), appended AS ({events}) \
         SELECT organization_id, resource_type, resource_id, count(*) AS revoked FROM deleted \
         GROUP BY organization_id, resource_type, resource_id",
        delete = delete.sql
    );
    Ok(RevokedOn::find_by_statement(Statement::from_sql_and_values(backend, sql, values)).all(conn).await?)
}

/// SQLite, whose transaction holds the write lock from its first statement (see
/// `tx::lock_for_writing`), so nothing changes between the statements: count what goes per
/// resource, write the events from the selected rows, then delete them.
async fn revoke_under_the_write_lock(
    conn: &impl ConnectionTrait,
    author: &Author,
    at: DateTime<Utc>,
    selection: &Selection,
) -> Result<Vec<RevokedOn>> {
    let backend = DatabaseBackend::Sqlite;
    let condition = selection.condition(backend)?;
    let per_resource = Query::select()
        .columns([grant::Column::OrganizationId, grant::Column::ResourceType, grant::Column::ResourceId])
        .expr_as(Expr::col(grant::Column::PermissionId).count(), Alias::new("revoked"))
        .from(grant::Entity)
        .cond_where(condition.clone())
        .group_by_columns([grant::Column::OrganizationId, grant::Column::ResourceType, grant::Column::ResourceId])
        .to_owned();
    let per_resource = RevokedOn::find_by_statement(backend.build(&per_resource)).all(conn).await?;
    let selected = Query::select()
        .columns([
            grant::Column::OrganizationId,
            grant::Column::UserId,
            grant::Column::PermissionId,
            grant::Column::ResourceType,
            grant::Column::ResourceId,
        ])
        .from(grant::Entity)
        .cond_where(condition.clone())
        .to_owned();
    let selected = backend.build(&selected);
    let others = selected.values.map(|values| values.0).unwrap_or_default();
    let source = format!("({})", selected.sql);
    let (events, values) = changes::events_from(backend, &source, others, author, ChangeKind::GrantRemoved, at);
    let recorded = conn.execute(Statement::from_sql_and_values(backend, events, values)).await?.rows_affected();
    let delete = Query::delete().from_table(grant::Entity).cond_where(condition).to_owned();
    let deleted = conn.execute(backend.build(&delete)).await?.rows_affected();
    if deleted != recorded {
        return Err(Error::Internal(format!("recorded {recorded} revocations but deleted {deleted} grants")));
    }
    Ok(per_resource)
}
