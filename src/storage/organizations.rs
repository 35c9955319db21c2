//! Organization rows.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{OnConflict, Query},
};

use super::{Lock, entities::organization, lock};
use crate::domain::{Result, model::Organization};

fn to_domain(row: organization::Model) -> Organization {
    Organization { id: row.id, display_name: row.display_name, created_at: row.created_at }
}

/// Inserts the organization; `false` when the id is taken.
pub async fn insert(conn: &impl ConnectionTrait, id: &str, display_name: &str, at: DateTime<Utc>) -> Result<bool> {
    let insert = Query::insert()
        .into_table(organization::Entity)
        .columns([organization::Column::Id, organization::Column::DisplayName, organization::Column::CreatedAt])
        .values_panic([id.into(), display_name.into(), at.into()])
        .on_conflict(OnConflict::column(organization::Column::Id).do_nothing().to_owned())
        .to_owned();
    let result = conn.execute(conn.get_database_backend().build(&insert)).await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find(conn: &impl ConnectionTrait, id: &str) -> Result<Option<Organization>> {
    Ok(organization::Entity::find_by_id(id).one(conn).await?.map(to_domain))
}

/// Whether the organization exists, locking its row as asked until the transaction ends.
pub async fn lock(conn: &impl ConnectionTrait, id: &str, mode: Lock) -> Result<bool> {
    let select = organization::Entity::find_by_id(id).select_only().column(organization::Column::Id);
    let found = lock::apply(select, mode).into_tuple::<String>().one(conn).await?;
    Ok(found.is_some())
}

/// Which of `ids` do not exist, in the order given.
pub async fn missing(conn: &impl ConnectionTrait, ids: &[&str]) -> Result<Vec<String>> {
    let found: Vec<String> = organization::Entity::find()
        .select_only()
        .column(organization::Column::Id)
        .filter(organization::Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(ids.iter().filter(|id| !found.iter().any(|f| f == *id)).map(|id| (*id).to_owned()).collect())
}

/// A page of organizations ordered by id.
pub async fn list(conn: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<Organization>> {
    let mut query = organization::Entity::find().order_by_asc(organization::Column::Id).limit(limit);
    if let Some(after) = after {
        query = query.filter(organization::Column::Id.gt(after));
    }
    Ok(query.all(conn).await?.into_iter().map(to_domain).collect())
}

pub async fn delete(conn: &impl ConnectionTrait, id: &str) -> Result<()> {
    organization::Entity::delete_by_id(id).exec(conn).await?;
    Ok(())
}
