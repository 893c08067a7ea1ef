//! The event schema on the Redis stream. One stream entry carries one event
//! as JSON in the field [`STREAM_FIELD`]. Events name no person beyond the
//! internal user id of the recipient.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream entry field holding the event JSON.
pub const STREAM_FIELD: &str = "event";

/// Stream of all events, under the configured key prefix.
pub fn stream_key(prefix: &str) -> String {
    format!("{prefix}events")
}

/// Stream where entries go after too many failed deliveries.
pub fn dead_letter_key(prefix: &str) -> String {
    format!("{prefix}events:dead")
}

/// Sorted set of entries waiting for a retry, scored by when they are due
/// (Unix milliseconds). Each member is `"{deliveries}\n{event JSON}"`.
pub fn retry_key(prefix: &str) -> String {
    format!("{prefix}events:retry")
}

/// Upper bound of the stream's length, kept by every `XADD` to it with
/// approximate trimming (`MAXLEN ~`). Consumers normally keep up; the
/// outbox still holds every event if they did not.
pub const STREAM_MAX_LEN: usize = 1_000_000;

/// The stream entry field counting the deliveries an event had before
/// this entry (a retry is a new entry); absent means none.
pub const DELIVERIES_FIELD: &str = "deliveries";

/// The consumer group every notifier joins.
pub const CONSUMER_GROUP: &str = "notifiers";

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum EventKind {
    #[sea_orm(string_value = "submission.received")]
    #[serde(rename = "submission.received")]
    SubmissionReceived,
    #[sea_orm(string_value = "case.decided")]
    #[serde(rename = "case.decided")]
    CaseDecided,
    #[sea_orm(string_value = "case.info_requested")]
    #[serde(rename = "case.info_requested")]
    CaseInfoRequested,
    #[sea_orm(string_value = "document.returned")]
    #[serde(rename = "document.returned")]
    DocumentReturned,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SubmissionReceived => "submission.received",
            EventKind::CaseDecided => "case.decided",
            EventKind::CaseInfoRequested => "case.info_requested",
            EventKind::DocumentReturned => "document.returned",
        }
    }

    /// Whether the recipient's phones are prompted. A receipt is shown by
    /// the app that just submitted, so it only goes to the inbox.
    pub fn is_pushed(self) -> bool {
        !matches!(self, EventKind::SubmissionReceived)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// Unique; delivery is at least once, so consumers de-duplicate on it.
    pub event_id: Uuid,
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub recipient_user_id: Uuid,
    pub submission_id: Uuid,
    pub case_id: Option<Uuid>,
    /// The case's status after the event.
    pub status: Option<String>,
}

impl StreamEvent {
    /// Key under which phones collapse repeated pushes: one per case and
    /// status, so a retried delivery never shows twice.
    pub fn collapse_key(&self) -> String {
        let subject = self.case_id.unwrap_or(self.submission_id).simple();
        match self.kind {
            // Each document is news of its own; only its retries collapse.
            EventKind::DocumentReturned => {
                let event = self.event_id.simple().to_string();
                format!("{subject}-doc-{}", &event[event.len() - 12..])
            }
            _ => format!(
                "{subject}-{}",
                self.status.as_deref().unwrap_or(self.kind.as_str())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, status: &str) -> StreamEvent {
        StreamEvent {
            event_id: Uuid::now_v7(),
            kind,
            occurred_at: chrono::Utc::now(),
            recipient_user_id: Uuid::new_v4(),
            submission_id: Uuid::new_v4(),
            case_id: Some(Uuid::new_v4()),
            status: Some(status.into()),
        }
    }

    #[test]
    fn a_decision_collapses_per_case_and_status_and_documents_never_hide_it() {
        let decided = event(EventKind::CaseDecided, "approved");
        let mut retried = decided.clone();
        retried.event_id = Uuid::now_v7();
        assert_eq!(decided.collapse_key(), retried.collapse_key());
        let mut document = event(EventKind::DocumentReturned, "approved");
        document.case_id = decided.case_id;
        assert_ne!(document.collapse_key(), decided.collapse_key());
        // APNs takes at most 64 bytes.
        assert!(document.collapse_key().len() <= 64 && decided.collapse_key().len() <= 64);
    }
}
