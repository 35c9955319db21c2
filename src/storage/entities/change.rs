use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "changes")]
pub struct Model {
    /// Insertion order; a write's events keep it within the write.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Given by the sequencer once the write committed; none before.
    pub revision: Option<i64>,
    pub write_id: Uuid,
    pub kind: i16,
    pub actor: String,
    pub request_id: String,
    pub at: DateTimeUtc,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    pub permission_id: Option<Uuid>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
