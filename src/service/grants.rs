//! The four grant writes and the two grant reads.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use super::{
    ListPage, Writes,
    access::{self, Need},
    check_queue::CheckQueue,
    resolve,
};
use crate::{
    domain::{
        self, Actor, Error, OrganizationId, Resource, Result, Revision,
        commands::{
            ChangeUserPermissions, CheckPermission, ListUserPermissions, PermissionRef, RemoveResourcePermissions,
            RemoveUserFromOrganization,
        },
        model::{ChangeKind, Grant},
    },
    storage::{
        self, DatabaseConnection, DatabaseTransaction, Lock,
        changes::NewChange,
        checks::{Check, PermissionKey},
        grants::{GrantKey, NewGrant, ResourceFilter, Selection, Target},
    },
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOutcome {
    pub added: Vec<Uuid>,
    pub already_held: Vec<Uuid>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveOutcome {
    pub removed: Vec<Uuid>,
    pub not_held: Vec<Uuid>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRemovals {
    /// Per requested resource, in request order: how many grants went.
    pub removed: Vec<((OrganizationId, Resource), u64)>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedFromOrganization {
    pub removed_grant_count: u64,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub matched: Option<Grant>,
    pub revision: Revision,
}

/// Grants, revokes and answers questions about grants.
#[derive(Debug, Clone)]
pub struct Grants {
    db: DatabaseConnection,
    writes: Writes,
    checks: CheckQueue,
}

fn target(cmd: &ChangeUserPermissions) -> Target<'_> {
    Target {
        organization_id: cmd.organization_id.as_str(),
        user_id: cmd.user_id.as_str(),
        resource_type: cmd.resource.kind.as_str(),
        resource_id: cmd.resource.id.as_str(),
    }
}

fn not_a_member(cmd: &ChangeUserPermissions) -> Error {
    Error::FailedPrecondition {
        reason: "NOT_A_MEMBER",
        subject: format!("organizations/{}/members/{}", cmd.organization_id, cmd.user_id),
        message: format!(
            "user {} is not a member of organization {}; add them with AddUserToOrganization first",
            cmd.user_id, cmd.organization_id
        ),
    }
}

/// Whether the user is a member, the membership row locked for update. An absent
/// membership has no row to lock, so then the organization row is locked for update,
/// which waits out an AddUserToOrganization in flight there and holds off new ones, and
/// the membership looked up again: a write that finds no membership answers a revision
/// that no membership added meanwhile precedes. NOT_FOUND when the organization is gone.
async fn lock_membership(tx: &DatabaseTransaction, organization: &OrganizationId, user: &str) -> Result<bool> {
    let org = organization.as_str();
    if storage::memberships::lock(tx, org, user, Lock::Update).await? {
        return Ok(true);
    }
    if !storage::organizations::lock(tx, org, Lock::Update).await? {
        return Err(resolve::not_found_organization(organization));
    }
    storage::memberships::lock(tx, org, user, Lock::Update).await
}

fn revocation_events(keys: Vec<GrantKey>) -> Vec<NewChange> {
    keys.into_iter().map(|key| NewChange::grant(ChangeKind::GrantRemoved, key)).collect()
}

impl Grants {
    /// Reads on `db`, writes through `writes`.
    pub fn new(db: DatabaseConnection, writes: Writes) -> Self {
        Self { checks: CheckQueue::new(db.clone()), db, writes }
    }

    /// Grants every listed permission to a member. The membership row is locked first, so
    /// this serializes with RemoveUserFromOrganization and with other writes of this
    /// user's grants in the organization, and with nothing else.
    pub async fn add_user_permissions(&self, actor: Actor, cmd: ChangeUserPermissions) -> Result<AddOutcome> {
        let ((added, already_held), revision) = self
            .writes
            .run(actor, cmd, move |tx, author, cmd| {
                Box::pin(async move {
                    let actor = &author.actor;
                    access::require(tx, actor, &cmd.organization_id, Need::Edit).await?;
                    let target = target(&cmd);
                    if !storage::memberships::lock(tx, target.organization_id, target.user_id, Lock::Update).await? {
                        resolve::organization(tx, &cmd.organization_id).await?;
                        return Err(not_a_member(&cmd));
                    }
                    let permissions = resolve::permissions(tx, &cmd.permissions).await?;
                    access::require_holds(tx, actor, &cmd.organization_id, &cmd.resource, &permissions).await?;
                    let wanted = resolve::ids(&permissions);
                    let now = domain::now();
                    let rows: Vec<NewGrant> = wanted
                        .iter()
                        .map(|id| NewGrant { key: target.key(*id), granted_at: now, granted_by: actor.subject.clone() })
                        .collect();
                    let inserted = storage::additions::insert(tx, &rows, &author, now).await?;
                    Ok(wanted.into_iter().partition(|id| inserted.contains(&target.key(*id))))
                })
            })
            .await?;
        Ok(AddOutcome { added, already_held, revision })
    }

    /// Revokes each listed permission; ones not held are reported, not rejected.
    pub async fn remove_user_permissions(&self, actor: Actor, cmd: ChangeUserPermissions) -> Result<RemoveOutcome> {
        let ((removed, not_held), revision) = self
            .writes
            .run(actor, cmd, move |tx, author, cmd| {
                Box::pin(async move {
                    access::require(tx, &author.actor, &cmd.organization_id, Need::Edit).await?;
                    // As adds do, so that a grant added meanwhile is either removed here
                    // or added after this answer.
                    lock_membership(tx, &cmd.organization_id, cmd.user_id.as_str()).await?;
                    let wanted = resolve::ids(&resolve::permissions(tx, &cmd.permissions).await?);
                    let target = target(&cmd);
                    let selection = Selection::Listed {
                        organization_id: target.organization_id.to_owned(),
                        user_id: target.user_id.to_owned(),
                        resource_type: target.resource_type.to_owned(),
                        resource_id: target.resource_id.to_owned(),
                        permission_ids: wanted.clone(),
                    };
                    let deleted = storage::grants::delete(tx, &selection).await?;
                    let gone: HashSet<Uuid> = deleted.iter().map(|key| key.permission_id).collect();
                    let (removed, not_held): (Vec<Uuid>, Vec<Uuid>) =
                        wanted.into_iter().partition(|id| gone.contains(id));
                    storage::changes::append(tx, &author, domain::now(), revocation_events(deleted)).await?;
                    Ok((removed, not_held))
                })
            })
            .await?;
        Ok(RemoveOutcome { removed, not_held, revision })
    }

    /// Revokes every grant on each listed resource, of one user or of all users.
    pub async fn remove_resource_permissions(
        &self,
        actor: Actor,
        cmd: RemoveResourcePermissions,
    ) -> Result<ResourceRemovals> {
        let (removed, revision) = self
            .writes
            .run(actor, cmd, move |tx, author, cmd| {
                Box::pin(async move {
                    let mut organizations: Vec<&OrganizationId> = Vec::new();
                    for (organization, _) in &cmd.resources {
                        if !organizations.contains(&organization) {
                            organizations.push(organization);
                        }
                    }
                    for organization in &organizations {
                        access::require(tx, &author.actor, organization, Need::Edit).await?;
                    }
                    let organization_ids: Vec<&str> = organizations.iter().map(|o| o.as_str()).collect();
                    let missing = storage::organizations::missing(tx, &organization_ids).await?;
                    if !missing.is_empty() {
                        return Err(Error::NotFound { kind: "organization", ids: missing });
                    }
                    let selection = Selection::Resources {
                        user_id: cmd.user_id.as_ref().map(|u| u.to_string()),
                        resources: cmd
                            .resources
                            .iter()
                            .map(|(org, res)| (org.to_string(), res.kind.as_str().to_owned(), res.id.to_string()))
                            .collect(),
                    };
                    let revoked = storage::revocations::revoke(tx, &author, domain::now(), &selection).await?;
                    let counts: BTreeMap<(String, String, String), u64> = revoked
                        .per_resource
                        .into_iter()
                        .map(|on| {
                            let count = u64::try_from(on.revoked).unwrap_or(0);
                            ((on.organization_id, on.resource_type, on.resource_id), count)
                        })
                        .collect();
                    Ok(cmd
                        .resources
                        .iter()
                        .map(|(org, res)| {
                            let key = (org.to_string(), res.kind.as_str().to_owned(), res.id.to_string());
                            ((org.clone(), res.clone()), counts.get(&key).copied().unwrap_or(0))
                        })
                        .collect())
                })
            })
            .await?;
        Ok(ResourceRemovals { removed, revision })
    }

    /// Deletes the membership and every grant of the user in the organization.
    pub async fn remove_user_from_organization(
        &self,
        actor: Actor,
        cmd: RemoveUserFromOrganization,
    ) -> Result<RemovedFromOrganization> {
        let (removed_grant_count, revision) = self
            .writes
            .run(actor, cmd, move |tx, author, cmd| {
                Box::pin(async move {
                    access::require(tx, &author.actor, &cmd.organization_id, Need::Edit).await?;
                    let (org, user) = (cmd.organization_id.as_str(), cmd.user_id.as_str());
                    if !lock_membership(tx, &cmd.organization_id, user).await? {
                        if cmd.allow_missing {
                            return Ok(0);
                        }
                        return Err(Error::NotFound {
                            kind: "membership",
                            ids: vec![format!("organizations/{org}/members/{user}")],
                        });
                    }
                    let selection =
                        Selection::UserInOrganization { organization_id: org.to_owned(), user_id: user.to_owned() };
                    let now = domain::now();
                    let revoked = storage::revocations::revoke(tx, &author, now, &selection).await?;
                    storage::memberships::delete(tx, org, user).await?;
                    let member_removed = vec![NewChange::member(ChangeKind::MemberRemoved, org, user)];
                    storage::changes::append(tx, &author, now, member_removed).await?;
                    Ok(revoked.count())
                })
            })
            .await?;
        Ok(RemovedFromOrganization { removed_grant_count, revision })
    }

    /// A page of the user's grants in the organization.
    pub async fn list_user_permissions(&self, actor: Actor, cmd: ListUserPermissions) -> Result<ListPage<Grant>> {
        access::require_self_or_view(&self.db, &actor, &cmd.organization_id, &cmd.user_id).await?;
        if cmd.at_least_revision > 0 {
            resolve::revision_at_least(&self.db, cmd.at_least_revision).await?;
        }
        let filter = cmd.filter.as_ref().map(|(kind, id)| ResourceFilter {
            resource_type: kind.as_str().to_owned(),
            resource_id: id.as_ref().map(|id| id.to_string()),
        });
        let scope = format!("grants\n{}\n{}\n{:?}", cmd.organization_id, cmd.user_id, filter);
        let after = match resolve::page_after(&cmd.page, &scope)? {
            Some([resource_type, resource_id, permission_id]) => {
                let permission_id = Uuid::parse_str(&permission_id).map_err(|_| resolve::bad_page_token())?;
                Some((resource_type, resource_id, permission_id))
            }
            None => None,
        };
        if access::may_learn_existence(&actor) {
            resolve::organization(&self.db, &cmd.organization_id).await?;
        }
        let grants = storage::grants::list(
            &self.db,
            cmd.organization_id.as_str(),
            cmd.user_id.as_str(),
            filter.as_ref(),
            after,
            cmd.page.size,
        )
        .await?;
        let next_page_token = cmd.page.next_token(&grants, &scope, |g| {
            vec![g.resource_type.clone(), g.resource_id.clone(), g.permission_id.to_string()]
        });
        Ok(ListPage { items: grants, next_page_token })
    }

    /// Whether the user holds the permission on the resource or org-wide. Grants exist only
    /// for members (a foreign key guarantees it), so a non-member is never allowed.
    pub async fn check_permission(&self, actor: Actor, cmd: CheckPermission) -> Result<CheckOutcome> {
        access::require_self_or_view(&self.db, &actor, &cmd.organization_id, &cmd.user_id).await?;
        let permission = match &cmd.permission {
            PermissionRef::Id(id) => PermissionKey::Id(*id),
            PermissionRef::Name(name) => PermissionKey::Name(name.to_string()),
        };
        let check = Check {
            organization_id: cmd.organization_id.as_str().to_owned(),
            user_id: cmd.user_id.as_str().to_owned(),
            resource_type: cmd.resource.kind.as_str().to_owned(),
            resource_id: cmd.resource.id.as_str().to_owned(),
            permission,
        };
        let read = self.checks.check(check).await?;
        resolve::ensure_revision_reached(read.revision, cmd.at_least_revision)?;
        if read.matched.is_none() {
            // A denial for a name nobody defined is more likely a typo than an answer.
            if !read.organization_exists && access::may_learn_existence(&actor) {
                return Err(resolve::not_found_organization(&cmd.organization_id));
            }
            if !read.permission_exists {
                return Err(Error::NotFound { kind: "permission", ids: vec![cmd.permission.to_string()] });
            }
        }
        Ok(CheckOutcome { matched: read.matched, revision: read.revision })
    }
}
