//! The four grant writes and the two grant reads.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use uuid::Uuid;

use super::{
    ListPage,
    access::{self, Need},
    add_groups::AddGroups,
    check_queue::CheckQueue,
    detached, resolve, write,
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
        self, DatabaseConnection, KeptConnections, Lock, StatementLog,
        changes::NewChange,
        checks::{Check, PermissionKey},
        grants::{GrantKey, ResourceFilter, Selection, Target},
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
    /// Where writes begin (see [`storage::writer`]).
    writes: DatabaseConnection,
    /// Connections for one-statement work: checks, and PostgreSQL's administrator adds.
    kept: Arc<KeptConnections>,
    checks: CheckQueue,
    /// SQLite only: administrators' adds, written in groups.
    add_groups: Option<AddGroups>,
}

pub(super) fn target(cmd: &ChangeUserPermissions) -> Target<'_> {
    Target {
        organization_id: cmd.organization_id.as_str(),
        user_id: cmd.user_id.as_str(),
        resource_type: cmd.resource.kind.as_str(),
        resource_id: cmd.resource.id.as_str(),
    }
}

/// One event per permission added on `target`.
pub(super) fn added_events(target: Target<'_>, added: &[Uuid]) -> Vec<NewChange> {
    added.iter().map(|permission_id| NewChange::grant(ChangeKind::GrantAdded, target.key(*permission_id))).collect()
}

pub(super) fn not_a_member(cmd: &ChangeUserPermissions) -> Error {
    Error::FailedPrecondition {
        reason: "NOT_A_MEMBER",
        subject: format!("organizations/{}/members/{}", cmd.organization_id, cmd.user_id),
        message: format!(
            "user {} is not a member of organization {}; add them with AddUserToOrganization first",
            cmd.user_id, cmd.organization_id
        ),
    }
}

fn revocation_events(keys: Vec<GrantKey>) -> Vec<NewChange> {
    keys.into_iter().map(|key| NewChange::grant(ChangeKind::GrantRemoved, key)).collect()
}

impl Grants {
    /// Reads on `db`, writes on `writes`; `log`, when given, hears every statement of the
    /// connections kept for checks and adds.
    pub fn new(db: DatabaseConnection, writes: DatabaseConnection, log: Option<StatementLog>) -> Result<Self> {
        let kept = Arc::new(KeptConnections::new(&db, log)?);
        let add_groups = storage::is_sqlite(&db).then(|| AddGroups::new(writes.clone()));
        Ok(Self { db, writes, checks: CheckQueue::new(Arc::clone(&kept)), kept, add_groups })
    }

    /// Grants every listed permission to a member. The membership row is locked first, so
    /// this serializes with RemoveUserFromOrganization and with other writes of this
    /// user's grants in the organization. On SQLite an administrator's add is written
    /// with others that arrive together (see [`AddGroups`]).
    pub async fn add_user_permissions(&self, actor: Actor, cmd: ChangeUserPermissions) -> Result<AddOutcome> {
        if actor.admin {
            match &self.add_groups {
                Some(groups) => return groups.add(actor, cmd).await,
                None => return self.add_in_one_statement(actor, cmd).await,
            }
        }
        write(&self.writes, actor, cmd, move |tx, actor, cmd| {
            Box::pin(async move {
                access::require(tx, &actor, &cmd.organization_id, Need::Edit).await?;
                let target = target(&cmd);
                if !storage::memberships::lock(tx, target.organization_id, target.user_id, Lock::Update).await? {
                    resolve::organization(tx, &cmd.organization_id).await?;
                    return Err(not_a_member(&cmd));
                }
                let permissions = resolve::permissions(tx, &cmd.permissions).await?;
                access::require_holds(tx, &actor, &cmd.organization_id, &cmd.resource, &permissions).await?;
                let wanted = resolve::ids(&permissions);
                let now = domain::now();
                let added = storage::grants::insert(tx, target, &wanted, now, &actor.subject).await?;
                let newly: HashSet<Uuid> = added.iter().copied().collect();
                let already_held: Vec<Uuid> = wanted.into_iter().filter(|id| !newly.contains(id)).collect();
                let events = added_events(target, &added);
                let revision = storage::changes::append(tx, &actor, now, events).await?;
                Ok(AddOutcome { added, already_held, revision })
            })
        })
        .await
    }

    /// PostgreSQL, an administrator's add: one statement ([`storage::adds`]), which
    /// checks, locks and writes as the transaction of a non-administrator's add does.
    async fn add_in_one_statement(&self, actor: Actor, cmd: ChangeUserPermissions) -> Result<AddOutcome> {
        access::require(&self.db, &actor, &cmd.organization_id, Need::Edit).await?;
        let (db, kept) = (self.writes.clone(), Arc::clone(&self.kept));
        detached(async move {
            let names: Vec<&str> = cmd.permissions.names.iter().map(|n| n.as_str()).collect();
            let done = storage::adds::add_postgres(
                &db,
                &kept,
                target(&cmd),
                &cmd.permissions.ids,
                &names,
                domain::now(),
                &actor,
            )
            .await?;
            if !done.member {
                resolve::organization(&db, &cmd.organization_id).await?;
                return Err(not_a_member(&cmd));
            }
            if !done.complete {
                return Err(resolve::missing(&done.wanted, &cmd.permissions));
            }
            let newly: HashSet<Uuid> = done.added.into_iter().collect();
            let (added, already_held) = done.wanted.into_iter().map(|(id, _)| id).partition(|id| newly.contains(id));
            Ok(AddOutcome { added, already_held, revision: done.revision })
        })
        .await
    }

    /// Revokes each listed permission; ones not held are reported, not rejected.
    pub async fn remove_user_permissions(&self, actor: Actor, cmd: ChangeUserPermissions) -> Result<RemoveOutcome> {
        write(&self.writes, actor, cmd, move |tx, actor, cmd| {
            Box::pin(async move {
                access::require(tx, &actor, &cmd.organization_id, Need::Edit).await?;
                resolve::organization(tx, &cmd.organization_id).await?;
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
                let (removed, not_held): (Vec<Uuid>, Vec<Uuid>) = wanted.into_iter().partition(|id| gone.contains(id));
                let revision = storage::changes::append(tx, &actor, domain::now(), revocation_events(deleted)).await?;
                Ok(RemoveOutcome { removed, not_held, revision })
            })
        })
        .await
    }

    /// Revokes every grant on each listed resource, of one user or of all users.
    pub async fn remove_resource_permissions(
        &self,
        actor: Actor,
        cmd: RemoveResourcePermissions,
    ) -> Result<ResourceRemovals> {
        write(&self.writes, actor, cmd, move |tx, actor, cmd| {
            Box::pin(async move {
                let mut organizations: Vec<&OrganizationId> = Vec::new();
                for (organization, _) in &cmd.resources {
                    if !organizations.contains(&organization) {
                        organizations.push(organization);
                    }
                }
                for organization in &organizations {
                    access::require(tx, &actor, organization, Need::Edit).await?;
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
                let revoked = storage::revocations::revoke(tx, &actor, domain::now(), &selection).await?;
                let counts: BTreeMap<(String, String, String), u64> = storage::revocations::per_resource(tx, revoked)
                    .await?
                    .into_iter()
                    .map(|(org, kind, id, n)| ((org, kind, id), n))
                    .collect();
                let removed = cmd
                    .resources
                    .iter()
                    .map(|(org, res)| {
                        let key = (org.to_string(), res.kind.as_str().to_owned(), res.id.to_string());
                        ((org.clone(), res.clone()), counts.get(&key).copied().unwrap_or(0))
                    })
                    .collect();
                Ok(ResourceRemovals { removed, revision: revoked.revision })
            })
        })
        .await
    }

    /// Deletes the membership and every grant of the user in the organization.
    pub async fn remove_user_from_organization(
        &self,
        actor: Actor,
        cmd: RemoveUserFromOrganization,
    ) -> Result<RemovedFromOrganization> {
        write(&self.writes, actor, cmd, move |tx, actor, cmd| {
            Box::pin(async move {
                access::require(tx, &actor, &cmd.organization_id, Need::Edit).await?;
                let (org, user) = (cmd.organization_id.as_str(), cmd.user_id.as_str());
                if !storage::memberships::lock(tx, org, user, Lock::Update).await? {
                    resolve::organization(tx, &cmd.organization_id).await?;
                    if cmd.allow_missing {
                        let revision = storage::changes::current_revision(tx).await?;
                        return Ok(RemovedFromOrganization { removed_grant_count: 0, revision });
                    }
                    return Err(Error::NotFound {
                        kind: "membership",
                        ids: vec![format!("organizations/{org}/members/{user}")],
                    });
                }
                let selection =
                    Selection::UserInOrganization { organization_id: org.to_owned(), user_id: user.to_owned() };
                let now = domain::now();
                let revoked = storage::revocations::revoke(tx, &actor, now, &selection).await?;
                storage::memberships::delete(tx, org, user).await?;
                let member_removed = vec![NewChange::member(ChangeKind::MemberRemoved, org, user)];
                let revision = storage::changes::append(tx, &actor, now, member_removed).await?;
                Ok(RemovedFromOrganization { removed_grant_count: revoked.count, revision })
            })
        })
        .await
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
        resolve::organization(&self.db, &cmd.organization_id).await?;
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
            if !read.organization_exists {
                return Err(resolve::not_found_organization(&cmd.organization_id));
            }
            if !read.permission_exists {
                return Err(Error::NotFound { kind: "permission", ids: vec![cmd.permission.to_string()] });
            }
        }
        Ok(CheckOutcome { matched: read.matched, revision: read.revision })
    }
}
