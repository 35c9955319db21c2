//! The permission catalog.

use std::collections::HashSet;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
};
use uuid::Uuid;

use super::{Lock, entities::permission, insert_missing, json_array, json_ids, lock, sqlite_time};
use crate::domain::{Result, model::Permission};

fn to_domain(row: permission::Model) -> Permission {
    Permission {
        id: row.id,
        name: row.name,
        description: row.description,
        created_at: row.created_at,
        built_in: row.built_in,
    }
}

/// [`resolve`] on SQLite: the ids (as 32 hex digits) and the names, each a JSON array.
const SQLITE_RESOLVE: &str = "SELECT id, name, description, created_at, built_in FROM permissions \
    WHERE id IN (SELECT unhex(value) FROM json_each(?1)) OR name IN (SELECT value FROM json_each(?2))";

/// The catalog entries named by `ids` or `names`; unknown ones are simply absent.
///
/// Not locked: every write of a permission shares its catalog row, and a row lock taken by
/// many transactions at once is a multixact that PostgreSQL writes out for each of them.
/// A grant's insert key-share-locks its permission anyway, through the foreign key; when
/// a deletion got there first, that insert fails with a foreign-key violation, which is
/// retried as a conflict (see `error`), and the next attempt finds the permission gone.
///
/// The lists travel as one parameter each (PostgreSQL: arrays; SQLite: JSON arrays), so
/// the statement text is the same for one permission or a thousand and stays prepared.
pub async fn resolve(conn: &impl ConnectionTrait, ids: &[Uuid], names: &[&str]) -> Result<Vec<Permission>> {
    let backend = conn.get_database_backend();
    let statement = match backend {
        DatabaseBackend::Postgres => Statement::from_sql_and_values(
            backend,
            // Not `id = ANY($1) OR name = ANY($2)`: under a generic plan that filter
            // compares every catalog row with every listed name. Not `p.id IN (SELECT ...)` nor a join of the names
            // with the catalog either: estimating ten rows per array, the generic plan
            // read the whole catalog into a hash. LATERAL
            // probes a key once per listed permission; the name's `LIMIT 1` (names are
            // unique) keeps PostgreSQL from flattening that probe back into such a join.
            "SELECT p.id, p.name, p.description, p.created_at, p.built_in \
             FROM (SELECT wanted FROM unnest($1::uuid[]) AS wanted \
               UNION ALL SELECT named.id FROM unnest($2::text[]) AS wanted(name) \
               CROSS JOIN LATERAL (SELECT id FROM permissions WHERE name = wanted.name LIMIT 1) named) AS listed(id) \
             CROSS JOIN LATERAL (SELECT * FROM permissions WHERE id = listed.id) p",
            [ids.to_vec().into(), names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>().into()],
        ),
        _ => {
            Statement::from_sql_and_values(backend, SQLITE_RESOLVE, [json_ids(ids)?.into(), json_array(names)?.into()])
        }
    };
    let rows = permission::Entity::find().from_raw_sql(statement).all(conn).await?;
    Ok(rows.into_iter().map(to_domain).collect())
}

/// Inserts the permission; `false` when the name is taken.
pub async fn insert(conn: &impl ConnectionTrait, new: &Permission) -> Result<bool> {
    Ok(!insert_all(conn, std::slice::from_ref(new)).await?.is_empty())
}

/// Inserts, in one statement, the permissions whose names are free (the first of
/// repeated ones); answers the ids it inserted.
pub async fn insert_all(conn: &impl ConnectionTrait, permissions: &[Permission]) -> Result<HashSet<Uuid>> {
    if permissions.is_empty() {
        return Ok(HashSet::new());
    }
    let backend = conn.get_database_backend();
    let rows: (&str, Vec<Value>) = match backend {
        DatabaseBackend::Postgres => (
            "SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])",
            vec![
                permissions.iter().map(|p| p.id).collect::<Vec<_>>().into(),
                permissions.iter().map(|p| p.name.clone()).collect::<Vec<_>>().into(),
                permissions.iter().map(|p| p.description.clone()).collect::<Vec<_>>().into(),
                permissions.iter().map(|p| p.created_at).collect::<Vec<_>>().into(),
            ],
        ),
        _ => {
            let listed: Vec<_> = permissions
                .iter()
                .map(|p| (p.id.simple().to_string(), &p.name, &p.description, sqlite_time(p.created_at)))
                .collect();
            (
                "SELECT unhex(r.value ->> 0), r.value ->> 1, r.value ->> 2, r.value ->> 3 FROM json_each(?1) AS r",
                vec![json_array(&listed)?.into()],
            )
        }
    };
    let statement = insert_missing(backend, "permissions (id, name, description, created_at)", rows, "name", "id");
    let rows = conn.query_all(statement).await?;
    Ok(rows.iter().map(|row| row.try_get::<Uuid>("", "id")).collect::<Result<_, _>>()?)
}

pub async fn find_by_id(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Permission>> {
    Ok(permission::Entity::find_by_id(id).one(conn).await?.map(to_domain))
}

pub async fn find_by_name(conn: &impl ConnectionTrait, name: &str) -> Result<Option<Permission>> {
    let row = permission::Entity::find().filter(permission::Column::Name.eq(name)).one(conn).await?;
    Ok(row.map(to_domain))
}

/// Whether the permission is built in; none when it does not exist. Locked against
/// concurrent grants until the end of the transaction.
pub async fn lock_for_delete(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<bool>> {
    let select = permission::Entity::find_by_id(id).select_only().column(permission::Column::BuiltIn);
    Ok(lock::apply(select, Lock::Update).into_tuple::<bool>().one(conn).await?)
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
