//! Organizations, memberships, the permission catalog, grants, the change log and the
//! revision counter.
//!
//! Foreign keys have no ON DELETE CASCADE on purpose: every deletion is made by the
//! service together with its change events, and a forgotten one must fail loudly
//! instead of silently removing rows that the audit trail never hears of.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000001_initial"
    }
}

/// Longest id the contract allows (organization, user and resource ids).
const ID_LEN: u32 = 128;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(ColumnDef::new(Organizations::Id).string_len(ID_LEN).not_null().primary_key())
                    .col(ColumnDef::new(Organizations::DisplayName).string_len(800).not_null())
                    .col(ColumnDef::new(Organizations::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(ColumnDef::new(Memberships::OrganizationId).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Memberships::UserId).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Memberships::AddedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Memberships::AddedBy).string_len(ID_LEN).not_null())
                    .primary_key(Index::create().col(Memberships::OrganizationId).col(Memberships::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_organization")
                            .from(Memberships::Table, Memberships::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // ListUserOrganizations.
        manager
            .create_index(
                Index::create()
                    .name("idx_memberships_user")
                    .table(Memberships::Table)
                    .col(Memberships::UserId)
                    .col(Memberships::OrganizationId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Permissions::Table)
                    .col(ColumnDef::new(Permissions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Permissions::Name).string_len(ID_LEN).not_null().unique_key())
                    .col(ColumnDef::new(Permissions::Description).string_len(4096).not_null())
                    .col(ColumnDef::new(Permissions::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        // The primary key serves Check, List (in its order) and RemoveUserFromOrganization
        // as prefix scans.
        manager
            .create_table(
                Table::create()
                    .table(Grants::Table)
                    .col(ColumnDef::new(Grants::OrganizationId).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Grants::UserId).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Grants::ResourceType).string_len(64).not_null())
                    .col(ColumnDef::new(Grants::ResourceId).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Grants::PermissionId).uuid().not_null())
                    .col(ColumnDef::new(Grants::GrantedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Grants::GrantedBy).string_len(ID_LEN).not_null())
                    .primary_key(
                        Index::create()
                            .col(Grants::OrganizationId)
                            .col(Grants::UserId)
                            .col(Grants::ResourceType)
                            .col(Grants::ResourceId)
                            .col(Grants::PermissionId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_grants_membership")
                            .from(Grants::Table, (Grants::OrganizationId, Grants::UserId))
                            .to(Memberships::Table, (Memberships::OrganizationId, Memberships::UserId)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_grants_permission")
                            .from(Grants::Table, Grants::PermissionId)
                            .to(Permissions::Table, Permissions::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // RemoveResourcePermissions with all_users.
        manager
            .create_index(
                Index::create()
                    .name("idx_grants_resource")
                    .table(Grants::Table)
                    .col(Grants::OrganizationId)
                    .col(Grants::ResourceType)
                    .col(Grants::ResourceId)
                    .to_owned(),
            )
            .await?;
        // DeletePermission.
        manager
            .create_index(
                Index::create().name("idx_grants_permission").table(Grants::Table).col(Grants::PermissionId).to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .col(ColumnDef::new(Changes::Revision).big_integer().not_null().primary_key())
                    .col(ColumnDef::new(Changes::Kind).small_integer().not_null())
                    .col(ColumnDef::new(Changes::Actor).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Changes::RequestId).string_len(ID_LEN).not_null())
                    .col(ColumnDef::new(Changes::At).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Changes::OrganizationId).string_len(ID_LEN).null())
                    .col(ColumnDef::new(Changes::UserId).string_len(ID_LEN).null())
                    .col(ColumnDef::new(Changes::PermissionId).uuid().null())
                    .col(ColumnDef::new(Changes::ResourceType).string_len(64).null())
                    .col(ColumnDef::new(Changes::ResourceId).string_len(ID_LEN).null())
                    .to_owned(),
            )
            .await?;
        // ListChanges filtered by organization.
        manager
            .create_index(
                Index::create()
                    .name("idx_changes_organization")
                    .table(Changes::Table)
                    .col(Changes::OrganizationId)
                    .col(Changes::Revision)
                    .to_owned(),
            )
            .await?;

        // One row: the latest committed revision. Writers bump it last, just before
        // commit, so revisions are handed out in commit order.
        manager
            .create_table(
                Table::create()
                    .table(RevisionCounter::Table)
                    .col(ColumnDef::new(RevisionCounter::Id).small_integer().not_null().primary_key())
                    .col(ColumnDef::new(RevisionCounter::Value).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RevisionCounter::Table)
                    .columns([RevisionCounter::Id, RevisionCounter::Value])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RevisionCounter::Table.into_iden(),
            Changes::Table.into_iden(),
            Grants::Table.into_iden(),
            Permissions::Table.into_iden(),
            Memberships::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    DisplayName,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    OrganizationId,
    UserId,
    AddedAt,
    AddedBy,
}

#[derive(DeriveIden)]
enum Permissions {
    Table,
    Id,
    Name,
    Description,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    OrganizationId,
    UserId,
    ResourceType,
    ResourceId,
    PermissionId,
    GrantedAt,
    GrantedBy,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    Revision,
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

#[derive(DeriveIden)]
enum RevisionCounter {
    Table,
    Id,
    Value,
}
