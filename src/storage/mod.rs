//! Persistence: sea-orm entities and set-based queries over SQLite or PostgreSQL.
//!
//! Query functions take any [`ConnectionTrait`] and never begin or commit: a use-case
//! opens one transaction with [`tx::write`] and composes them inside it. sea-orm types
//! stay in this module; callers see `domain` types.

pub mod changes;
pub mod checks;
mod connect;
mod entities;
mod error;
pub mod grants;
mod lock;
pub mod memberships;
pub mod organizations;
pub mod permissions;
mod reads;
pub mod tx;

pub use connect::{PoolOptions, checkpoint_sqlite_wal, connect, migrate_down, migrate_status, migrate_up};
pub use lock::Lock;
pub use reads::ReadConnections;
pub use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};
