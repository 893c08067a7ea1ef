//! Uploads going: one whose file can never be accepted, one its client
//! terminates, and those past their expiry. Each is locked first, so no
//! request is writing to what goes.

use chrono::{DateTime, Utc};
use onestop_model::entities::upload;
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::QuerySelect;

use super::lock::{release, take, unlocked};
use super::own_upload;
use super::staging::pieces_prefix;
use crate::error::{ApiError, ErrorChain};
use crate::uploads::Uploads;

/// Deletes an upload whose lock `token` holds, with its pieces: first it
/// is marked expired (so it is gone for clients at once and the sweep
/// finishes the job if this is interrupted), then the pieces, then the
/// row.
pub(super) async fn discard(uploads: &Uploads, id: Uuid, token: Uuid) {
    let outcome = async {
        upload::Entity::update_many()
            .col_expr(
                upload::Column::ExpiresAt,
                Expr::value(DateTime::<Utc>::UNIX_EPOCH),
            )
            .filter(upload::Column::Id.eq(id))
            .filter(upload::Column::LockToken.eq(token))
            .exec(&uploads.db)
            .await?;
        uploads
            .media
            .delete_prefix(&pieces_prefix(id))
            .await
            .map_err(ApiError::Storage)?;
        upload::Entity::delete_many()
            .filter(upload::Column::Id.eq(id))
            .filter(upload::Column::LockToken.eq(token))
            .exec(&uploads.db)
            .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(error) = outcome {
        tracing::warn!(%id, error = %ErrorChain(&error), "an upload could not be removed now; the sweep will");
        release(&uploads.db, id, token).await;
    }
}

/// Termination: the upload and its pieces are deleted. A finished
/// upload's attachment stays; only the upload's record goes.
pub async fn terminate(uploads: &Uploads, owner_id: Uuid, id: Uuid) -> Result<(), ApiError> {
    let upload = own_upload(&uploads.db, owner_id, id).await?;
    let token = Uuid::new_v4();
    let taken = take(upload.id, token, Utc::now()).exec(&uploads.db).await?;
    if taken.rows_affected != 1 {
        return Err(ApiError::Conflict(
            "a request is sending this upload right now; try again when it has ended".into(),
        ));
    }
    discard(uploads, id, token).await;
    metrics::counter!("resumable_uploads_terminated_total").increment(1);
    Ok(())
}

/// Deletes uploads past their expiry (abandoned ones with their pieces,
/// finished ones' records). Returns how many went.
pub async fn sweep_expired(uploads: &Uploads) -> Result<usize, DbErr> {
    let now = Utc::now();
    let expired: Vec<Uuid> = upload::Entity::find()
        .select_only()
        .column(upload::Column::Id)
        .filter(upload::Column::ExpiresAt.lte(now))
        .filter(unlocked(now))
        .limit(200)
        .into_tuple()
        .all(&uploads.db)
        .await?;
    let mut removed = 0;
    for id in expired {
        let token = Uuid::new_v4();
        let taken = take(id, token, now)
            .filter(upload::Column::ExpiresAt.lte(now))
            .exec(&uploads.db)
            .await?;
        if taken.rows_affected != 1 {
            continue;
        }
        if let Err(error) = uploads.media.delete_prefix(&pieces_prefix(id)).await {
            tracing::warn!(%id, %error, "the pieces of an expired upload could not be removed yet");
            continue;
        }
        upload::Entity::delete_many()
            .filter(upload::Column::Id.eq(id))
            .filter(upload::Column::LockToken.eq(token))
            .exec(&uploads.db)
            .await?;
        removed += 1;
    }
    if removed > 0 {
        metrics::counter!("resumable_uploads_expired_total").increment(removed as u64);
        tracing::info!(removed, "expired uploads removed");
    }
    Ok(removed)
}
