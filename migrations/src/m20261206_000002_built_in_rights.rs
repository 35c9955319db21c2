//! The rights grantd itself reads (`edit_org_users`, `view_org_users`) are built into
//! every catalog: `permissions.built_in` marks them, and they exist from the first start
//! instead of waiting for an administrator to create them under exactly these names.
//!
//! An installation whose administrator already created one keeps it (id, description,
//! grants) and it becomes built in. They are part of the schema, like the revision
//! counter's row: no change event records them.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000002_built_in_rights"
    }
}

/// Name, fixed id (the same on every installation that did not have it before) and
/// description of each built-in right; written into SQL as they are, so no quotes.
const BUILT_IN: [(&str, &str, &str); 2] = [
    (
        "edit_org_users",
        "00000000-0000-4000-8000-000000000001",
        "Built in. Held org-wide: add and remove the members of the organization and their grants \
         (only permissions the holder has org-wide there).",
    ),
    (
        "view_org_users",
        "00000000-0000-4000-8000-000000000002",
        "Built in. Held org-wide: read the members, grants and changes of the organization.",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Permissions::Table)
                    .add_column(ColumnDef::new(Permissions::BuiltIn).boolean().not_null().default(false))
                    .to_owned(),
            )
            .await?;
        let postgres = manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        let connection = manager.get_connection();
        for (name, id, description) in BUILT_IN {
            // sqlx reads SQLite's UUIDs as 16-byte blobs and its timestamps as RFC 3339 text.
            let (id, now) = if postgres {
                (format!("'{id}'::uuid"), "now()".to_owned())
            } else {
                (format!("unhex('{}')", id.replace('-', "")), "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')".to_owned())
            };
            connection
                .execute_unprepared(&format!("UPDATE permissions SET built_in = TRUE WHERE name = '{name}'"))
                .await?;
            connection
                .execute_unprepared(&format!(
                    "INSERT INTO permissions (id, name, description, created_at, built_in) \
                     SELECT {id}, '{name}', '{description}', {now}, TRUE \
                     WHERE NOT EXISTS (SELECT 1 FROM permissions WHERE name = '{name}')"
                ))
                .await?;
        }
        Ok(())
    }

    /// The column goes; the rights stay as ordinary catalog entries, with their grants.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Permissions::Table).drop_column(Permissions::BuiltIn).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Permissions {
    Table,
    BuiltIn,
}
