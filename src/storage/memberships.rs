//! Membership rows. Grant writers lock a user's membership row, which serializes every
//! change to that user's grants in that organization with their removal.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{OnConflict, Query},
};

use super::{Lock, entities::membership, lock};
use crate::domain::{Result, model::Membership};

fn to_domain(row: membership::Model) -> Membership {
    Membership {
        organization_id: row.organization_id,
        user_id: row.user_id,
        added_at: row.added_at,
        added_by: row.added_by,
    }
}

/// Whether the user is a member, locking the membership row as asked.
pub async fn lock(conn: &impl ConnectionTrait, organization_id: &str, user_id: &str, mode: Lock) -> Result<bool> {
    let select = membership::Entity::find_by_id((organization_id.to_owned(), user_id.to_owned()))
        .select_only()
        .column(membership::Column::UserId);
    let found = lock::apply(select, mode).into_tuple::<String>().one(conn).await?;
    Ok(found.is_some())
}

/// Locks every membership of the organization, so no grant of its members changes
/// until the transaction ends; answers how many there are.
pub async fn lock_all(conn: &impl ConnectionTrait, organization_id: &str) -> Result<usize> {
    let select = membership::Entity::find()
        .select_only()
        .column(membership::Column::UserId)
        .filter(membership::Column::OrganizationId.eq(organization_id));
    Ok(lock::apply(select, Lock::Update).into_tuple::<String>().all(conn).await?.len())
}

/// Inserts the membership; `false` when it already existed.
pub async fn insert(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    added_at: DateTime<Utc>,
    added_by: &str,
) -> Result<bool> {
    let insert = Query::insert()
        .into_table(membership::Entity)
        .columns([
            membership::Column::OrganizationId,
            membership::Column::UserId,
            membership::Column::AddedAt,
            membership::Column::AddedBy,
        ])
        .values_panic([organization_id.into(), user_id.into(), added_at.into(), added_by.into()])
        .on_conflict(
            OnConflict::columns([membership::Column::OrganizationId, membership::Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    let result = conn.execute(conn.get_database_backend().build(&insert)).await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find(conn: &impl ConnectionTrait, organization_id: &str, user_id: &str) -> Result<Option<Membership>> {
    let row = membership::Entity::find_by_id((organization_id.to_owned(), user_id.to_owned())).one(conn).await?;
    Ok(row.map(to_domain))
}

pub async fn delete(conn: &impl ConnectionTrait, organization_id: &str, user_id: &str) -> Result<()> {
    membership::Entity::delete_by_id((organization_id.to_owned(), user_id.to_owned())).exec(conn).await?;
    Ok(())
}

/// Deletes every membership of the organization; answers the removed user ids.
pub async fn delete_all(conn: &impl ConnectionTrait, organization_id: &str) -> Result<Vec<String>> {
    let delete = Query::delete()
        .from_table(membership::Entity)
        .and_where(membership::Column::OrganizationId.eq(organization_id))
        .returning_col(membership::Column::UserId)
        .to_owned();
    let rows = conn.query_all(conn.get_database_backend().build(&delete)).await?;
    let user_ids = rows.iter().map(|row| row.try_get::<String>("", "user_id")).collect::<Result<Vec<_>, _>>()?;
    Ok(user_ids)
}

/// A page of the organization's members ordered by user id.
pub async fn list_by_organization(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    after_user: Option<&str>,
    limit: u64,
) -> Result<Vec<Membership>> {
    let mut query = membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .order_by_asc(membership::Column::UserId)
        .limit(limit);
    if let Some(after) = after_user {
        query = query.filter(membership::Column::UserId.gt(after));
    }
    Ok(query.all(conn).await?.into_iter().map(to_domain).collect())
}

/// A page of the user's memberships ordered by organization id, only in `within` when
/// given.
pub async fn list_by_user(
    conn: &impl ConnectionTrait,
    user_id: &str,
    within: Option<&[String]>,
    after_organization: Option<&str>,
    limit: u64,
) -> Result<Vec<Membership>> {
    let mut query = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .order_by_asc(membership::Column::OrganizationId)
        .limit(limit);
    if let Some(organizations) = within {
        query = query.filter(membership::Column::OrganizationId.is_in(organizations.iter().map(String::as_str)));
    }
    if let Some(after) = after_organization {
        query = query.filter(membership::Column::OrganizationId.gt(after));
    }
    Ok(query.all(conn).await?.into_iter().map(to_domain).collect())
}
