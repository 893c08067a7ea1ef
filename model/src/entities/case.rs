use sea_orm::entity::prelude::*;

use crate::CaseStatus;

/// One request of a submission, routed to one agency. `version` grows with
/// every change and is the case's ETag.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub submission_id: Uuid,
    pub applicant_id: Uuid,
    pub agency_id: String,
    pub service_code: Option<String>,
    pub form_code: Option<String>,
    pub status: CaseStatus,
    pub version: i32,
    pub claimed_by: Option<Uuid>,
    /// When the claim was made (or renewed); it lapses after the configured
    /// claim lifetime.
    pub claimed_at: Option<DateTimeUtc>,
    pub fields: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
