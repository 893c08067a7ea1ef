//! The append-only history of a case: who did what, when.

use chrono::{DateTime, Utc};
use onestop_model::entities::case_event;
use sea_orm::prelude::*;
use sea_orm::ActiveValue::Set;

use crate::auth::Principal;

/// Appends entries of one actor and action, one per case with its detail,
/// in one statement; `actor` is `None` when the service itself acted.
pub(super) async fn record(
    db: &impl ConnectionTrait,
    actor: Option<&Principal>,
    action: &str,
    entries: impl IntoIterator<Item = (Uuid, serde_json::Value)>,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let rows: Vec<_> = entries
        .into_iter()
        .map(|(case_id, detail)| entry(case_id, actor, action, detail, at))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    case_event::Entity::insert_many(rows).exec(db).await?;
    Ok(())
}

fn entry(
    case_id: Uuid,
    actor: Option<&Principal>,
    action: &str,
    detail: serde_json::Value,
    at: DateTime<Utc>,
) -> case_event::ActiveModel {
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
}
