use sea_orm::entity::prelude::*;

/// A person in the embedded stand-in of the public registry: verified
/// facts (children, region, disability, multicultural family) found by the
/// blind index of their resident registration number.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registry_people")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub rrn_index: String,
    pub facts: Json,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
