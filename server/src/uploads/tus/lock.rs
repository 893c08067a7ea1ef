//! One request at a time writes to an upload: it takes a lock on the
//! upload's row with a compare-and-set (the same SQL on SQLite and
//! PostgreSQL), refreshes it while bytes arrive, and releases it with the
//! offset it reached. A lock not refreshed for [`LOCK_STALE_SECS`]
//! belongs to a request that died and may be taken over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use onestop_model::entities::upload;
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{Condition, DatabaseConnection, UpdateMany};

use super::own_upload;
use crate::error::{ApiError, ErrorChain};

/// A lock not refreshed for this long belongs to a request that died.
pub const LOCK_STALE_SECS: i64 = 60;
/// How often a writing request refreshes its lock.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(10);

/// Held by no live request at `now`: no lock, or one not refreshed for
/// [`LOCK_STALE_SECS`].
pub(super) fn unlocked(now: DateTime<Utc>) -> Condition {
    let stale = now - chrono::Duration::seconds(LOCK_STALE_SECS);
    Condition::any()
        .add(upload::Column::LockToken.is_null())
        .add(upload::Column::LockedAt.lt(stale))
}

/// The update that takes the lock of upload `id` for `token` at `now`,
/// if no live request holds it; callers add their own conditions.
pub(super) fn take(id: Uuid, token: Uuid, now: DateTime<Utc>) -> UpdateMany<upload::Entity> {
    upload::Entity::update_many()
        .col_expr(upload::Column::LockToken, Expr::value(token))
        .col_expr(upload::Column::LockedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(unlocked(now))
}

pub(super) fn offset_conflict(sent: u64, current: u64) -> ApiError {
    ApiError::Conflict(format!(
        "Upload-Offset is {sent} but the upload is at {current}; ask with HEAD and continue from there"
    ))
}

/// Takes the lock of `upload` for `token` if no live request holds it
/// and its offset is still the one read.
pub(super) async fn acquire(
    db: &DatabaseConnection,
    upload: &upload::Model,
    token: Uuid,
) -> Result<(), ApiError> {
    let taken = take(upload.id, token, Utc::now())
        .filter(upload::Column::UploadOffset.eq(upload.upload_offset))
        .filter(upload::Column::AttachmentId.is_null())
        .exec(db)
        .await?;
    if taken.rows_affected == 1 {
        return Ok(());
    }
    let fresh = own_upload(db, upload.owner_id, upload.id).await?;
    if fresh.upload_offset != upload.upload_offset {
        return Err(offset_conflict(
            upload.upload_offset as u64,
            fresh.upload_offset as u64,
        ));
    }
    metrics::counter!("resumable_upload_conflicts_total").increment(1);
    Err(ApiError::Conflict(
        "another request is sending this upload right now; wait for it, then ask with HEAD where to continue"
            .into(),
    ))
}

/// Releases the lock if this request still holds it.
pub(super) async fn release(db: &DatabaseConnection, id: Uuid, token: Uuid) {
    let released = upload::Entity::update_many()
        .col_expr(upload::Column::LockToken, Expr::value(Option::<Uuid>::None))
        .col_expr(
            upload::Column::LockedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::LockToken.eq(token))
        .exec(db)
        .await;
    if let Err(error) = released {
        tracing::warn!(%id, error = %ErrorChain(&error), "an upload lock could not be released; it lapses by itself");
    }
}

/// Refreshes the lock; false when another request has taken it over.
pub(super) async fn heartbeat(
    db: &DatabaseConnection,
    id: Uuid,
    token: Uuid,
) -> Result<bool, DbErr> {
    let refreshed = upload::Entity::update_many()
        .col_expr(upload::Column::LockedAt, Expr::value(Utc::now()))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::LockToken.eq(token))
        .exec(db)
        .await?;
    Ok(refreshed.rows_affected == 1)
}

/// The update that moves the offset and releases the lock.
pub(super) fn advance(
    upload: &upload::Model,
    token: Uuid,
    offset: u64,
    attachment_id: Option<Uuid>,
    expires_at: DateTime<Utc>,
) -> UpdateMany<upload::Entity> {
    upload::Entity::update_many()
        .col_expr(upload::Column::UploadOffset, Expr::value(offset as i64))
        .col_expr(
            upload::Column::PartCount,
            Expr::value(upload.part_count + 1),
        )
        .col_expr(upload::Column::AttachmentId, Expr::value(attachment_id))
        .col_expr(upload::Column::ExpiresAt, Expr::value(expires_at))
        .col_expr(upload::Column::LockToken, Expr::value(Option::<Uuid>::None))
        .col_expr(
            upload::Column::LockedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(upload::Column::Id.eq(upload.id))
        .filter(upload::Column::LockToken.eq(token))
}

pub(super) fn lost_lock() -> ApiError {
    ApiError::Conflict(
        "another request took this upload over; ask with HEAD where to continue".into(),
    )
}
