use sea_orm::entity::prelude::*;

/// One attempt to push one event to one device, as the notifier saw it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "push_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub event_id: Uuid,
    pub device_id: Uuid,
    pub user_id: Uuid,
    /// The case the event was about, if any.
    pub case_id: Option<Uuid>,
    /// `fcm`, `apns` or `log`.
    pub provider: String,
    /// `delivered`, `token_removed`, `retry` or `failed`.
    pub outcome: String,
    pub detail: Option<String>,
    pub latency_ms: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
