//! Organizations and their members.

use super::{
    ListPage, Writes,
    access::{self, Need},
    resolve,
};
use crate::{
    domain::{
        self, Actor, Error, OrganizationId, Result, Revision, UserId,
        model::{ChangeKind, Membership, Organization},
        page::Page,
    },
    storage::{self, DatabaseConnection, Lock, changes::NewChange, grants::Selection},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationDeletion {
    pub removed_member_count: u64,
    pub removed_grant_count: u64,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipOutcome {
    pub created: bool,
    pub membership: Membership,
    pub revision: Revision,
}

/// Organizations, memberships and (in `catalog`) the permission catalog.
#[derive(Debug, Clone)]
pub struct Directory {
    pub(super) db: DatabaseConnection,
    pub(super) writes: Writes,
}

impl Directory {
    /// Reads on `db`, writes through `writes`.
    pub fn new(db: DatabaseConnection, writes: Writes) -> Self {
        Self { db, writes }
    }

    pub async fn create_organization(
        &self,
        actor: Actor,
        id: OrganizationId,
        display_name: String,
    ) -> Result<(Organization, Revision)> {
        self.writes
            .run(actor, (id, display_name), move |tx, author, (id, display_name)| {
                Box::pin(async move {
                    access::require_admin_of(&author.actor, &id, "CreateOrganization")?;
                    let now = domain::now();
                    if !storage::organizations::insert(tx, id.as_str(), &display_name, now).await? {
                        return Err(Error::AlreadyExists { kind: "organization", id: id.to_string() });
                    }
                    let event = NewChange::organization(ChangeKind::OrganizationCreated, id.as_str());
                    storage::changes::append(tx, &author, now, vec![event]).await?;
                    Ok(Organization { id: id.into_string(), display_name, created_at: now })
                })
            })
            .await
    }

    pub async fn get_organization(&self, actor: Actor, id: &OrganizationId) -> Result<Organization> {
        access::require(&self.db, &actor, id, Need::View).await?;
        storage::organizations::find(&self.db, id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound { kind: "organization", ids: vec![id.to_string()] })
    }

    pub async fn list_organizations(&self, actor: Actor, page: Page) -> Result<ListPage<Organization>> {
        access::require_admin(&actor, "ListOrganizations")?;
        const SCOPE: &str = "organizations";
        let after = resolve::page_after::<1>(&page, SCOPE)?;
        let items = storage::organizations::list(&self.db, after.as_ref().map(|[id]| id.as_str()), page.size).await?;
        let next_page_token = page.next_token(&items, SCOPE, |o| vec![o.id.clone()]);
        Ok(ListPage { items, next_page_token })
    }

    /// Deletes the organization with every membership and grant in it. Locking the
    /// organization and then every membership waits out in-flight grant writes there and
    /// holds off new ones until the deletion commits.
    pub async fn delete_organization(
        &self,
        actor: Actor,
        id: OrganizationId,
        allow_missing: bool,
    ) -> Result<OrganizationDeletion> {
        let ((removed_member_count, removed_grant_count), revision) = self
            .writes
            .run(actor, id, move |tx, author, id| {
                Box::pin(async move {
                    access::require_admin_of(&author.actor, &id, "DeleteOrganization")?;
                    if !storage::organizations::lock(tx, id.as_str(), Lock::Update).await? {
                        if allow_missing {
                            return Ok((0, 0));
                        }
                        return Err(Error::NotFound { kind: "organization", ids: vec![id.to_string()] });
                    }
                    storage::memberships::lock_all(tx, id.as_str()).await?;
                    let selection = Selection::Organization { organization_id: id.to_string() };
                    let now = domain::now();
                    let revoked = storage::revocations::revoke(tx, &author, now, &selection).await?;
                    let members = storage::memberships::delete_all(tx, id.as_str()).await?;
                    storage::organizations::delete(tx, id.as_str()).await?;
                    let mut events: Vec<NewChange> = members
                        .iter()
                        .map(|user| NewChange::member(ChangeKind::MemberRemoved, id.as_str(), user))
                        .collect();
                    events.push(NewChange::organization(ChangeKind::OrganizationDeleted, id.as_str()));
                    storage::changes::append(tx, &author, now, events).await?;
                    Ok((members.len() as u64, revoked.count()))
                })
            })
            .await?;
        Ok(OrganizationDeletion { removed_member_count, removed_grant_count, revision })
    }

    /// Makes the user a member; idempotent. The organization row is share-locked so a
    /// concurrent DeleteOrganization either waits for this or makes this NOT_FOUND.
    pub async fn add_user_to_organization(
        &self,
        actor: Actor,
        organization_id: OrganizationId,
        user_id: UserId,
    ) -> Result<MembershipOutcome> {
        let ((created, membership), revision) = self
            .writes
            .run(actor, (organization_id, user_id), move |tx, author, (org, user)| {
                Box::pin(async move {
                    access::require(tx, &author.actor, &org, Need::Edit).await?;
                    if !storage::organizations::lock(tx, org.as_str(), Lock::KeyShare).await? {
                        return Err(Error::NotFound { kind: "organization", ids: vec![org.to_string()] });
                    }
                    let now = domain::now();
                    let created =
                        storage::memberships::insert(tx, org.as_str(), user.as_str(), now, &author.actor.subject)
                            .await?;
                    if created {
                        let added = vec![NewChange::member(ChangeKind::MemberAdded, org.as_str(), user.as_str())];
                        storage::changes::append(tx, &author, now, added).await?;
                    }
                    // At READ COMMITTED a membership that already existed (the insert did
                    // nothing and locked nothing) can be removed and committed before this
                    // read; running the transaction again then creates it.
                    let membership =
                        storage::memberships::find(tx, org.as_str(), user.as_str()).await?.ok_or(Error::Conflict)?;
                    Ok((created, membership))
                })
            })
            .await?;
        Ok(MembershipOutcome { created, membership, revision })
    }

    pub async fn list_organization_members(
        &self,
        actor: Actor,
        organization_id: &OrganizationId,
        page: Page,
        at_least_revision: u64,
    ) -> Result<ListPage<Membership>> {
        access::require(&self.db, &actor, organization_id, Need::View).await?;
        if at_least_revision > 0 {
            resolve::revision_at_least(&self.db, at_least_revision).await?;
        }
        let scope = format!("members\n{organization_id}");
        let after = resolve::page_after::<1>(&page, &scope)?;
        resolve::organization(&self.db, organization_id).await?;
        let items = storage::memberships::list_by_organization(
            &self.db,
            organization_id.as_str(),
            after.as_ref().map(|[user]| user.as_str()),
            page.size,
        )
        .await?;
        let next_page_token = page.next_token(&items, &scope, |m| vec![m.user_id.clone()]);
        Ok(ListPage { items, next_page_token })
    }

    /// A user's memberships: their own, or anyone's for an admin; with a token scoped to
    /// organizations, only those.
    pub async fn list_user_organizations(
        &self,
        actor: Actor,
        user_id: &UserId,
        page: Page,
        at_least_revision: u64,
    ) -> Result<ListPage<Membership>> {
        if actor.subject != user_id.as_str() {
            access::require_admin(&actor, "ListUserOrganizations of another user")?;
        }
        if at_least_revision > 0 {
            resolve::revision_at_least(&self.db, at_least_revision).await?;
        }
        let scope = format!("memberships\n{user_id}");
        let after = resolve::page_after::<1>(&page, &scope)?;
        let items = storage::memberships::list_by_user(
            &self.db,
            user_id.as_str(),
            actor.organizations.as_deref(),
            after.as_ref().map(|[org]| org.as_str()),
            page.size,
        )
        .await?;
        let next_page_token = page.next_token(&items, &scope, |m| vec![m.organization_id.clone()]);
        Ok(ListPage { items, next_page_token })
    }
}
