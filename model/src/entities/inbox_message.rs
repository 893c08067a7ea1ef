use sea_orm::entity::prelude::*;

use crate::EventKind;

/// The in-app record of a message to a person. Texts are rendered in the
/// reader's language when read, from the catalog's message texts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbox_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: EventKind,
    pub submission_id: Option<Uuid>,
    pub case_id: Option<Uuid>,
    pub status: Option<String>,
    /// The service or form the message is about.
    pub subject_code: Option<String>,
    pub reason: Option<String>,
    /// A document an office sent, for `document.returned`.
    pub document_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub read_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
