//! The permission catalog, part of the directory.

use uuid::Uuid;

use super::{Directory, ListPage, access, resolve};
use crate::{
    domain::{
        self, Actor, Error, PermissionName, Result, Revision,
        commands::PermissionRef,
        model::{ChangeKind, Permission},
        page::Page,
    },
    storage::{self, changes::NewChange, grants::Selection},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDeletion {
    pub revoked_grant_count: u64,
    pub revision: Revision,
}

impl Directory {
    pub async fn create_permission(
        &self,
        actor: Actor,
        name: PermissionName,
        description: String,
    ) -> Result<(Permission, Revision)> {
        self.writes
            .run(actor, (name, description), move |tx, author, (name, description)| {
                Box::pin(async move {
                    access::require_admin(&author.actor, "CreatePermission")?;
                    let permission = Permission {
                        // Time-ordered: a user's grants on one resource list in catalog order,
                        // the same on every run, and new ids append to the index's end.
                        id: Uuid::now_v7(),
                        name: name.to_string(),
                        description,
                        created_at: domain::now(),
                        built_in: false,
                    };
                    if !storage::permissions::insert(tx, &permission).await? {
                        return Err(Error::AlreadyExists { kind: "permission", id: name.to_string() });
                    }
                    let event = NewChange::permission(ChangeKind::PermissionCreated, permission.id);
                    storage::changes::append(tx, &author, permission.created_at, vec![event]).await?;
                    Ok(permission)
                })
            })
            .await
    }

    pub async fn get_permission(&self, permission: &PermissionRef) -> Result<Permission> {
        let found = match permission {
            PermissionRef::Id(id) => storage::permissions::find_by_id(&self.db, *id).await?,
            PermissionRef::Name(name) => storage::permissions::find_by_name(&self.db, name.as_str()).await?,
        };
        found.ok_or_else(|| Error::NotFound { kind: "permission", ids: vec![permission.to_string()] })
    }

    pub async fn list_permissions(&self, page: Page) -> Result<ListPage<Permission>> {
        const SCOPE: &str = "permissions";
        let after = resolve::page_after::<1>(&page, SCOPE)?;
        let items = storage::permissions::list(&self.db, after.as_ref().map(|[name]| name.as_str()), page.size).await?;
        let next_page_token = page.next_token(&items, SCOPE, |p| vec![p.name.clone()]);
        Ok(ListPage { items, next_page_token })
    }

    /// Removes the permission from the catalog; while it is granted only with `force`,
    /// which revokes those grants in the same transaction. The exclusive lock on the
    /// permission waits out grants in flight (their inserts key-share-lock it through the
    /// foreign key) and holds off new ones.
    pub async fn delete_permission(
        &self,
        actor: Actor,
        id: Uuid,
        force: bool,
        allow_missing: bool,
    ) -> Result<PermissionDeletion> {
        let (revoked_grant_count, revision) = self
            .writes
            .run(actor, (), move |tx, author, ()| {
                Box::pin(async move {
                    access::require_admin(&author.actor, "DeletePermission")?;
                    match storage::permissions::lock_for_delete(tx, id).await? {
                        Some(false) => {}
                        Some(true) => {
                            return Err(Error::FailedPrecondition {
                                reason: "BUILT_IN_PERMISSION",
                                subject: format!("permissions/{id}"),
                                message: format!(
                                    "permission {id} is built in (grantd reads it to decide who may act in an \
                                     organization) and cannot be deleted; revoke its grants instead"
                                ),
                            });
                        }
                        None if allow_missing => return Ok(0),
                        None => return Err(Error::NotFound { kind: "permission", ids: vec![id.to_string()] }),
                    }
                    let selection = Selection::Permission { permission_id: id };
                    if !force && storage::grants::any(tx, &selection).await? {
                        return Err(Error::FailedPrecondition {
                            reason: "PERMISSION_GRANTED",
                            subject: format!("permissions/{id}"),
                            message: format!("permission {id} is still granted; revoke it first or delete with force"),
                        });
                    }
                    let now = domain::now();
                    let revoked = storage::revocations::revoke(tx, &author, now, &selection).await?;
                    storage::permissions::delete(tx, id).await?;
                    let deleted = vec![NewChange::permission(ChangeKind::PermissionDeleted, id)];
                    storage::changes::append(tx, &author, now, deleted).await?;
                    Ok(revoked.count())
                })
            })
            .await?;
        Ok(PermissionDeletion { revoked_grant_count, revision })
    }
}
