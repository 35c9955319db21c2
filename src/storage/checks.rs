//! The CheckPermission read: many checks in one statement, and one snapshot.
//!
//! Each check is its permission (by id, or looked up by name), the revision counter, the
//! grant on the resource and the org-wide grant, each an equality on a unique key, so
//! each is an exact index probe however many grants exist (bench/growth.sh prints the
//! plans); the organization is looked up only for a check that no grant answers. The
//! checks travel as one JSON parameter whatever their number, so the statement text
//! never changes and stays prepared, with one plan.
//!
//! Written out rather than built with sea-query: this is the hottest statement, and
//! building it showed in profiles of a check load.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, FromQueryResult, QueryResult, Statement, Value};
use uuid::Uuid;

use super::{connect::pool_limits, error::is_broken_connection, json_array};
use crate::domain::{Error, ResourceType, Result, Revision, model::Grant};

/// How the permission of a check is named.
#[derive(Debug, Clone)]
pub enum PermissionKey {
    Id(Uuid),
    Name(String),
}

impl PermissionKey {
    /// As the statement takes it: the id as 32 hex digits (PostgreSQL reads them as a
    /// uuid, SQLite unhexes them into its 16-byte blob) or the name, and whether it is an id.
    fn as_text(&self) -> (String, bool) {
        match self {
            PermissionKey::Id(id) => (id.simple().to_string(), true),
            PermissionKey::Name(name) => (name.clone(), false),
        }
    }
}

/// One check: does the user hold the permission on the resource, or org-wide?
#[derive(Debug, Clone)]
pub struct Check {
    pub organization_id: String,
    pub user_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub permission: PermissionKey,
}

/// Everything a check reads.
#[derive(Debug, Clone)]
pub struct CheckRead {
    /// The latest committed revision the answer reflects.
    pub revision: Revision,
    /// The grant that allows it: one on the resource itself, else an org-wide one.
    pub matched: Option<Grant>,
    pub organization_exists: bool,
    pub permission_exists: bool,
}

/// The resource's own grant wins over an org-wide one: it is the more specific answer.
/// `wanted` is the list of checks, `position` each one's place in it, from 1.
///
/// A grant found proves its organization exists (grants reference memberships, which
/// reference organizations), so only a check that found none looks the organization up,
/// one key probe. Joined instead, PostgreSQL hashed the whole organizations table for
/// every statement whenever its statistics put it at a few rows (analyzed while it held
/// one organization, it was estimated at one row per page however many it then held).
const COLUMNS: &str = "SELECT wanted.position, revision_counter.value AS revision, \
     COALESCE(on_resource.organization_id, org_wide.organization_id, \
       (SELECT organizations.id FROM organizations WHERE organizations.id = wanted.organization_id)) \
       AS organization_found, \
     CASE WHEN wanted.permission_name IS NOT NULL THEN wanted.permission_id END AS permission_found, \
     wanted.permission_name, \
     COALESCE(on_resource.resource_type, org_wide.resource_type) AS resource_type, \
     COALESCE(on_resource.resource_id, org_wide.resource_id) AS resource_id, \
     COALESCE(on_resource.granted_at, org_wide.granted_at) AS granted_at, \
     COALESCE(on_resource.granted_by, org_wide.granted_by) AS granted_by";

/// After `FROM wanted CROSS JOIN revision_counter`: the probes. The grant probes name all
/// five columns of the primary key, the permission id included, so each is one exact
/// probe. The org-wide grant's resource type comes with each check rather than written
/// in: given as a constant, PostgreSQL's statistics of `resource_type` (few org-wide
/// grants) led it to probe another index and filter every org-wide grant of the
/// organization.
///
/// On PostgreSQL each probe is a LATERAL subquery with `LIMIT 1`, which PostgreSQL cannot
/// pull up into a join: it stays one index probe per check whatever the statistics say.
/// As plain joins, a plan made while `grants` was small (or never analyzed) hashed the
/// whole table for every statement and was kept by the connection as the table grew: 5 to
/// 12 ms a check at 10,000-20,000 grants instead of a fraction of a millisecond.
const POSTGRES_JOINS: &str = "LEFT JOIN LATERAL (SELECT grants.organization_id, grants.resource_type, \
       grants.resource_id, grants.granted_at, grants.granted_by FROM grants \
       WHERE grants.organization_id = wanted.organization_id AND grants.user_id = wanted.user_id \
       AND grants.resource_type = wanted.resource_type AND grants.resource_id = wanted.resource_id \
       AND grants.permission_id = wanted.permission_id LIMIT 1) AS on_resource ON true \
     LEFT JOIN LATERAL (SELECT grants.organization_id, grants.resource_type, \
       grants.resource_id, grants.granted_at, grants.granted_by FROM grants \
       WHERE grants.organization_id = wanted.organization_id AND grants.user_id = wanted.user_id \
       AND grants.resource_type = wanted.org_wide_type AND grants.resource_id = wanted.organization_id \
       AND grants.permission_id = wanted.permission_id LIMIT 1) AS org_wide ON true \
     WHERE revision_counter.id = 1";

/// The same probes on SQLite, which has no LATERAL and probes a join's inner table by its
/// index whenever the join names the index's columns.
const SQLITE_JOINS: &str = "LEFT JOIN grants AS on_resource ON on_resource.organization_id = wanted.organization_id \
       AND on_resource.user_id = wanted.user_id AND on_resource.resource_type = wanted.resource_type \
       AND on_resource.resource_id = wanted.resource_id AND on_resource.permission_id = wanted.permission_id \
     LEFT JOIN grants AS org_wide ON org_wide.organization_id = wanted.organization_id \
       AND org_wide.user_id = wanted.user_id AND org_wide.resource_type = wanted.org_wide_type \
       AND org_wide.resource_id = wanted.organization_id AND org_wide.permission_id = wanted.permission_id \
     WHERE revision_counter.id = 1";

/// The list of checks, each with its permission's id and name: one given, the other
/// looked up by a key probe; the name is NULL when no permission has the given id, the id
/// when none has the given name. A materialized list, so that the permission is looked up
/// once per check and the joins probe on a plain value (joined through `permissions.id`
/// instead, PostgreSQL probed the grants on four columns and filtered the fifth).
///
/// The checks travel as one JSON array of `[organization, user, resource type, resource
/// id, permission, by id, org-wide type]` per check. PostgreSQL cannot see into it, so
/// it plans the statement the same for every list: it keeps one generic plan instead of
/// planning each call anew, which arrays (whose length it reads from each call's values)
/// made it do.
const POSTGRES_WANTED: &str = "SELECT position, value ->> 0 AS organization_id, value ->> 1 AS user_id, \
     value ->> 2 AS resource_type, value ->> 3 AS resource_id, value ->> 6 AS org_wide_type, \
     CASE WHEN (value ->> 5)::bool THEN (value ->> 4)::uuid \
       ELSE (SELECT named.id FROM permissions AS named WHERE named.name = value ->> 4) END AS permission_id, \
     CASE WHEN (value ->> 5)::bool \
       THEN (SELECT named.name FROM permissions AS named WHERE named.id = (value ->> 4)::uuid) \
       ELSE value ->> 4 END AS permission_name \
     FROM json_array_elements($1::json) WITH ORDINALITY AS listed (value, position)";

/// The same list on SQLite.
const SQLITE_WANTED: &str = "SELECT listed.key + 1 AS position, listed.value ->> 0 AS organization_id, \
     listed.value ->> 1 AS user_id, listed.value ->> 2 AS resource_type, listed.value ->> 3 AS resource_id, \
     listed.value ->> 6 AS org_wide_type, \
     CASE WHEN listed.value ->> 5 THEN unhex(listed.value ->> 4) \
       ELSE (SELECT named.id FROM permissions AS named WHERE named.name = listed.value ->> 4) END AS permission_id, \
     CASE WHEN listed.value ->> 5 \
       THEN (SELECT named.name FROM permissions AS named WHERE named.id = unhex(listed.value ->> 4)) \
       ELSE listed.value ->> 4 END AS permission_name \
     FROM json_each(?1) AS listed";

fn sql(backend: DatabaseBackend) -> &'static str {
    static TEXTS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        let text = |wanted: &str, joins: &str| {
            format!("WITH wanted AS MATERIALIZED ({wanted}) {COLUMNS} FROM wanted CROSS JOIN revision_counter {joins}")
        };
        [text(POSTGRES_WANTED, POSTGRES_JOINS), text(SQLITE_WANTED, SQLITE_JOINS)]
    });
    if backend == DatabaseBackend::Postgres { &texts[0] } else { &texts[1] }
}

#[derive(Debug, FromQueryResult)]
struct CheckRow {
    position: i64,
    revision: Revision,
    organization_found: Option<String>,
    permission_found: Option<Uuid>,
    permission_name: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    granted_at: Option<DateTime<Utc>>,
    granted_by: Option<String>,
}

/// Answers `checks`, in their order, from one statement.
pub async fn read(db: &DatabaseConnection, checks: &[Check]) -> Result<Vec<CheckRead>> {
    let backend = db.get_database_backend();
    let statement = Statement::from_sql_and_values(backend, sql(backend), parameters(checks)?);
    let mut answers: Vec<Option<CheckRead>> = vec![None; checks.len()];
    for row in query_all_retrying(db, statement).await? {
        let row = CheckRow::from_query_result(&row, "")?;
        let slot = usize::try_from(row.position - 1).ok().and_then(|index| Some((index, checks.get(index)?)));
        let Some((index, check)) = slot else {
            return Err(Error::Internal(format!("a check answered position {} of {}", row.position, checks.len())));
        };
        answers[index] = Some(answer(check, row));
    }
    answers.into_iter().map(|answer| answer.ok_or_else(|| Error::Internal("a check got no row".into()))).collect()
}

/// How many check statements may run at once on `db`: half its pool, so that the rest
/// stays for transactions and the other RPCs.
pub fn statements_at_once(db: &DatabaseConnection) -> usize {
    usize::try_from(pool_limits(db).0 / 2).unwrap_or(1).max(1)
}

/// A read is safe to repeat: a statement that failed because its pooled connection had
/// broken (the database restarted, say) runs again on another, as many times as the pool
/// may hold connections that broke the same way.
async fn query_all_retrying(db: &DatabaseConnection, statement: Statement) -> Result<Vec<QueryResult>> {
    let mut broken_left = pool_limits(db).0;
    loop {
        match db.query_all(statement.clone()).await {
            Err(err) if broken_left > 0 && is_broken_connection(&err) => {
                broken_left -= 1;
                tracing::debug!(broken_left, error = %err, "a pooled connection was broken, reading again");
            }
            answer => return Ok(answer?),
        }
    }
}

/// The checks as one JSON array (see [`POSTGRES_WANTED`]), the same on both databases.
fn parameters(checks: &[Check]) -> Result<Vec<Value>> {
    let wanted: Vec<_> = checks
        .iter()
        .map(|check| {
            let (permission, by_id) = check.permission.as_text();
            let org_wide_type = ResourceType::ORGANIZATION;
            (
                &check.organization_id,
                &check.user_id,
                &check.resource_type,
                &check.resource_id,
                permission,
                by_id,
                org_wide_type,
            )
        })
        .collect();
    Ok(vec![json_array(&wanted)?.into()])
}

fn answer(check: &Check, row: CheckRow) -> CheckRead {
    let matched = match (
        row.permission_found,
        row.permission_name,
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
            organization_id: check.organization_id.clone(),
            user_id: check.user_id.clone(),
            permission_id,
            permission_name,
            resource_type,
            resource_id,
            granted_at,
            granted_by,
        }),
        _ => None,
    };
    CheckRead {
        revision: row.revision,
        matched,
        organization_exists: row.organization_found.is_some(),
        permission_exists: row.permission_found.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bench/growth.sh prints the plan of that file's statement: it must be the one grantd sends.
    #[test]
    fn the_benchmarks_explain_the_statement_grantd_sends() {
        let file = include_str!("../../bench/sql/check_list.sql");
        let statement: Vec<&str> = file.lines().filter(|line| !line.starts_with("--")).collect();
        assert_eq!(statement.join("\n").trim(), sql(DatabaseBackend::Postgres));
    }
}
