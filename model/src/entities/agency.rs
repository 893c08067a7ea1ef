use sea_orm::entity::prelude::*;

/// A public office that decides cases: a municipality's welfare office, a
/// public corporation, a health centre.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agencies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub kind: String,
    /// The region a local office serves; `None` for a national body.
    pub region: Option<String>,
    /// Display names by locale.
    pub names: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
