//! Records that move in and out in bulk (BulkService), and why one was not written.

use chrono::{DateTime, Utc};

use super::{OrganizationId, PermissionName, Resource, UserId};

/// The most records one import batch may hold.
pub const MAX_IMPORT_BATCH: usize = 10_000;

/// One validated record of an import. Timestamps and authors absent from the record are
/// the import's own (now, the caller).
#[derive(Debug, Clone)]
pub enum ImportRecord {
    Organization {
        id: OrganizationId,
        display_name: String,
        created_at: Option<DateTime<Utc>>,
    },
    Permission {
        name: PermissionName,
        description: String,
        created_at: Option<DateTime<Utc>>,
    },
    Membership {
        organization_id: OrganizationId,
        user_id: UserId,
        added_at: Option<DateTime<Utc>>,
        added_by: Option<UserId>,
    },
    Grant {
        organization_id: OrganizationId,
        user_id: UserId,
        permission_name: PermissionName,
        resource: Resource,
        granted_at: Option<DateTime<Utc>>,
        granted_by: Option<UserId>,
    },
}

/// A record and its position in the import stream (from 0, across batches).
#[derive(Debug, Clone)]
pub struct Positioned<T> {
    pub position: u64,
    pub record: T,
}

/// Why the record at `position` was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub position: u64,
    pub field: String,
    pub reason: String,
}

/// What one import batch did (or, rehearsed, would have done).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub added: u64,
    pub already_held: u64,
}
