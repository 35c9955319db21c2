//! sea-orm entities: one per table of `migrations/`. They never leave `storage`.

pub mod change;
pub mod grant;
pub mod membership;
pub mod organization;
pub mod permission;
pub mod revision_counter;
