//! Revisions are given after commit, not inside the writing transaction.
//!
//! A write inserts its change rows without a revision, tagged with the id of its write;
//! a short sequencing transaction (grantd's `storage::changes::sequence`) later numbers
//! every committed, unnumbered row. So `changes` gets an insertion id as its key, a
//! nullable `revision` (unique once given) and a `write_id`. SQLite cannot alter a
//! primary key, so the table is built anew on both databases and the rows copied over,
//! each keeping its revision (and taking it as its id). Existing rows belong to no
//! pending write: they get the nil write id.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000001_sequenced_changes"
    }
}

const ID_LEN: u32 = 128;

const COPIED_COLUMNS: &str =
    "kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        manager.create_table(sequenced_table(Alias::new("changes_sequenced"))).await?;
        let nil = if postgres { "'00000000-0000-0000-0000-000000000000'::uuid" } else { "zeroblob(16)" };
        let connection = manager.get_connection();
        connection
            .execute_unprepared(&format!(
                "INSERT INTO changes_sequenced (id, revision, write_id, {COPIED_COLUMNS}) \
                 SELECT revision, revision, {nil}, {COPIED_COLUMNS} FROM changes"
            ))
            .await?;
        manager.drop_table(Table::drop().table(Changes::Table).to_owned()).await?;
        manager.rename_table(Table::rename().table(Alias::new("changes_sequenced"), Changes::Table).to_owned()).await?;
        if postgres {
            // The identity's sequence was created under the new table's first name and
            // must continue after the copied ids.
            connection
                .execute_unprepared(
                    "SELECT setval(pg_get_serial_sequence('changes', 'id'), \
                     COALESCE((SELECT max(id) FROM changes), 0) + 1, false)",
                )
                .await?;
        }
        for index in sequenced_indexes() {
            manager.create_index(index).await?;
        }
        // Unnumbered rows are few and short-lived; the sequencer finds them through this
        // partial index without reading the numbered ones.
        connection
            .execute_unprepared("CREATE INDEX idx_changes_unsequenced ON changes (id) WHERE revision IS NULL")
            .await?;
        Ok(())
    }

    /// Back to revisions as the key: rows not numbered yet are dropped with their column.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(with_event_columns(
                Table::create()
                    .table(Alias::new("changes_numbered"))
                    .col(ColumnDef::new(Changes::Revision).big_integer().not_null().primary_key()),
            ))
            .await?;
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO changes_numbered (revision, {COPIED_COLUMNS}) \
                 SELECT revision, {COPIED_COLUMNS} FROM changes WHERE revision IS NOT NULL"
            ))
            .await?;
        manager.drop_table(Table::drop().table(Changes::Table).to_owned()).await?;
        manager.rename_table(Table::rename().table(Alias::new("changes_numbered"), Changes::Table).to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_changes_organization")
                    .table(Changes::Table)
                    .col(Changes::OrganizationId)
                    .col(Changes::Revision)
                    .to_owned(),
            )
            .await
    }
}

fn sequenced_table(name: Alias) -> TableCreateStatement {
    with_event_columns(
        Table::create()
            .table(name)
            .col(ColumnDef::new(Changes::Id).big_integer().not_null().auto_increment().primary_key())
            .col(ColumnDef::new(Changes::Revision).big_integer().null())
            .col(ColumnDef::new(Changes::WriteId).uuid().not_null()),
    )
}

/// What an event says, the same before and after this migration.
pub(crate) fn with_event_columns(table: &mut TableCreateStatement) -> TableCreateStatement {
    table
        .col(ColumnDef::new(Changes::Kind).small_integer().not_null())
        .col(ColumnDef::new(Changes::Actor).string_len(ID_LEN).not_null())
        .col(ColumnDef::new(Changes::RequestId).string_len(ID_LEN).not_null())
        .col(ColumnDef::new(Changes::At).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(Changes::OrganizationId).string_len(ID_LEN).null())
        .col(ColumnDef::new(Changes::UserId).string_len(ID_LEN).null())
        .col(ColumnDef::new(Changes::PermissionId).uuid().null())
        .col(ColumnDef::new(Changes::ResourceType).string_len(64).null())
        .col(ColumnDef::new(Changes::ResourceId).string_len(ID_LEN).null())
        .to_owned()
}

fn sequenced_indexes() -> [IndexCreateStatement; 3] {
    [
        Index::create().name("idx_changes_revision").table(Changes::Table).col(Changes::Revision).unique().to_owned(),
        Index::create()
            .name("idx_changes_organization")
            .table(Changes::Table)
            .col(Changes::OrganizationId)
            .col(Changes::Revision)
            .to_owned(),
        // A write's revision is the greatest of its events': one probe of this index.
        Index::create()
            .name("idx_changes_write")
            .table(Changes::Table)
            .col(Changes::WriteId)
            .col(Changes::Revision)
            .to_owned(),
    ]
}

#[derive(DeriveIden)]
pub(crate) enum Changes {
    Table,
    Id,
    Revision,
    WriteId,
    Kind,
    Actor,
    RequestId,
    At,
    OrganizationId,
    UserId,
    PermissionId,
    ResourceType,
    ResourceId,
}
