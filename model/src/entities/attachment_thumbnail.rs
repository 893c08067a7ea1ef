use sea_orm::entity::prelude::*;

/// The small JPEG of a photo for the officials' tablets, made in the
/// background. `state` is `pending`, `ready` or `none` (a PDF, or a photo
/// that cannot be decoded within the memory bound; `detail` says which).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachment_thumbnails")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub attachment_id: Uuid,
    pub state: String,
    /// EXIF orientation (1–8) of the photo, applied to the thumbnail.
    pub orientation: i16,
    pub storage_key: Option<String>,
    pub byte_size: Option<i64>,
    pub sha256: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub detail: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
