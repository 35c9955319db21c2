//! Domain values to protobuf messages.

use chrono::{DateTime, SubsecRound, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::domain::model::{Change, ChangeKind, Grant, Membership, Organization, Permission};

pub fn timestamp(at: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) })
}

/// A time a client sent, at the precision grantd stores (microseconds); `None` when it
/// is no instant chrono can hold.
pub fn time_from_wire(at: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(at.nanos).ok()?;
    DateTime::from_timestamp(at.seconds, nanos).map(|at| at.trunc_subsecs(6))
}

/// Revisions start at zero and only grow; the wire carries them unsigned.
pub fn revision(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

/// A revision a client sent; one beyond what the database can hold is simply far ahead.
pub fn revision_from_wire(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

impl From<Grant> for pb::Grant {
    fn from(g: Grant) -> Self {
        pb::Grant {
            organization_id: g.organization_id,
            user_id: g.user_id,
            permission_id: g.permission_id.to_string(),
            permission_name: g.permission_name,
            resource: Some(pb::Resource { r#type: g.resource_type, id: g.resource_id }),
            granted_at: timestamp(g.granted_at),
            granted_by: g.granted_by,
        }
    }
}

impl From<Organization> for pb::Organization {
    fn from(o: Organization) -> Self {
        pb::Organization { id: o.id, display_name: o.display_name, created_at: timestamp(o.created_at) }
    }
}

impl From<Membership> for pb::Membership {
    fn from(m: Membership) -> Self {
        pb::Membership {
            organization_id: m.organization_id,
            user_id: m.user_id,
            added_at: timestamp(m.added_at),
            added_by: m.added_by,
        }
    }
}

impl From<Permission> for pb::Permission {
    fn from(p: Permission) -> Self {
        pb::Permission {
            id: p.id.to_string(),
            name: p.name,
            description: p.description,
            created_at: timestamp(p.created_at),
            built_in: p.built_in,
        }
    }
}

impl From<ChangeKind> for pb::ChangeKind {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::GrantAdded => pb::ChangeKind::GrantAdded,
            ChangeKind::GrantRemoved => pb::ChangeKind::GrantRemoved,
            ChangeKind::MemberAdded => pb::ChangeKind::MemberAdded,
            ChangeKind::MemberRemoved => pb::ChangeKind::MemberRemoved,
            ChangeKind::OrganizationCreated => pb::ChangeKind::OrganizationCreated,
            ChangeKind::OrganizationDeleted => pb::ChangeKind::OrganizationDeleted,
            ChangeKind::PermissionCreated => pb::ChangeKind::PermissionCreated,
            ChangeKind::PermissionDeleted => pb::ChangeKind::PermissionDeleted,
        }
    }
}

impl From<Change> for pb::Change {
    fn from(c: Change) -> Self {
        pb::Change {
            revision: revision(c.revision),
            kind: pb::ChangeKind::from(c.kind).into(),
            actor: c.actor,
            request_id: c.request_id,
            at: timestamp(c.at),
            organization_id: c.organization_id.unwrap_or_default(),
            user_id: c.user_id.unwrap_or_default(),
            permission_id: c.permission_id.map(|id| id.to_string()).unwrap_or_default(),
            resource: c.resource.map(|(r#type, id)| pb::Resource { r#type, id }),
        }
    }
}
