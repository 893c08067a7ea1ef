use sea_orm::entity::prelude::*;

/// A service of a one-stop bundle, granted by agencies of one kind.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "services")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub code: String,
    pub bundle: String,
    pub agency_kind: String,
    pub names: Json,
    pub descriptions: Json,
    /// Eligibility rule over shared facts, as catalog data.
    pub rule: Json,
    /// Document codes an applicant attaches when the facts are not shared.
    pub required_documents: Json,
    pub position: i32,
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
