//! The operator's view of the dead-letter stream: list, inspect and
//! replay entries the notifier gave up on (`onestop-notifier dead-letters
//! …`). Replaying puts the event back into the stream as a new entry with
//! its delivery count reset, and removes it from the dead letters, in one
//! transaction; the database forgets it was handled, so the notifier tries
//! every device that has no final outcome yet.

use chrono::Utc;
use onestop_model::entities::outbox;
use onestop_model::events::{dead_letter_key, stream_key, STREAM_FIELD};
use onestop_model::StreamEvent;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply};
use redis::AsyncCommands;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use serde_json::Value;

use crate::error::NotifierError;

/// One dead letter as the operator sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// The id in the dead-letter stream.
    pub id: String,
    /// The id the entry had in the event stream.
    pub entry_id: String,
    pub reason: String,
    pub deliveries: u64,
    pub consumer: String,
    pub failed_at: String,
    /// The event, parsed when it parses, else as the raw text.
    pub event: Value,
}

impl DeadLetter {
    fn from_entry(entry: &StreamId) -> Self {
        let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
        let raw = text(STREAM_FIELD);
        DeadLetter {
            id: entry.id.clone(),
            entry_id: text("entry_id"),
            reason: text("reason"),
            deliveries: text("deliveries").parse().unwrap_or(0),
            consumer: text("consumer"),
            failed_at: text("failed_at"),
            event: serde_json::from_str(&raw).unwrap_or(Value::String(raw)),
        }
    }

    /// One line: id, deliveries, when, the event kind and the reason.
    pub fn summary(&self) -> String {
        let kind = self.event["kind"].as_str().unwrap_or("?");
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.id, self.deliveries, self.failed_at, kind, self.reason
        )
    }
}

pub struct DeadLetters {
    redis: MultiplexedConnection,
    db: DatabaseConnection,
    stream: String,
    dead_letters: String,
}

impl DeadLetters {
    pub fn new(redis: MultiplexedConnection, db: DatabaseConnection, prefix: &str) -> Self {
        DeadLetters {
            redis,
            db,
            stream: stream_key(prefix),
            dead_letters: dead_letter_key(prefix),
        }
    }

    /// The oldest `limit` dead letters.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, NotifierError> {
        let mut redis = self.redis.clone();
        let reply: StreamRangeReply = redis
            .xrange_count(&self.dead_letters, "-", "+", limit)
            .await?;
        Ok(reply.ids.iter().map(DeadLetter::from_entry).collect())
    }

    pub async fn count(&self) -> Result<usize, NotifierError> {
        let mut redis = self.redis.clone();
        Ok(redis.xlen(&self.dead_letters).await?)
    }

    /// The dead letter with this id, if there is one.
    pub async fn show(&self, id: &str) -> Result<Option<DeadLetter>, NotifierError> {
        if !is_entry_id(id) {
            return Ok(None);
        }
        let mut redis = self.redis.clone();
        let reply: StreamRangeReply = redis.xrange_count(&self.dead_letters, id, id, 1).await?;
        Ok(reply.ids.first().map(DeadLetter::from_entry))
    }

    /// Puts the dead letter back into the stream; `false` when there is
    /// no such dead letter (or it is not an event at all).
    pub async fn replay(&self, id: &str) -> Result<bool, NotifierError> {
        let Some(letter) = self.show(id).await? else {
            return Ok(false);
        };
        let Ok(event) = serde_json::from_value::<StreamEvent>(letter.event.clone()) else {
            return Ok(false);
        };
        // First the database, so the event is not taken as handled; it
        // counts as held now, so the relay leaves it to the notifier.
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::HandledAt,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(outbox::Column::SeenAt, Expr::value(Utc::now()))
            .filter(outbox::Column::EventId.eq(event.event_id))
            .exec(&self.db)
            .await?;
        let raw = serde_json::to_string(&event).expect("events serialise");
        let mut redis = self.redis.clone();
        let (_, deleted): (String, usize) = redis::pipe()
            .atomic()
            .xadd(&self.stream, "*", &[(STREAM_FIELD, raw.as_str())])
            .xdel(&self.dead_letters, &[id])
            .query_async(&mut redis)
            .await?;
        Ok(deleted == 1)
    }
}

/// `ms-seq`, as Redis names stream entries.
fn is_entry_id(id: &str) -> bool {
    match id.split_once('-') {
        Some((ms, seq)) => {
            !ms.is_empty()
                && !seq.is_empty()
                && ms.bytes().all(|b| b.is_ascii_digit())
                && seq.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_entry_id;

    #[test]
    fn only_stream_entry_ids_are_looked_up() {
        assert!(is_entry_id("1700000000000-0"));
        assert!(!is_entry_id("1700000000000"));
        assert!(!is_entry_id("-"));
        assert!(!is_entry_id("+"));
        assert!(!is_entry_id("1-x"));
    }
}
