//! Membership rows. Grant writers lock a user's membership row, which serializes every
//! change to that user's grants in that organization with their removal.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{Expr, Query},
};

use super::{Lock, entities::membership, insert_missing, json_array, lock, sqlite_time};
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
    let new = Membership {
        organization_id: organization_id.to_owned(),
        user_id: user_id.to_owned(),
        added_at,
        added_by: added_by.to_owned(),
    };
    Ok(!insert_all(conn, &[new]).await?.is_empty())
}

/// Inserts, in one statement, the memberships that do not exist yet (the first of
/// repeated ones); answers the `(organization, user)` pairs it inserted.
pub async fn insert_all(conn: &impl ConnectionTrait, memberships: &[Membership]) -> Result<HashSet<(String, String)>> {
    if memberships.is_empty() {
        return Ok(HashSet::new());
    }
    let backend = conn.get_database_backend();
    let rows: (&str, Vec<Value>) = match backend {
        DatabaseBackend::Postgres => (
            "SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[])",
            vec![
                memberships.iter().map(|m| m.organization_id.clone()).collect::<Vec<_>>().into(),
                memberships.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>().into(),
                memberships.iter().map(|m| m.added_at).collect::<Vec<_>>().into(),
                memberships.iter().map(|m| m.added_by.clone()).collect::<Vec<_>>().into(),
            ],
        ),
        _ => {
            let listed: Vec<_> = memberships
                .iter()
                .map(|m| (&m.organization_id, &m.user_id, sqlite_time(m.added_at), &m.added_by))
                .collect();
            (
                "SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3 FROM json_each(?1) AS r",
                vec![json_array(&listed)?.into()],
            )
        }
    };
    let statement = insert_missing(
        backend,
        "memberships (organization_id, user_id, added_at, added_by)",
        rows,
        "organization_id, user_id",
        "organization_id, user_id",
    );
    let rows = conn.query_all(statement).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get::<String>("", "organization_id")?, row.try_get::<String>("", "user_id")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?)
}

/// Which of the `(organization, user)` pairs are memberships, in one statement. Grants
/// reference their membership (a foreign key), so a grant inserted after this read
/// still fails if the membership went meanwhile.
pub async fn existing(conn: &impl ConnectionTrait, pairs: &[(String, String)]) -> Result<HashSet<(String, String)>> {
    if pairs.is_empty() {
        return Ok(HashSet::new());
    }
    let backend = conn.get_database_backend();
    // A probe per pair, so that the plan is an index lookup whatever the list's length.
    let statement = match backend {
        DatabaseBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "SELECT m.organization_id, m.user_id FROM UNNEST($1::text[], $2::text[]) AS w(o, u) \
             CROSS JOIN LATERAL (SELECT organization_id, user_id FROM memberships \
               WHERE organization_id = w.o AND user_id = w.u) m",
            [
                pairs.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>().into(),
                pairs.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>().into(),
            ],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            "SELECT m.organization_id, m.user_id FROM json_each(?1) AS w \
             JOIN memberships m ON m.organization_id = w.value ->> 0 AND m.user_id = w.value ->> 1",
            [json_array(pairs)?.into()],
        ),
    };
    let rows = conn.query_all(statement).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get::<String>("", "organization_id")?, row.try_get::<String>("", "user_id")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?)
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

/// A page of every membership (of one organization when given), ordered by organization
/// and user, after `after`.
pub async fn page(
    conn: &impl ConnectionTrait,
    organization_id: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u64,
) -> Result<Vec<Membership>> {
    let mut query = membership::Entity::find()
        .order_by_asc(membership::Column::OrganizationId)
        .order_by_asc(membership::Column::UserId)
        .limit(limit);
    if let Some(organization_id) = organization_id {
        query = query.filter(membership::Column::OrganizationId.eq(organization_id));
    }
    if let Some((organization_id, user_id)) = after {
        let key = Expr::tuple([
            Expr::col(membership::Column::OrganizationId).into(),
            Expr::col(membership::Column::UserId).into(),
        ]);
        query = query.filter(key.gt(Expr::tuple([organization_id.into(), user_id.into()])));
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
