//! The permission catalog.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{OnConflict, Query},
};
use uuid::Uuid;

use super::{Lock, entities::permission, lock};
use crate::domain::{Result, model::Permission};

fn to_domain(row: permission::Model) -> Permission {
    Permission { id: row.id, name: row.name, description: row.description, created_at: row.created_at }
}

/// The catalog entries named by `ids` or `names`, share-locked so that they cannot be
/// deleted before the transaction ends. Unknown ones are simply absent.
pub async fn resolve(conn: &impl ConnectionTrait, ids: &[Uuid], names: &[&str]) -> Result<Vec<Permission>> {
    let named = Condition::any()
        .add(permission::Column::Id.is_in(ids.iter().copied()))
        .add(permission::Column::Name.is_in(names.iter().copied()));
    let select = permission::Entity::find().filter(named);
    Ok(lock::apply(select, Lock::KeyShare).all(conn).await?.into_iter().map(to_domain).collect())
}

/// Inserts the permission; `false` when the name is taken.
pub async fn insert(conn: &impl ConnectionTrait, new: &Permission) -> Result<bool> {
    let insert = Query::insert()
        .into_table(permission::Entity)
        .columns([
            permission::Column::Id,
            permission::Column::Name,
            permission::Column::Description,
            permission::Column::CreatedAt,
        ])
        .values_panic([new.id.into(), new.name.as_str().into(), new.description.as_str().into(), new.created_at.into()])
        .on_conflict(OnConflict::column(permission::Column::Name).do_nothing().to_owned())
        .to_owned();
    let result = conn.execute(conn.get_database_backend().build(&insert)).await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find_by_id(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Permission>> {
    Ok(permission::Entity::find_by_id(id).one(conn).await?.map(to_domain))
}

pub async fn find_by_name(conn: &impl ConnectionTrait, name: &str) -> Result<Option<Permission>> {
    let row = permission::Entity::find().filter(permission::Column::Name.eq(name)).one(conn).await?;
    Ok(row.map(to_domain))
}

/// Whether the permission exists, locked against concurrent grants until the end of the
/// transaction.
pub async fn lock_for_delete(conn: &impl ConnectionTrait, id: Uuid) -> Result<bool> {
    let select = permission::Entity::find_by_id(id).select_only().column(permission::Column::Id);
    Ok(lock::apply(select, Lock::Update).into_tuple::<Uuid>().one(conn).await?.is_some())
}

pub async fn delete(conn: &impl ConnectionTrait, id: Uuid) -> Result<()> {
    permission::Entity::delete_by_id(id).exec(conn).await?;
    Ok(())
}

/// A page of the catalog ordered by name.
pub async fn list(conn: &impl ConnectionTrait, after_name: Option<&str>, limit: u64) -> Result<Vec<Permission>> {
    let mut query = permission::Entity::find().order_by_asc(permission::Column::Name).limit(limit);
    if let Some(after) = after_name {
        query = query.filter(permission::Column::Name.gt(after));
    }
    Ok(query.all(conn).await?.into_iter().map(to_domain).collect())
}
