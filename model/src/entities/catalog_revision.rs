use sea_orm::entity::prelude::*;

/// Which catalog the database holds: one row, given a new revision each
/// time the catalog is seeded, so every replica can tell cheaply when to
/// read the catalog's names and texts again.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "catalog_revision")]
pub struct Model {
    /// Always [`ONLY_ROW`].
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub revision: Uuid,
    pub seeded_at: DateTimeUtc,
}

/// The id of the one row.
pub const ONLY_ROW: i32 = 1;

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
