//! `Idempotency-Key` (IETF httpapi draft): the same key with the same body
//! returns the stored first response; with another body 422; while the
//! first request still runs 409. Keys are kept 24 hours.

use chrono::{Duration, Utc};
use onestop_model::entities::idempotency_key;
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use sha2::{Digest, Sha256};

use crate::error::{conflict_on_unique, ApiError};

/// How long a finished response is replayed.
pub const RETENTION_HOURS: i64 = 24;

/// A request still "in progress" after this long died with its server; a
/// retry may take the key over.
const ABANDONED_AFTER_SECS: i64 = 60;

const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";

/// A validated key: 1–255 visible ASCII characters. The draft sends it as
/// a structured-field string (quoted); bare keys are accepted too.
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let raw = raw.trim();
        let key = raw
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(raw);
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::Validation(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Fingerprint of a request: what it asks for, not how it is spelled.
pub fn fingerprint(operation: &str, body: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(body.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

pub enum Claim {
    /// Go ahead; finish with [`complete`] in the same transaction as the work.
    Fresh,
    /// Already done: answer with this.
    Replay { status: u16, body: String },
}

pub async fn claim(
    db: &DatabaseConnection,
    user_id: Uuid,
    key: &IdempotencyKey,
    fingerprint: &str,
) -> Result<Claim, ApiError> {
    let now = Utc::now();
    let inserted = idempotency_key::ActiveModel {
        user_id: Set(user_id),
        key: Set(key.as_str().to_owned()),
        fingerprint: Set(fingerprint.to_owned()),
        state: Set(IN_PROGRESS.to_owned()),
        response_status: Set(None),
        response_body: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(_) => return Ok(Claim::Fresh),
        Err(error) => {
            if !matches!(conflict_on_unique(error, ""), ApiError::Conflict(_)) {
                return Err(ApiError::Internal(
                    "recording the idempotency key failed".into(),
                ));
            }
        }
    }

    let existing = idempotency_key::Entity::find_by_id((user_id, key.as_str().to_owned()))
        .one(db)
        .await?
        .ok_or(ApiError::IdempotencyInProgress)?;
    if existing.created_at < now - Duration::hours(RETENTION_HOURS) {
        // Expired but not yet swept: a new use of the key.
        idempotency_key::Entity::delete_by_id((user_id, key.as_str().to_owned()))
            .exec(db)
            .await?;
        return Box::pin(claim(db, user_id, key, fingerprint)).await;
    }
    if existing.fingerprint != fingerprint {
        return Err(ApiError::IdempotencyKeyReused);
    }
    if existing.state == COMPLETED {
        return Ok(Claim::Replay {
            status: existing.response_status.unwrap_or(200) as u16,
            body: existing.response_body.unwrap_or_default(),
        });
    }
    if existing.updated_at < now - Duration::seconds(ABANDONED_AFTER_SECS) {
        let taken = idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::UpdatedAt, Expr::value(now))
            .filter(idempotency_key::Column::UserId.eq(user_id))
            .filter(idempotency_key::Column::Key.eq(key.as_str()))
            .filter(idempotency_key::Column::UpdatedAt.eq(existing.updated_at))
            .exec(db)
            .await?;
        if taken.rows_affected == 1 {
            return Ok(Claim::Fresh);
        }
    }
    Err(ApiError::IdempotencyInProgress)
}

/// Stores the response; call inside the transaction that did the work, so
/// the work and its record commit together.
pub async fn complete(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    key: &IdempotencyKey,
    status: u16,
    body: &str,
) -> Result<(), DbErr> {
    idempotency_key::Entity::update_many()
        .col_expr(idempotency_key::Column::State, Expr::value(COMPLETED))
        .col_expr(
            idempotency_key::Column::ResponseStatus,
            Expr::value(status as i32),
        )
        .col_expr(idempotency_key::Column::ResponseBody, Expr::value(body))
        .col_expr(idempotency_key::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(idempotency_key::Column::UserId.eq(user_id))
        .filter(idempotency_key::Column::Key.eq(key.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// Frees the key after a failed request: nothing was done, so the client
/// may try again with it.
pub async fn release(db: &DatabaseConnection, user_id: Uuid, key: &IdempotencyKey) {
    let result = idempotency_key::Entity::delete_many()
        .filter(idempotency_key::Column::UserId.eq(user_id))
        .filter(idempotency_key::Column::Key.eq(key.as_str()))
        .filter(idempotency_key::Column::State.eq(IN_PROGRESS))
        .exec(db)
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "could not release an idempotency key; it frees itself after a minute");
    }
}

/// Deletes keys past their retention.
pub async fn sweep(db: &DatabaseConnection) -> Result<u64, DbErr> {
    let cutoff = Utc::now() - Duration::hours(RETENTION_HOURS + 1);
    let result = idempotency_key::Entity::delete_many()
        .filter(idempotency_key::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii_and_may_be_quoted() {
        assert_eq!(
            IdempotencyKey::parse("\"abc-123\"").unwrap().as_str(),
            "abc-123"
        );
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn the_fingerprint_ignores_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":[2],"a":1}"#).unwrap();
        assert_eq!(fingerprint("op", &a), fingerprint("op", &b));
        assert_ne!(fingerprint("op", &a), fingerprint("other", &a));
    }
}
