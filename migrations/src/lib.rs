//! grantd's schema, as sea-orm migrations. Each migration must run on SQLite and
//! PostgreSQL alike (SQLite's ALTER TABLE is limited: prefer new tables and indexes).

pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261206_000001_sequenced_changes;
mod m20261206_000002_built_in_rights;
mod m20261206_000003_pending_changes;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261206_000001_sequenced_changes::Migration),
            Box::new(m20261206_000002_built_in_rights::Migration),
            Box::new(m20261206_000003_pending_changes::Migration),
        ]
    }
}
