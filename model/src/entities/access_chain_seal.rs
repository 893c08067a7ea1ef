use sea_orm::entity::prelude::*;

/// A seal over a person's access records from before keyed links: the place
/// (`seq`) and link of the last such record, with an HMAC-SHA-256 (`mac`)
/// under the access-log key `key_id` names. Records without a key id are
/// believed only up to their person's seal. The row of the nil id records
/// the sealing itself (`seq`: how many people were sealed). Append-only.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "access_chain_seals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_user_id: Uuid,
    pub seq: i64,
    pub link: String,
    pub key_id: String,
    pub mac: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
