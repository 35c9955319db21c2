//! The CheckPermission read: many checks in one statement, and one snapshot.
//!
//! Each check is its permission (by id, or looked up by name), the revision counter, the
//! grant on the resource and the org-wide grant, each an equality on a unique key, so
//! each is an exact index probe however many grants exist (see BENCHMARKS.md, Growth, for
//! the plans); the organization is looked up only for a check that no grant answers. The
//! checks travel as one parameter whatever their number (PostgreSQL: arrays, `UNNEST`;
//! SQLite: a JSON array, `json_each`), so the statement text never changes and stays
//! prepared.
//!
//! Written out rather than built with sea-query: this is the hottest statement, and
//! building it took about 4% of grantd's CPU time under a check load (perf).

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseBackend, FromQueryResult, Statement, Value, sea_query::ArrayType};
use uuid::Uuid;

use super::{KeptConnections, json_array};
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

/// After `FROM wanted CROSS JOIN revision_counter`: the probes. The grant joins name all
/// five columns of the primary key, the permission id included, so each is one exact
/// probe. `{org_wide_type}` is the resource type of org-wide grants, a parameter.
const JOINS: &str = "LEFT JOIN grants AS on_resource ON on_resource.organization_id = wanted.organization_id \
       AND on_resource.user_id = wanted.user_id AND on_resource.resource_type = wanted.resource_type \
       AND on_resource.resource_id = wanted.resource_id AND on_resource.permission_id = wanted.permission_id \
     LEFT JOIN grants AS org_wide ON org_wide.organization_id = wanted.organization_id \
       AND org_wide.user_id = wanted.user_id AND org_wide.resource_type = {org_wide_type} \
       AND org_wide.resource_id = wanted.organization_id AND org_wide.permission_id = wanted.permission_id \
     WHERE revision_counter.id = 1";

/// The list of checks, each with its permission's id and name: one given, the other
/// looked up by a key probe; the name is NULL when no permission has the given id, the id
/// when none has the given name. A materialized list, so that the permission is looked up
/// once per check and the joins probe on a plain value (joined through `permissions.id`
/// instead, PostgreSQL probed the grants on four columns and filtered the fifth). Not
/// joined with `permissions` either: the generic plan takes the list for ten checks, and
/// against ten probes it hashed the whole catalog for every statement while the catalog
/// held up to a few thousand permissions. One array per field; sea-query binds no NULL
/// inside an array, so a permission travels as text, with whether it is an id.
const POSTGRES_WANTED: &str = "SELECT position, organization_id, user_id, resource_type, resource_id, \
     CASE WHEN by_id THEN permission::uuid \
       ELSE (SELECT named.id FROM permissions AS named WHERE named.name = listed.permission) END AS permission_id, \
     CASE WHEN by_id THEN (SELECT named.name FROM permissions AS named WHERE named.id = listed.permission::uuid) \
       ELSE listed.permission END AS permission_name \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[]) WITH ORDINALITY \
     AS listed (organization_id, user_id, resource_type, resource_id, permission, by_id, position)";

/// The same list from one JSON array `[organization, user, resource type, resource id,
/// permission, by id]` per check.
const SQLITE_WANTED: &str = "SELECT listed.key + 1 AS position, listed.value ->> 0 AS organization_id, \
     listed.value ->> 1 AS user_id, listed.value ->> 2 AS resource_type, listed.value ->> 3 AS resource_id, \
     CASE WHEN listed.value ->> 5 THEN unhex(listed.value ->> 4) \
       ELSE (SELECT named.id FROM permissions AS named WHERE named.name = listed.value ->> 4) END AS permission_id, \
     CASE WHEN listed.value ->> 5 \
       THEN (SELECT named.name FROM permissions AS named WHERE named.id = unhex(listed.value ->> 4)) \
       ELSE listed.value ->> 4 END AS permission_name \
     FROM json_each(?1) AS listed";

fn sql(backend: DatabaseBackend) -> &'static str {
    static TEXTS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        let text = |wanted: &str, org_wide_type: &str| {
            let joins = JOINS.replace("{org_wide_type}", org_wide_type);
            format!("WITH wanted AS MATERIALIZED ({wanted}) {COLUMNS} FROM wanted CROSS JOIN revision_counter {joins}")
        };
        [text(POSTGRES_WANTED, "$7"), text(SQLITE_WANTED, "?2")]
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
pub async fn read(reads: &KeptConnections, checks: &[Check]) -> Result<Vec<CheckRead>> {
    let backend = reads.backend();
    let statement = Statement::from_sql_and_values(backend, sql(backend), parameters(backend, checks)?);
    let mut answers: Vec<Option<CheckRead>> = vec![None; checks.len()];
    for row in reads.query_all(&statement).await? {
        let row = CheckRow::from_query_result(&row, "")?;
        let slot = usize::try_from(row.position - 1).ok().and_then(|index| Some((index, checks.get(index)?)));
        let Some((index, check)) = slot else {
            return Err(Error::Internal(format!("a check answered position {} of {}", row.position, checks.len())));
        };
        answers[index] = Some(answer(check, row));
    }
    answers.into_iter().map(|answer| answer.ok_or_else(|| Error::Internal("a check got no row".into()))).collect()
}

fn parameters(backend: DatabaseBackend, checks: &[Check]) -> Result<Vec<Value>> {
    let org_wide_type = Value::from(ResourceType::ORGANIZATION);
    if backend != DatabaseBackend::Postgres {
        let wanted: Vec<_> = checks
            .iter()
            .map(|check| {
                let (permission, by_id) = check.permission.as_text();
                (&check.organization_id, &check.user_id, &check.resource_type, &check.resource_id, permission, by_id)
            })
            .collect();
        return Ok(vec![json_array(&wanted)?.into(), org_wide_type]);
    }
    let texts = |field: fn(&Check) -> &str| {
        let values = checks.iter().map(|check| Value::from(field(check))).collect();
        Value::Array(ArrayType::String, Some(Box::new(values)))
    };
    let (permissions, by_id): (Vec<Value>, Vec<Value>) = checks
        .iter()
        .map(|check| {
            let (permission, by_id) = check.permission.as_text();
            (permission.into(), by_id.into())
        })
        .unzip();
    Ok(vec![
        texts(|check| &check.organization_id),
        texts(|check| &check.user_id),
        texts(|check| &check.resource_type),
        texts(|check| &check.resource_id),
        Value::Array(ArrayType::String, Some(Box::new(permissions))),
        Value::Array(ArrayType::Bool, Some(Box::new(by_id))),
        org_wide_type,
    ])
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
