use sea_orm::entity::prelude::*;

/// A resumable (tus) upload: how much of the file has arrived, who may
/// write to it now, and the attachment it became once complete.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    /// `Upload-Length`: the size of the whole file.
    pub upload_length: i64,
    /// `Upload-Offset`: bytes received and kept so far.
    pub upload_offset: i64,
    pub part_count: i32,
    /// `Upload-Metadata` as the client sent it.
    pub metadata: Option<String>,
    /// The file name from the metadata, as text.
    pub file_name: Option<String>,
    /// Set while one request writes to the upload; others get 409.
    pub lock_token: Option<Uuid>,
    pub locked_at: Option<DateTimeUtc>,
    pub attachment_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::upload_part::Entity")]
    Parts,
}

impl Related<super::upload_part::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Parts.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
