//! Whether the applicant was told: the notifier's push attempts for a case,
//! summed up for the official's view.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use onestop_model::entities::{outbox, push_attempt};
use onestop_model::EventKind;
use poem_openapi::Object;
use sea_orm::prelude::*;
use sea_orm::QuerySelect;

/// How the pushes about a case went. Counted per event and phone: an
/// event that reached two phones counts two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Object)]
pub struct NotificationView {
    /// Pushes the provider (FCM, APNs) accepted.
    pub delivered: u32,
    /// Pushes still to go: waiting for a retry, or events the notifier has
    /// not handled yet (each counts one until it has).
    pub pending: u32,
    /// Pushes given up: the provider refused them, or the phone's app was
    /// uninstalled.
    pub failed: u32,
    /// When the notifier last tried a phone for this case.
    #[oai(skip_serializing_if_is_none)]
    pub last_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PairState {
    Pending,
    Failed,
    Delivered,
}

pub async fn notification_of(
    db: &impl ConnectionTrait,
    case_id: Uuid,
) -> Result<NotificationView, DbErr> {
    let attempts: Vec<(Uuid, Uuid, String, DateTime<Utc>)> = push_attempt::Entity::find()
        .select_only()
        .column(push_attempt::Column::EventId)
        .column(push_attempt::Column::DeviceId)
        .column(push_attempt::Column::Outcome)
        .column(push_attempt::Column::CreatedAt)
        .filter(push_attempt::Column::CaseId.eq(case_id))
        .into_tuple()
        .all(db)
        .await?;
    let mut view = NotificationView::default();
    let mut pairs: HashMap<(Uuid, Uuid), PairState> = HashMap::new();
    let mut attempted_events = std::collections::HashSet::new();
    for (event_id, device_id, outcome, at) in attempts {
        attempted_events.insert(event_id);
        view.last_attempt_at = view.last_attempt_at.max(Some(at));
        let state = match outcome.as_str() {
            "delivered" => PairState::Delivered,
            "failed" | "token_removed" => PairState::Failed,
            _ => PairState::Pending,
        };
        let slot = pairs.entry((event_id, device_id)).or_insert(state);
        *slot = (*slot).max(state);
    }
    let unhandled: Vec<(Uuid, EventKind)> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::EventId)
        .column(outbox::Column::Kind)
        .filter(outbox::Column::CaseId.eq(case_id))
        .filter(outbox::Column::HandledAt.is_null())
        .into_tuple()
        .all(db)
        .await?;
    let open: std::collections::HashSet<Uuid> = unhandled.iter().map(|(id, _)| *id).collect();
    for ((event_id, _), state) in &pairs {
        match state {
            PairState::Delivered => view.delivered += 1,
            PairState::Failed => view.failed += 1,
            // Still waiting for a retry only while the notifier has not
            // given the event up (dead-lettered or the phone is gone).
            PairState::Pending if open.contains(event_id) => view.pending += 1,
            PairState::Pending => view.failed += 1,
        }
    }
    view.pending += unhandled
        .into_iter()
        .filter(|(event_id, kind)| kind.is_pushed() && !attempted_events.contains(event_id))
        .count() as u32;
    Ok(view)
}
