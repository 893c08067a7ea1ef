use sea_orm::entity::prelude::*;

use crate::EventKind;

/// An event written in the same transaction as the change it describes,
/// kept until the relay has handed it to Redis.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: Uuid,
    pub kind: EventKind,
    pub payload: Json,
    pub created_at: DateTimeUtc,
    pub published_at: Option<DateTimeUtc>,
    pub publish_attempts: i32,
    /// A notifier finished the event (pushed, or gave it up to the
    /// dead-letter stream). Unset after the republish deadline: the relay
    /// publishes it again.
    pub handled_at: Option<DateTimeUtc>,
    /// A notifier last had the event in hand (e.g. waiting for a retry);
    /// the republish deadline counts from here too.
    pub seen_at: Option<DateTimeUtc>,
    /// The case the event is about, if any.
    pub case_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
