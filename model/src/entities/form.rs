use sea_orm::entity::prelude::*;

/// A standard form an organisation files to an office of one kind.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "forms")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub code: String,
    pub agency_kind: String,
    pub names: Json,
    /// Field specifications: `[{"name", "kind", "required"}]`.
    pub fields: Json,
    /// Pages (photos or PDFs) a filing needs at least.
    pub min_pages: i32,
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
