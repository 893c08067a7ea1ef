//! The append-only history of a case: who did what, when.

use chrono::{DateTime, Utc};
use onestop_model::entities::case_event;
use sea_orm::prelude::*;
use sea_orm::ActiveValue::Set;

use crate::auth::Principal;

/// Appends an entry; `actor` is `None` when the service itself acted.
pub(super) async fn record(
    db: &impl ConnectionTrait,
    case_id: Uuid,
    actor: Option<&Principal>,
    action: &str,
    detail: serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    case_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        case_id: Set(case_id),
        actor_id: Set(actor.map(|a| a.user_id)),
        actor_role: Set(actor
            .map(|a| a.role.as_str())
            .unwrap_or("service")
            .to_owned()),
        action: Set(action.to_owned()),
        detail: Set(detail),
        created_at: Set(at),
    }
    .insert(db)
    .await?;
    Ok(())
}
