//! What each use-case is asked to do, already validated by the API layer.

use std::fmt;

use uuid::Uuid;

use super::{OrganizationId, PermissionName, Resource, ResourceId, ResourceType, UserId, page::Page};

/// Permissions named by catalog id and/or name; each list free of duplicates, together
/// 1..=MAX_BATCH entries.
#[derive(Debug, Clone)]
pub struct PermissionRefs {
    pub ids: Vec<Uuid>,
    pub names: Vec<PermissionName>,
}

/// AddUserPermissions and RemoveUserPermissions.
#[derive(Debug, Clone)]
pub struct ChangeUserPermissions {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub permissions: PermissionRefs,
    pub resource: Resource,
}

/// RemoveResourcePermissions: one user's grants on the resources, or everyone's.
#[derive(Debug, Clone)]
pub struct RemoveResourcePermissions {
    pub user_id: Option<UserId>,
    /// Distinct `(organization, resource)` pairs in request order.
    pub resources: Vec<(OrganizationId, Resource)>,
}

#[derive(Debug, Clone)]
pub struct RemoveUserFromOrganization {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub allow_missing: bool,
}

#[derive(Debug, Clone)]
pub struct ListUserPermissions {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    /// Only this type, and with an id only this resource.
    pub filter: Option<(ResourceType, Option<ResourceId>)>,
    pub page: Page,
    /// 0, or the revision the answer must include, as the client sent it.
    pub at_least_revision: u64,
}

/// A permission named one way or the other.
#[derive(Debug, Clone)]
pub enum PermissionRef {
    Id(Uuid),
    Name(PermissionName),
}

/// As a NOT_FOUND names it: the id, or the name.
impl fmt::Display for PermissionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionRef::Id(id) => id.fmt(f),
            PermissionRef::Name(name) => name.fmt(f),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckPermission {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub permission: PermissionRef,
    pub resource: Resource,
    /// 0, or the revision the answer must include, as the client sent it.
    pub at_least_revision: u64,
}
