//! The vocabulary of grantd: validated identifiers, resources, commands and the one error
//! type every layer speaks. Nothing here knows about protobuf or SQL.

pub mod bulk;
pub mod commands;
mod error;
mod ids;
pub mod model;
pub mod page;
mod resource;

pub use error::{Error, FieldViolation, Interruption, Result};
pub use ids::{
    IdError, OrganizationId, PermissionName, ResourceId, ResourceType, UserId, check_description, check_display_name,
};
pub use resource::Resource;

/// The most permissions or resources one request may name.
pub const MAX_BATCH: usize = 1_000;

/// Who is calling, with what standing, in which request; every change event records
/// `subject` and `request_id`.
#[derive(Debug, Clone)]
pub struct Actor {
    pub subject: String,
    pub request_id: String,
    /// Holds the `grants:admin` scope: may do everything.
    pub admin: bool,
    /// When set, the caller's token acts in these organizations only.
    pub organizations: Option<Vec<String>>,
    /// The last second (Unix time) at which the caller's token is still accepted; `None`
    /// when nothing expires (authentication is off).
    pub valid_until: Option<u64>,
}

/// The current time at the precision both databases store (microseconds), so that what
/// a write answers equals what a later read returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// A revision of the change log: grows by one with every committed change.
pub type Revision = i64;
