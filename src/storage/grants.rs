//! Grant rows: batch inserts and deletes, the paged list, and
//! selections of many grants for bulk revocation.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
    Statement, Value,
    sea_query::{Alias, Expr, IntoColumnRef, Query, SelectStatement, SimpleExpr},
};
use uuid::Uuid;

use super::{
    entities::{grant, permission},
    insert_missing, json_array, json_ids, sqlite_time,
};
use crate::domain::{Result, model::Grant};

/// The organization and user a batch of grant changes is about, and the resource.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
}

impl Target<'_> {
    /// The grant of `permission_id` on this target.
    pub fn key(&self, permission_id: Uuid) -> GrantKey {
        GrantKey {
            organization_id: self.organization_id.to_owned(),
            user_id: self.user_id.to_owned(),
            resource_type: self.resource_type.to_owned(),
            resource_id: self.resource_id.to_owned(),
            permission_id,
        }
    }

    fn condition(&self) -> Condition {
        Condition::all()
            .add(grant::Column::OrganizationId.eq(self.organization_id))
            .add(grant::Column::UserId.eq(self.user_id))
            .add(grant::Column::ResourceType.eq(self.resource_type))
            .add(grant::Column::ResourceId.eq(self.resource_id))
    }
}

/// A set of grants to revoke in bulk, described by where they live.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Everything a user holds in an organization.
    UserInOrganization { organization_id: String, user_id: String },
    /// Everything in an organization.
    Organization { organization_id: String },
    /// Every grant of one permission.
    Permission { permission_id: Uuid },
    /// The listed permissions of one user on one resource.
    Listed {
        organization_id: String,
        user_id: String,
        resource_type: String,
        resource_id: String,
        permission_ids: Vec<Uuid>,
    },
    /// Everything on the listed `(organization, type, id)` resources, of one user or of all.
    Resources { user_id: Option<String>, resources: Vec<(String, String, String)> },
}

impl Selection {
    pub(super) fn condition(&self, backend: DatabaseBackend) -> Result<Condition> {
        Ok(match self {
            Selection::UserInOrganization { organization_id, user_id } => Condition::all()
                .add(grant::Column::OrganizationId.eq(organization_id.as_str()))
                .add(grant::Column::UserId.eq(user_id.as_str())),
            Selection::Organization { organization_id } => {
                Condition::all().add(grant::Column::OrganizationId.eq(organization_id.as_str()))
            }
            Selection::Permission { permission_id } => {
                Condition::all().add(grant::Column::PermissionId.eq(*permission_id))
            }
            Selection::Listed { organization_id, user_id, resource_type, resource_id, permission_ids } => {
                Target { organization_id, user_id, resource_type, resource_id }
                    .condition()
                    .add(permission_id_listed(backend, permission_ids)?)
            }
            Selection::Resources { user_id, resources } => {
                let on_resources = Expr::tuple([
                    Expr::col(grant::Column::OrganizationId).into(),
                    Expr::col(grant::Column::ResourceType).into(),
                    Expr::col(grant::Column::ResourceId).into(),
                ])
                .in_tuples(resources.iter().cloned());
                let condition = Condition::all().add(on_resources);
                match user_id {
                    Some(user_id) => condition.add(grant::Column::UserId.eq(user_id.as_str())),
                    None => condition,
                }
            }
        })
    }
}

/// `permission_id` is one of `ids`, the list as one parameter so that the statement text
/// is the same for any number of ids.
fn permission_id_listed(backend: DatabaseBackend, ids: &[Uuid]) -> Result<SimpleExpr> {
    Ok(match backend {
        DatabaseBackend::Postgres => Expr::cust_with_values("permission_id = ANY($1::uuid[])", [ids.to_vec()]),
        _ => Expr::cust_with_values("permission_id IN (SELECT unhex(value) FROM json_each(?))", [json_ids(ids)?]),
    })
}

/// A grant to insert: where it lives, and when and by whom it was made.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub key: GrantKey,
    pub granted_at: DateTime<Utc>,
    pub granted_by: String,
}

/// The statement inserting `grants`, keeping rows that already exist (and the first of
/// repeated ones), returning the keys of the rows it inserted; `additions::insert` runs it.
///
/// The rows travel as one parameter per column (PostgreSQL: arrays, `UNNEST`; SQLite: one
/// JSON array, `json_each`), so the statement text is the same for every batch size: it
/// stays in the prepared-statement cache and never meets a parameter limit.
pub(super) fn insert_statement(backend: DatabaseBackend, grants: &[NewGrant]) -> Result<Statement> {
    let rows: (&str, Vec<Value>) = match backend {
        DatabaseBackend::Postgres => {
            let text = |f: fn(&NewGrant) -> &str| grants.iter().map(|g| f(g).to_owned()).collect::<Vec<_>>();
            (
                "SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::timestamptz[], \
                 $7::text[])",
                vec![
                    text(|g| &g.key.organization_id).into(),
                    text(|g| &g.key.user_id).into(),
                    text(|g| &g.key.resource_type).into(),
                    text(|g| &g.key.resource_id).into(),
                    grants.iter().map(|g| g.key.permission_id).collect::<Vec<_>>().into(),
                    grants.iter().map(|g| g.granted_at).collect::<Vec<_>>().into(),
                    text(|g| &g.granted_by).into(),
                ],
            )
        }
        _ => {
            let listed: Vec<_> = grants
                .iter()
                .map(|g| {
                    let k = &g.key;
                    let id = k.permission_id.simple().to_string();
                    (
                        &k.organization_id,
                        &k.user_id,
                        &k.resource_type,
                        &k.resource_id,
                        id,
                        sqlite_time(g.granted_at),
                        &g.granted_by,
                    )
                })
                .collect();
            (
                "SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, unhex(r.value ->> 4), \
                 r.value ->> 5, r.value ->> 6 FROM json_each(?1) AS r",
                vec![json_array(&listed)?.into()],
            )
        }
    };
    Ok(insert_missing(
        backend,
        "grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by)",
        rows,
        "organization_id, user_id, resource_type, resource_id, permission_id",
        "organization_id, user_id, resource_type, resource_id, permission_id",
    ))
}

/// Whether the selection holds any grant.
pub async fn any(conn: &impl ConnectionTrait, selection: &Selection) -> Result<bool> {
    let found = grant::Entity::find()
        .select_only()
        .column(grant::Column::PermissionId)
        .filter(selection.condition(conn.get_database_backend())?)
        .limit(1)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(found.is_some())
}

/// The identity of a grant, as a revocation event records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, FromQueryResult)]
pub struct GrantKey {
    pub organization_id: String,
    pub user_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub permission_id: Uuid,
}

/// Deletes every grant of the selection in one statement and answers exactly the rows it
/// deleted, so the change log records what happened even when others write alongside.
pub async fn delete(conn: &impl ConnectionTrait, selection: &Selection) -> Result<Vec<GrantKey>> {
    let backend = conn.get_database_backend();
    let keys = GrantKey::find_by_statement(delete_returning_keys(backend, selection)?).all(conn).await?;
    Ok(keys)
}

/// `DELETE ... RETURNING` the [`GrantKey`] columns of every grant of the selection.
pub(super) fn delete_returning_keys(backend: DatabaseBackend, selection: &Selection) -> Result<Statement> {
    let delete = Query::delete()
        .from_table(grant::Entity)
        .cond_where(selection.condition(backend)?)
        .returning(Query::returning().columns([
            grant::Column::OrganizationId,
            grant::Column::UserId,
            grant::Column::ResourceType,
            grant::Column::ResourceId,
            grant::Column::PermissionId,
        ]))
        .to_owned();
    Ok(backend.build(&delete))
}

#[derive(Debug, FromQueryResult)]
struct GrantRow {
    organization_id: String,
    user_id: String,
    resource_type: String,
    resource_id: String,
    permission_id: Uuid,
    granted_at: DateTime<Utc>,
    granted_by: String,
    permission_name: String,
}

impl From<GrantRow> for Grant {
    fn from(row: GrantRow) -> Self {
        Grant {
            organization_id: row.organization_id,
            user_id: row.user_id,
            permission_id: row.permission_id,
            permission_name: row.permission_name,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            granted_at: row.granted_at,
            granted_by: row.granted_by,
        }
    }
}

fn grants_with_names() -> SelectStatement {
    Query::select()
        .columns([
            (grant::Entity, grant::Column::OrganizationId),
            (grant::Entity, grant::Column::UserId),
            (grant::Entity, grant::Column::ResourceType),
            (grant::Entity, grant::Column::ResourceId),
            (grant::Entity, grant::Column::PermissionId),
            (grant::Entity, grant::Column::GrantedAt),
            (grant::Entity, grant::Column::GrantedBy),
        ])
        .expr_as(Expr::col((permission::Entity, permission::Column::Name)), Alias::new("permission_name"))
        .from(grant::Entity)
        .inner_join(
            permission::Entity,
            Expr::col((permission::Entity, permission::Column::Id))
                .equals((grant::Entity, grant::Column::PermissionId)),
        )
        .to_owned()
}

fn g(column: grant::Column) -> SimpleExpr {
    Expr::col((grant::Entity, column).into_column_ref()).into()
}

/// Filter of a grant list: a resource type, optionally one resource of it.
#[derive(Debug, Clone)]
pub struct ResourceFilter {
    pub resource_type: String,
    pub resource_id: Option<String>,
}

/// A page of a user's grants in an organization, ordered by (type, id, permission id).
pub async fn list(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    filter: Option<&ResourceFilter>,
    after: Option<(String, String, Uuid)>,
    limit: u64,
) -> Result<Vec<Grant>> {
    let mut query = grants_with_names()
        .and_where(g(grant::Column::OrganizationId).eq(organization_id))
        .and_where(g(grant::Column::UserId).eq(user_id))
        .order_by((grant::Entity, grant::Column::ResourceType), sea_orm::Order::Asc)
        .order_by((grant::Entity, grant::Column::ResourceId), sea_orm::Order::Asc)
        .order_by((grant::Entity, grant::Column::PermissionId), sea_orm::Order::Asc)
        .limit(limit)
        .to_owned();
    if let Some(filter) = filter {
        query.and_where(g(grant::Column::ResourceType).eq(filter.resource_type.as_str()));
        if let Some(resource_id) = &filter.resource_id {
            query.and_where(g(grant::Column::ResourceId).eq(resource_id.as_str()));
        }
    }
    if let Some((resource_type, resource_id, permission_id)) = after {
        let key =
            Expr::tuple([g(grant::Column::ResourceType), g(grant::Column::ResourceId), g(grant::Column::PermissionId)]);
        let cursor = Expr::tuple([resource_type.into(), resource_id.into(), permission_id.into()]);
        query.and_where(key.gt(cursor));
    }
    let rows = GrantRow::find_by_statement(conn.get_database_backend().build(&query)).all(conn).await?;
    Ok(rows.into_iter().map(Grant::from).collect())
}

/// A page of every grant (of one organization when given), permission names included,
/// in key order (organization, user, resource type, resource id, permission id), after
/// `after`.
pub async fn page(
    conn: &impl ConnectionTrait,
    organization_id: Option<&str>,
    after: Option<&GrantKey>,
    limit: u64,
) -> Result<Vec<Grant>> {
    let mut query = grants_with_names();
    for column in [
        grant::Column::OrganizationId,
        grant::Column::UserId,
        grant::Column::ResourceType,
        grant::Column::ResourceId,
        grant::Column::PermissionId,
    ] {
        query.order_by((grant::Entity, column), sea_orm::Order::Asc);
    }
    query.limit(limit);
    if let Some(organization_id) = organization_id {
        query.and_where(g(grant::Column::OrganizationId).eq(organization_id));
    }
    if let Some(after) = after {
        let key = Expr::tuple([
            g(grant::Column::OrganizationId),
            g(grant::Column::UserId),
            g(grant::Column::ResourceType),
            g(grant::Column::ResourceId),
            g(grant::Column::PermissionId),
        ]);
        let cursor = Expr::tuple([
            after.organization_id.as_str().into(),
            after.user_id.as_str().into(),
            after.resource_type.as_str().into(),
            after.resource_id.as_str().into(),
            after.permission_id.into(),
        ]);
        query.and_where(key.gt(cursor));
    }
    let rows = GrantRow::find_by_statement(conn.get_database_backend().build(&query)).all(conn).await?;
    Ok(rows.into_iter().map(Grant::from).collect())
}

/// Whether `user_id` holds any of the permissions named `names` org-wide in the
/// organization. The grant rows found are key-share-locked, so revoking them waits for
/// the calling transaction to end.
pub async fn holds_org_wide(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    names: &[&str],
) -> Result<bool> {
    let query = grants_with_names()
        .and_where(g(grant::Column::OrganizationId).eq(organization_id))
        .and_where(g(grant::Column::UserId).eq(user_id))
        .and_where(g(grant::Column::ResourceType).eq(crate::domain::ResourceType::ORGANIZATION))
        .and_where(g(grant::Column::ResourceId).eq(organization_id))
        .and_where(Expr::col((permission::Entity, permission::Column::Name)).is_in(names.iter().copied()))
        // Only the grant rows: every write of a delegate reads the same catalog row, and
        // share-locking it from every concurrent transaction would queue them on it.
        .lock_with_tables(sea_orm::sea_query::LockType::KeyShare, [grant::Entity])
        .to_owned();
    let rows = GrantRow::find_by_statement(conn.get_database_backend().build(&query)).all(conn).await?;
    Ok(!rows.is_empty())
}

/// Which of `permission_ids` the user holds org-wide or on `target`'s resource.
pub async fn held_here_or_org_wide(
    conn: &impl ConnectionTrait,
    target: Target<'_>,
    permission_ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    let on_resource = Condition::all()
        .add(grant::Column::ResourceType.eq(target.resource_type))
        .add(grant::Column::ResourceId.eq(target.resource_id));
    let org_wide = Condition::all()
        .add(grant::Column::ResourceType.eq(crate::domain::ResourceType::ORGANIZATION))
        .add(grant::Column::ResourceId.eq(target.organization_id));
    let ids = grant::Entity::find()
        .select_only()
        .column(grant::Column::PermissionId)
        .filter(grant::Column::OrganizationId.eq(target.organization_id))
        .filter(grant::Column::UserId.eq(target.user_id))
        .filter(permission_id_listed(conn.get_database_backend(), permission_ids)?)
        .filter(Condition::any().add(on_resource).add(org_wide))
        .distinct()
        .into_tuple::<Uuid>()
        .all(conn)
        .await?;
    Ok(ids)
}
