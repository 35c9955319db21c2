//! What grantd stores, as the service layer hands it out. Storage builds these from rows;
//! the API layer turns them into protobuf.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Revision;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub organization_id: String,
    pub user_id: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// One of the rights grantd reads itself, in every catalog and never deleted.
    pub built_in: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub organization_id: String,
    pub user_id: String,
    pub permission_id: Uuid,
    pub permission_name: String,
    pub resource_type: String,
    pub resource_id: String,
    pub granted_at: DateTime<Utc>,
    pub granted_by: String,
}

/// What a change event records. The discriminants are stored: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ChangeKind {
    GrantAdded = 1,
    GrantRemoved = 2,
    MemberAdded = 3,
    MemberRemoved = 4,
    OrganizationCreated = 5,
    OrganizationDeleted = 6,
    PermissionCreated = 7,
    PermissionDeleted = 8,
}

impl ChangeKind {
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Self> {
        use ChangeKind::*;
        [
            GrantAdded,
            GrantRemoved,
            MemberAdded,
            MemberRemoved,
            OrganizationCreated,
            OrganizationDeleted,
            PermissionCreated,
            PermissionDeleted,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: Revision,
    pub kind: ChangeKind,
    pub actor: String,
    pub request_id: String,
    pub at: DateTime<Utc>,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    pub permission_id: Option<Uuid>,
    /// `(type, id)` of the resource, for grant changes.
    pub resource: Option<(String, String)>,
}
