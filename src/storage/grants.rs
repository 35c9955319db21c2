//! Grant rows: batch inserts and deletes, the check lookup, the paged list, and
//! selections of many grants for bulk revocation.

use std::{collections::HashSet, sync::OnceLock};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
    Statement, Value,
    sea_query::{Alias, Expr, IntoColumnRef, Query, SelectStatement, SimpleExpr},
};
use uuid::Uuid;

use super::{
    ReadConnections,
    entities::{grant, permission},
};
use crate::domain::{Error, Result, Revision, model::Grant};

/// The organization and user a batch of grant changes is about, and the resource.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
}

impl Target<'_> {
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
    fn condition(&self) -> Condition {
        match self {
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
                    .add(grant::Column::PermissionId.is_in(permission_ids.iter().copied()))
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
        }
    }
}

/// Inserts one grant per permission in one statement, keeping rows that already exist;
/// answers the permissions it inserted, in `permission_ids` order.
///
/// On PostgreSQL the ids travel as one array (`UNNEST`), so the statement text is the
/// same for every batch size: it stays in the prepared-statement cache and never meets
/// the 65,535-parameter limit.
pub async fn insert(
    conn: &impl ConnectionTrait,
    target: Target<'_>,
    permission_ids: &[Uuid],
    granted_at: DateTime<Utc>,
    granted_by: &str,
) -> Result<Vec<Uuid>> {
    if permission_ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    let statement = match backend {
        DatabaseBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "INSERT INTO grants \
             (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
             SELECT $1, $2, $3, $4, permission_id, $5, $6 FROM UNNEST($7::uuid[]) AS listed(permission_id) \
             ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING \
             RETURNING permission_id",
            [
                target.organization_id.into(),
                target.user_id.into(),
                target.resource_type.into(),
                target.resource_id.into(),
                granted_at.into(),
                granted_by.into(),
                permission_ids.to_vec().into(),
            ],
        ),
        _ => {
            let mut insert = Query::insert();
            insert.into_table(grant::Entity).columns([
                grant::Column::OrganizationId,
                grant::Column::UserId,
                grant::Column::ResourceType,
                grant::Column::ResourceId,
                grant::Column::PermissionId,
                grant::Column::GrantedAt,
                grant::Column::GrantedBy,
            ]);
            for permission_id in permission_ids {
                insert.values_panic([
                    target.organization_id.into(),
                    target.user_id.into(),
                    target.resource_type.into(),
                    target.resource_id.into(),
                    (*permission_id).into(),
                    granted_at.into(),
                    granted_by.into(),
                ]);
            }
            insert.on_conflict(
                sea_orm::sea_query::OnConflict::columns([
                    grant::Column::OrganizationId,
                    grant::Column::UserId,
                    grant::Column::ResourceType,
                    grant::Column::ResourceId,
                    grant::Column::PermissionId,
                ])
                .do_nothing()
                .to_owned(),
            );
            insert.returning_col(grant::Column::PermissionId);
            backend.build(&insert)
        }
    };
    let rows = conn.query_all(statement).await?;
    let inserted =
        rows.iter().map(|row| row.try_get::<Uuid>("", "permission_id")).collect::<Result<HashSet<_>, _>>()?;
    Ok(permission_ids.iter().copied().filter(|id| inserted.contains(id)).collect())
}

/// Whether the selection holds any grant.
pub async fn any(conn: &impl ConnectionTrait, selection: &Selection) -> Result<bool> {
    let found = grant::Entity::find()
        .select_only()
        .column(grant::Column::PermissionId)
        .filter(selection.condition())
        .limit(1)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(found.is_some())
}

/// The identity of a grant, as a revocation event records it.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
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
    let delete = Query::delete()
        .from_table(grant::Entity)
        .cond_where(selection.condition())
        .returning(Query::returning().columns([
            grant::Column::OrganizationId,
            grant::Column::UserId,
            grant::Column::ResourceType,
            grant::Column::ResourceId,
            grant::Column::PermissionId,
        ]))
        .to_owned();
    let keys = GrantKey::find_by_statement(conn.get_database_backend().build(&delete)).all(conn).await?;
    Ok(keys)
}

/// How the permission of a check is named.
#[derive(Debug, Clone)]
pub enum PermissionKey {
    Id(Uuid),
    Name(String),
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

/// Everything a check reads, from one statement and so from one snapshot.
#[derive(Debug)]
pub struct CheckRead {
    /// The latest committed revision the answer reflects.
    pub revision: Revision,
    /// The grant that allows it: one on the resource itself, else an org-wide one.
    pub matched: Option<Grant>,
    pub organization_exists: bool,
    pub permission_exists: bool,
}

#[derive(Debug, FromQueryResult)]
struct CheckRow {
    revision: Revision,
    organization_found: Option<String>,
    permission_found: Option<Uuid>,
    permission_name: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    granted_at: Option<DateTime<Utc>>,
    granted_by: Option<String>,
}

/// A check in one round trip and one snapshot: the revision counter, left-joined with the
/// organization, the permission, the grant on the resource and the org-wide grant. The
/// grant joins name all five columns of the primary key, the permission id as a scalar
/// (`{permission_id}`: `$5`, or the id of the permission looked up by name once, in
/// `wanted`), so each is an exact index probe however many grants exist; joined on
/// `permissions.id` instead, PostgreSQL probed only a prefix and filtered. The resource's
/// own grant wins over an org-wide one: it is the more specific answer. $1-$6 are the
/// organization, the user, the resource type and id, the permission, and the org-wide
/// resource type.
///
/// Written out rather than built with sea-query: this is the hottest statement, and
/// building it took about 4% of grantd's CPU time under a check load (perf).
const CHECK_SQL: &str = "{wanted}SELECT revision_counter.value AS revision, organizations.id AS organization_found, \
     permissions.id AS permission_found, permissions.name AS permission_name, \
     COALESCE(on_resource.resource_type, org_wide.resource_type) AS resource_type, \
     COALESCE(on_resource.resource_id, org_wide.resource_id) AS resource_id, \
     COALESCE(on_resource.granted_at, org_wide.granted_at) AS granted_at, \
     COALESCE(on_resource.granted_by, org_wide.granted_by) AS granted_by \
     FROM revision_counter \
     LEFT JOIN organizations ON organizations.id = $1 \
     LEFT JOIN {permissions} \
     LEFT JOIN grants AS on_resource ON on_resource.organization_id = $1 AND on_resource.user_id = $2 \
       AND on_resource.resource_type = $3 AND on_resource.resource_id = $4 \
       AND on_resource.permission_id = {permission_id} \
     LEFT JOIN grants AS org_wide ON org_wide.organization_id = $1 AND org_wide.user_id = $2 \
       AND org_wide.resource_type = $6 AND org_wide.resource_id = $1 \
       AND org_wide.permission_id = {permission_id} \
     WHERE revision_counter.id = 1";

/// By name on PostgreSQL, the permission is looked up once: written as a subquery in
/// each grant join, the generic plan of the prepared statement ran it twice more, and
/// pgbench ran the statement about 50% faster with one lookup than with three (16 clients).
const BY_NAME: [(&str, &str); 3] = [
    ("{wanted}", "WITH wanted AS MATERIALIZED (SELECT id, name FROM permissions WHERE name = $5) "),
    ("{permissions}", "wanted AS permissions ON true"),
    ("{permission_id}", "(SELECT id FROM wanted)"),
];
/// SQLite runs an uncorrelated subquery once per statement anyway, and the materialized
/// table cost it about 10% of its checks per second.
const BY_NAME_SQLITE: [(&str, &str); 3] = [
    ("{wanted}", ""),
    ("{permissions}", "permissions ON permissions.name = $5"),
    ("{permission_id}", "(SELECT id FROM permissions WHERE name = $5)"),
];
const BY_ID: [(&str, &str); 3] =
    [("{wanted}", ""), ("{permissions}", "permissions ON permissions.id = $5"), ("{permission_id}", "$5")];

/// [`CHECK_SQL`] for a backend and a kind of permission key, made once: SQLite numbers
/// its parameters `?1`, PostgreSQL `$1`.
fn check_sql(backend: DatabaseBackend, by_id: bool) -> &'static str {
    static TEXTS: OnceLock<[String; 4]> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        let fill =
            |parts: [(&str, &str); 3]| parts.iter().fold(CHECK_SQL.to_owned(), |sql, (at, part)| sql.replace(at, part));
        let by_id = fill(BY_ID);
        [fill(BY_NAME), by_id.clone(), fill(BY_NAME_SQLITE).replace('$', "?"), by_id.replace('$', "?")]
    });
    let index = usize::from(by_id) + if backend == DatabaseBackend::Postgres { 0 } else { 2 };
    &texts[index]
}

pub async fn check(reads: &ReadConnections, target: Target<'_>, permission: &PermissionKey) -> Result<CheckRead> {
    let backend = reads.backend();
    let (by_id, permission_value): (bool, Value) = match permission {
        PermissionKey::Id(id) => (true, (*id).into()),
        PermissionKey::Name(name) => (false, name.as_str().into()),
    };
    let statement = Statement::from_sql_and_values(
        backend,
        check_sql(backend, by_id),
        [
            target.organization_id.into(),
            target.user_id.into(),
            target.resource_type.into(),
            target.resource_id.into(),
            permission_value,
            crate::domain::ResourceType::ORGANIZATION.into(),
        ],
    );
    let row =
        reads.query_one(&statement).await?.ok_or_else(|| Error::Internal("revision counter row is missing".into()))?;
    let row = CheckRow::from_query_result(&row, "")?;
    let matched = match (
        row.permission_found,
        row.permission_name.clone(),
        row.resource_type,
        row.resource_id,
        row.granted_at,
        row.granted_by,
    ) {
        (
            Some(permission_id),
            Some(permission_name),
            Some(resource_type),
            Some(resource_id),
            Some(granted_at),
            Some(granted_by),
        ) => Some(Grant {
            organization_id: target.organization_id.to_owned(),
            user_id: target.user_id.to_owned(),
            permission_id,
            permission_name,
            resource_type,
            resource_id,
            granted_at,
            granted_by,
        }),
        _ => None,
    };
    Ok(CheckRead {
        revision: row.revision,
        matched,
        organization_exists: row.organization_found.is_some(),
        permission_exists: row.permission_found.is_some(),
    })
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
        .lock(sea_orm::sea_query::LockType::KeyShare)
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
        .filter(grant::Column::PermissionId.is_in(permission_ids.iter().copied()))
        .filter(Condition::any().add(on_resource).add(org_wide))
        .distinct()
        .into_tuple::<Uuid>()
        .all(conn)
        .await?;
    Ok(ids)
}
