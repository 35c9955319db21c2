//! PostgreSQL: an administrator's AddUserPermissions as one statement, which is its own
//! transaction. The counter's row lock, which every write takes and holds to its commit,
//! is then held for no client round trip at all (in BEGIN ... COMMIT it is held across
//! the last statement's answer and the COMMIT), and the add costs one round trip, not six.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseBackend, DatabaseConnection, Statement};
use uuid::Uuid;

use super::{KeptConnections, grants::Target, tx};
use crate::domain::{Actor, Error, Result, Revision, model::ChangeKind};

/// The steps of the transactional add, in the same order and with the same locks: the
/// membership row FOR UPDATE; the listed permissions FOR KEY SHARE (ids, then names
/// looked up in the catalog, as `permissions::resolve` looks them up), in request order
/// without duplicates; the grants, inserted only when the user is a member and every
/// listed permission exists; the counter bumped by the number inserted and one event per
/// grant, at consecutive revisions in the order PostgreSQL inserted them, which follows
/// the request's (numbering them by a join with the request order was planned as a nested
/// loop over estimates of one row: a million comparisons for 1,000 permissions).
///
/// With nothing inserted the answer is the counter as it is once the insert is done, not
/// as the statement's snapshot saw it: an add that waited for another's lock and found its
/// grants already held must answer a revision that includes them. FOR SHARE reads it so
/// (at READ COMMITTED a row lock is taken on the latest version; FOR KEY SHARE, which
/// does not conflict with the counter's updates, would lock and answer the version the
/// snapshot saw), and the `count(*)` gate makes that read wait for the insert.
pub const POSTGRES_ADD: &str = "WITH member AS (SELECT 1 FROM memberships \
       WHERE organization_id = $1 AND user_id = $2 FOR UPDATE), \
     listed AS (SELECT listed.id, listed.ord FROM unnest($5::uuid[]) WITH ORDINALITY AS listed(id, ord) \
       UNION ALL SELECT named.id, cardinality($5::uuid[]) + listed.ord \
       FROM unnest($6::text[]) WITH ORDINALITY AS listed(name, ord) \
       CROSS JOIN LATERAL (SELECT id FROM permissions WHERE name = listed.name LIMIT 1) named), \
     resolved AS (SELECT p.id, p.name, min(listed.ord) AS ord FROM listed CROSS JOIN LATERAL \
       (SELECT id, name FROM permissions WHERE id = listed.id FOR KEY SHARE) p GROUP BY p.id, p.name), \
     complete AS (SELECT EXISTS (SELECT 1 FROM member) \
       AND NOT EXISTS (SELECT 1 FROM unnest($5::uuid[]) AS w(id) WHERE w.id NOT IN (SELECT id FROM resolved)) \
       AND NOT EXISTS (SELECT 1 FROM unnest($6::text[]) AS w(name) WHERE w.name NOT IN (SELECT name FROM resolved)) \
       AS ok), \
     inserted AS (INSERT INTO grants \
       (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
       SELECT $1, $2, $3, $4, r.id, $7, $8 FROM resolved r WHERE (SELECT ok FROM complete) ORDER BY r.ord \
       ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING \
       RETURNING permission_id), \
     numbered AS (SELECT permission_id, row_number() OVER () AS n, count(*) OVER () AS total FROM inserted), \
     bump AS (UPDATE revision_counter SET value = value + (SELECT count(*) FROM inserted) \
       WHERE id = 1 AND EXISTS (SELECT 1 FROM inserted) RETURNING value), \
     appended AS (INSERT INTO changes \
       (revision, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) \
       SELECT bump.value - numbered.total + numbered.n, $10, $8, $9, $7, $1, $2, numbered.permission_id, $3, $4 \
       FROM bump, numbered) \
     SELECT EXISTS (SELECT 1 FROM member) AS member, (SELECT ok FROM complete) AS complete, \
       ARRAY(SELECT id FROM resolved ORDER BY ord) AS wanted, \
       ARRAY(SELECT name FROM resolved ORDER BY ord) AS wanted_names, \
       ARRAY(SELECT permission_id FROM numbered ORDER BY n) AS added, \
       COALESCE((SELECT value FROM bump), (SELECT value FROM revision_counter \
         WHERE id = 1 AND (SELECT count(*) FROM inserted) >= 0 FOR SHARE)) AS revision";

/// What [`add_postgres`] did. Nothing was written unless `member` and `complete`.
#[derive(Debug)]
pub struct StatementAdd {
    pub member: bool,
    /// The user is a member and every listed permission exists.
    pub complete: bool,
    /// The listed permissions that exist, in request order without duplicates.
    pub wanted: Vec<(Uuid, String)>,
    /// Those inserted.
    pub added: Vec<Uuid>,
    /// The last event's revision, or the current one when nothing was added.
    pub revision: Revision,
}

/// Grants `ids` and `names` on `target` in one statement on one of the `kept` connections
/// (no test round trip when it is done; `db` only sizes the retries), retrying conflicts
/// as [`tx::write`] does. A retry after a connection broke mid-statement is safe: a grant
/// already written reads as already held, and its event is not written twice.
pub async fn add_postgres(
    db: &DatabaseConnection,
    kept: &KeptConnections,
    target: Target<'_>,
    ids: &[Uuid],
    names: &[&str],
    at: DateTime<Utc>,
    actor: &Actor,
) -> Result<StatementAdd> {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let statement = || {
        Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            POSTGRES_ADD,
            [
                target.organization_id.into(),
                target.user_id.into(),
                target.resource_type.into(),
                target.resource_id.into(),
                ids.to_vec().into(),
                names.clone().into(),
                at.into(),
                actor.subject.as_str().into(),
                actor.request_id.as_str().into(),
                ChangeKind::GrantAdded.code().into(),
            ],
        )
    };
    let row = tx::autocommit(db, || async { Ok(kept.query_all(&statement()).await?.into_iter().next()) })
        .await?
        .ok_or_else(|| Error::Internal("the add statement answered no row".into()))?;
    let wanted_ids: Vec<Uuid> = row.try_get("", "wanted")?;
    let wanted_names: Vec<String> = row.try_get("", "wanted_names")?;
    Ok(StatementAdd {
        member: row.try_get("", "member")?,
        complete: row.try_get("", "complete")?,
        wanted: wanted_ids.into_iter().zip(wanted_names).collect(),
        added: row.try_get("", "added")?,
        revision: row
            .try_get::<Option<Revision>>("", "revision")?
            .ok_or_else(|| Error::Internal("revision counter row is missing".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bench/sql/add.sql, pgbench's ceiling for `add`, must be this statement with pgbench
    /// expressions in place of the parameters, or the ceiling measures something else.
    #[test]
    fn the_add_ceiling_runs_the_statement_grantd_sends() {
        let file = include_str!("../../bench/sql/add.sql");
        let ceiling: Vec<&str> =
            file.lines().filter(|line| !line.starts_with("--") && !line.starts_with('\\')).collect();
        // From $10 down, so that $1 does not also rewrite the start of $10.
        let parameters = [
            ("$10", "1::smallint"),
            ("$9", "gen_random_uuid()::text"),
            ("$8", ":org"),
            ("$7", "now()"),
            ("$6", ":perms"),
            ("$5", ":ids"),
            ("$4", "('c' || :client_id::text || '-' || :r::text)"),
            ("$3", ":rtype"),
            ("$2", "('ceiling-u' || :u::text)"),
            ("$1", ":org"),
        ];
        let grantd =
            parameters.iter().fold(POSTGRES_ADD.to_owned(), |sql, (parameter, value)| sql.replace(parameter, value));
        assert_eq!(ceiling.join("\n").trim().trim_end_matches(';'), grantd);
    }
}
