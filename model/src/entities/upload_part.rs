use sea_orm::entity::prelude::*;

/// One stored piece of a resumable upload, from one PATCH request.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "upload_parts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub upload_id: Uuid,
    /// Where in the file the piece starts.
    #[sea_orm(primary_key, auto_increment = false)]
    pub start_offset: i64,
    pub byte_size: i64,
    pub storage_key: String,
    /// The photo filter's state after this piece (JSON), for the next
    /// PATCH; none for a PDF, which passes unfiltered.
    pub filter_state: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::upload::Entity",
        from = "Column::UploadId",
        to = "super::upload::Column::Id"
    )]
    Upload,
}

impl Related<super::upload::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Upload.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
