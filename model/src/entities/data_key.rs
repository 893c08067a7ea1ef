use sea_orm::entity::prelude::*;

/// A data key for encrypting identifiers, stored only wrapped (encrypted)
/// by the key-encrypting key named by `kek_id`, which lives outside the
/// database. New ciphertexts use the active key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "data_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: String,
    pub kek_id: String,
    pub wrapped_key: String,
    pub active: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
