use sea_orm::entity::prelude::*;

/// One access to a person's data by someone else (or by the service on
/// their behalf). Append-only; each record's link covers the link of the
/// one before it for the same person, so an altered record is detectable.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "access_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub subject_user_id: Uuid,
    /// Position in the subject's chain, from 1.
    pub seq: i64,
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub actor_agency_id: Option<String>,
    pub client_address: String,
    pub action: String,
    pub object_id: String,
    pub purpose: String,
    pub created_at: DateTimeUtc,
    pub prev_hash: String,
    /// The record's link: an HMAC-SHA-256 under the key `key_id` names, or
    /// for a record from before keyed links (`key_id` empty) a plain SHA-256.
    pub hash: String,
    pub key_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
