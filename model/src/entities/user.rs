use sea_orm::entity::prelude::*;

use crate::Role;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub display_name: String,
    pub locale: String,
    pub region: Option<String>,
    pub agency_id: Option<String>,
    pub organisation_id: Option<String>,
    /// Keyed blind index of the resident registration number: finds the
    /// person's shared facts without the number itself.
    pub rrn_index: Option<String>,
    /// The resident registration number, encrypted: `v1.<key id>.<base64>`.
    pub rrn_ciphertext: Option<String>,
    pub disabled: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
