use sea_orm::entity::prelude::*;

/// One access to a person's data by someone else (or by the service on
/// their behalf). Append-only; each record carries the hash of the one
/// before it for the same person, so an altered record is detectable.
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
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
