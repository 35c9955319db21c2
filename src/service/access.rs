//! Who may call what (the contract's "Who may call what"), decided inside the use-case's
//! transaction so that a right revoked concurrently is either seen or waited for.
//!
//! Denials name the missing right and the organization the caller asked about, and are
//! decided before anything is looked up, so they reveal nothing about what exists.

use uuid::Uuid;

use crate::{
    auth::ADMIN_SCOPE,
    domain::{Actor, Error, OrganizationId, Resource, Result, UserId, model::Permission},
    storage::{self, ConnectionTrait, grants::Target},
};

pub const EDIT_ORG_USERS: &str = "edit_org_users";
pub const VIEW_ORG_USERS: &str = "view_org_users";

/// What a caller needs in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Change its users: `edit_org_users`.
    Edit,
    /// Read its grants, members and changes: `view_org_users` or `edit_org_users`.
    View,
}

/// An administrator acting on everything: a token scoped to some organizations may not.
pub fn require_admin(actor: &Actor, what: &str) -> Result<()> {
    if !actor.admin {
        return Err(Error::PermissionDenied(format!("{what} needs a token with the {ADMIN_SCOPE} scope")));
    }
    if actor.organizations.is_some() {
        return Err(Error::PermissionDenied(format!(
            "{what} reaches beyond organizations, which a token scoped to organizations may not"
        )));
    }
    Ok(())
}

/// An administrator acting on one organization, within the token's scope.
pub fn require_admin_of(actor: &Actor, organization: &OrganizationId, what: &str) -> Result<()> {
    require_scope(actor, organization)?;
    if actor.admin {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!("{what} needs a token with the {ADMIN_SCOPE} scope")))
    }
}

fn require_scope(actor: &Actor, organization: &OrganizationId) -> Result<()> {
    match &actor.organizations {
        Some(allowed) if !allowed.iter().any(|o| o == organization.as_str()) => {
            Err(Error::PermissionDenied(format!("the caller's token is not scoped to organization {organization}")))
        }
        _ => Ok(()),
    }
}

/// Whether a NOT_FOUND may tell the caller that an organization does not exist. Anyone
/// may read their own grants in any organization in their token's scope, member or not;
/// were the answer for an organization that exists different from the answer for one
/// that does not, the calls would reveal which organizations exist. Only administrators
/// learn it: every other caller that may read an organization holds a grant in it, so it
/// exists.
pub fn may_learn_existence(actor: &Actor) -> bool {
    actor.admin
}

/// The caller is an admin, or holds what `need` asks for org-wide in `organization`.
pub async fn require(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    organization: &OrganizationId,
    need: Need,
) -> Result<()> {
    require_scope(actor, organization)?;
    if actor.admin {
        return Ok(());
    }
    let names: &[&str] = match need {
        Need::Edit => &[EDIT_ORG_USERS],
        Need::View => &[EDIT_ORG_USERS, VIEW_ORG_USERS],
    };
    if storage::grants::holds_org_wide(conn, organization.as_str(), &actor.subject, names).await? {
        return Ok(());
    }
    let wanted = match need {
        Need::Edit => EDIT_ORG_USERS.to_owned(),
        Need::View => format!("{VIEW_ORG_USERS} or {EDIT_ORG_USERS}"),
    };
    Err(Error::PermissionDenied(format!("caller {} lacks {wanted} in organization {organization}", actor.subject)))
}

/// Like [`require`] with `Need::View`, except that callers may always read their own.
pub async fn require_self_or_view(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    organization: &OrganizationId,
    user: &UserId,
) -> Result<()> {
    if actor.subject == user.as_str() {
        return require_scope(actor, organization);
    }
    require(conn, actor, organization, Need::View).await
}

/// No escalation: a caller may grant only permissions it holds itself in the
/// organization, org-wide or on the resource being granted.
pub async fn require_holds(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    organization: &OrganizationId,
    resource: &Resource,
    permissions: &[Permission],
) -> Result<()> {
    if actor.admin {
        return Ok(());
    }
    let ids: Vec<Uuid> = permissions.iter().map(|p| p.id).collect();
    let target = Target {
        organization_id: organization.as_str(),
        user_id: &actor.subject,
        resource_type: resource.kind.as_str(),
        resource_id: resource.id.as_str(),
    };
    let held = storage::grants::held_here_or_org_wide(conn, target, &ids).await?;
    let lacking: Vec<&str> = permissions.iter().filter(|p| !held.contains(&p.id)).map(|p| p.name.as_str()).collect();
    if lacking.is_empty() {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "caller {} may grant only permissions it holds in organization {organization}; it lacks {}",
        actor.subject,
        lacking.join(", ")
    )))
}
