//! Events wait for their revision in a queue of their own, `pending_changes`, instead of
//! sitting unnumbered in `changes`.
//!
//! Numbering them in place updated every event once (a second version of the row and an
//! entry in each index of `changes`), and left a dead entry per event in the partial
//! index that found the unnumbered ones: reading it cost more as the log grew, until a
//! vacuum of the whole log. Now a write inserts its events into the queue, and the
//! sequencer moves them into `changes` with their revisions, in one statement: each event
//! reaches the log once, already numbered. The queue holds only what waits, and grantd
//! vacuums it (`storage::changes::vacuum_pending`).
//!
//! Rows still unnumbered at migration time move to the queue, in their order.

use sea_orm_migration::prelude::*;

use crate::m20261206_000001_sequenced_changes::{Changes, with_event_columns};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000003_pending_changes"
    }
}

const EVENT_COLUMNS: &str =
    "write_id, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(with_event_columns(
                Table::create()
                    .table(PendingChanges::Table)
                    .col(ColumnDef::new(Changes::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Changes::WriteId).uuid().not_null()),
            ))
            .await?;
        let connection = manager.get_connection();
        connection
            .execute_unprepared(&format!(
                "INSERT INTO pending_changes ({EVENT_COLUMNS}) \
                 SELECT {EVENT_COLUMNS} FROM changes WHERE revision IS NULL ORDER BY id"
            ))
            .await?;
        connection.execute_unprepared("DELETE FROM changes WHERE revision IS NULL").await?;
        manager.drop_index(Index::drop().name("idx_changes_unsequenced").table(Changes::Table).to_owned()).await
    }

    /// Queued events go back into `changes` unnumbered, where the previous sequencer finds them.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection
            .execute_unprepared("CREATE INDEX idx_changes_unsequenced ON changes (id) WHERE revision IS NULL")
            .await?;
        connection
            .execute_unprepared(&format!(
                "INSERT INTO changes ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM pending_changes ORDER BY id"
            ))
            .await?;
        manager.drop_table(Table::drop().table(PendingChanges::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum PendingChanges {
    Table,
}
