//! Lookups that several use-cases share.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::{
    domain::{
        Error, FieldViolation, OrganizationId, Result, Revision, commands::PermissionRefs, model::Permission,
        page::Page,
    },
    storage::{self, ConnectionTrait},
};

/// The permissions named by `refs`, in request order without duplicates.
/// One unknown id or name fails the whole request, listing every unknown one.
pub async fn permissions(conn: &impl ConnectionTrait, refs: &PermissionRefs) -> Result<Vec<Permission>> {
    let names: Vec<&str> = refs.names.iter().map(|n| n.as_str()).collect();
    let found = storage::permissions::resolve(conn, &refs.ids, &names).await?;
    named_in(&found, refs)
}

/// The permissions of `found` that `refs` names, as [`permissions`] answers them.
fn named_in(found: &[Permission], refs: &PermissionRefs) -> Result<Vec<Permission>> {
    // Looked up by key, not by scanning: a batch of 1,000 would otherwise compare a
    // million pairs.
    let by_id: HashMap<Uuid, &Permission> = found.iter().map(|p| (p.id, p)).collect();
    let by_name: HashMap<&str, &Permission> = found.iter().map(|p| (p.name.as_str(), p)).collect();

    let mut missing = Vec::new();
    let mut taken = HashSet::with_capacity(refs.ids.len() + refs.names.len());
    let mut ordered: Vec<Permission> = Vec::with_capacity(refs.ids.len() + refs.names.len());
    let mut push = |permission: Option<&&Permission>, label: String| match permission {
        Some(p) if taken.insert(p.id) => ordered.push((*p).clone()),
        Some(_) => {}
        None => missing.push(label),
    };
    for id in &refs.ids {
        push(by_id.get(id), id.to_string());
    }
    for name in &refs.names {
        push(by_name.get(name.as_str()), name.as_str().to_owned());
    }
    if !missing.is_empty() {
        return Err(Error::NotFound { kind: "permission", ids: missing });
    }
    Ok(ordered)
}

/// Fails with NOT_FOUND unless the organization exists.
pub async fn organization(conn: &impl ConnectionTrait, id: &OrganizationId) -> Result<()> {
    match storage::organizations::find(conn, id.as_str()).await? {
        Some(_) => Ok(()),
        None => Err(not_found_organization(id)),
    }
}

/// The sort key a page token carries, checked against the list it came from.
pub fn page_after<const N: usize>(page: &Page, scope: &str) -> Result<Option<[String; N]>> {
    match page.after(scope, N)? {
        Some(key) => key.try_into().map(Some).map_err(|_| bad_page_token()),
        None => Ok(None),
    }
}

pub fn bad_page_token() -> Error {
    FieldViolation::new("page_token", "is not a token this list issued for this request").into()
}

pub fn not_found_organization(id: &OrganizationId) -> Error {
    Error::NotFound { kind: "organization", ids: vec![id.to_string()] }
}

pub fn ids(permissions: &[Permission]) -> Vec<Uuid> {
    permissions.iter().map(|p| p.id).collect()
}

/// The latest committed revision, provided it is at least `at_least` (what a caller
/// asking to read its own writes needs); FAILED_PRECONDITION when it asks for more.
pub async fn revision_at_least(conn: &impl ConnectionTrait, at_least: u64) -> Result<Revision> {
    let revision = storage::numbering::current_revision(conn).await?;
    ensure_revision_reached(revision, at_least)?;
    Ok(revision)
}

/// FAILED_PRECONDITION when the caller asks for a revision newer than `latest`. The
/// message names the revision as sent: it may be beyond what the database can number.
pub fn ensure_revision_reached(latest: Revision, at_least: u64) -> Result<()> {
    if u64::try_from(latest).is_ok_and(|latest| at_least > latest) {
        return Err(Error::FailedPrecondition {
            reason: "REVISION_AHEAD",
            subject: "at_least_revision".into(),
            message: format!("at_least_revision {at_least} is ahead of the latest committed revision {latest}"),
        });
    }
    Ok(())
}
