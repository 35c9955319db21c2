//! Organization rows.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Value,
};

use super::{Lock, entities::organization, insert_missing, json_array, lock, sqlite_time};
use crate::domain::{Result, model::Organization};

fn to_domain(row: organization::Model) -> Organization {
    Organization { id: row.id, display_name: row.display_name, created_at: row.created_at }
}

/// Inserts the organization; `false` when the id is taken.
pub async fn insert(conn: &impl ConnectionTrait, id: &str, display_name: &str, at: DateTime<Utc>) -> Result<bool> {
    let new = Organization { id: id.to_owned(), display_name: display_name.to_owned(), created_at: at };
    Ok(!insert_all(conn, &[new]).await?.is_empty())
}

/// Inserts, in one statement, the organizations whose ids are free (the first of repeated
/// ones); answers the ids it inserted.
pub async fn insert_all(conn: &impl ConnectionTrait, organizations: &[Organization]) -> Result<HashSet<String>> {
    if organizations.is_empty() {
        return Ok(HashSet::new());
    }
    let backend = conn.get_database_backend();
    let rows: (&str, Vec<Value>) = match backend {
        DatabaseBackend::Postgres => (
            "SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])",
            vec![
                organizations.iter().map(|o| o.id.clone()).collect::<Vec<_>>().into(),
                organizations.iter().map(|o| o.display_name.clone()).collect::<Vec<_>>().into(),
                organizations.iter().map(|o| o.created_at).collect::<Vec<_>>().into(),
            ],
        ),
        _ => {
            let listed: Vec<_> =
                organizations.iter().map(|o| (&o.id, &o.display_name, sqlite_time(o.created_at))).collect();
            (
                "SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2 FROM json_each(?1) AS r",
                vec![json_array(&listed)?.into()],
            )
        }
    };
    let statement = insert_missing(backend, "organizations (id, display_name, created_at)", rows, "id", "id");
    let rows = conn.query_all(statement).await?;
    Ok(rows.iter().map(|row| row.try_get::<String>("", "id")).collect::<Result<_, _>>()?)
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
