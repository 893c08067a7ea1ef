//! The last bytes of an upload: the filter's verdict on the whole file,
//! the staged object published under the attachment's name, and the
//! attachment recorded in the transaction that moves the offset to the
//! end, so `HEAD` shows the full offset only once the attachment exists.

use chrono::Utc;
use onestop_model::entities::{upload, upload_part};
use sea_orm::prelude::*;

use super::lock::{advance, lost_lock, release};
use super::removal::discard;
use super::staging::{pieces_prefix, Pipeline};
use super::Progress;
use crate::error::ApiError;
use crate::media::{MediaWriter, Sha256Hex};
use crate::uploads::strip::PhotoFacts;
use crate::uploads::{record, storage_key, Stored, Uploads};

/// The PATCH that brought the last `kept` bytes, all in `writer`: the
/// file is finished and becomes an attachment.
pub(super) async fn finish_upload(
    uploads: &Uploads,
    upload: &upload::Model,
    token: Uuid,
    mut pipeline: Pipeline,
    mut writer: Box<dyn MediaWriter>,
    kept: u64,
) -> Result<Progress, ApiError> {
    let id = upload.id;
    let facts = match pipeline.finish(&mut *writer).await {
        Ok(facts) => facts,
        Err(error) if error.status().is_client_error() => {
            writer.abort().await;
            discard(uploads, id, token).await;
            return Err(error);
        }
        Err(error) => {
            writer.abort().await;
            release(&uploads.db, id, token).await;
            return Err(error);
        }
    };
    let attachment_id = Uuid::new_v4();
    let key = storage_key(attachment_id);
    // Written whole in this sitting, the file goes straight to the
    // attachment's name where the store can do that; otherwise the
    // staged object is committed, then published under that name.
    let committed = if pipeline.fresh && writer.can_commit_as() {
        writer.commit_as(&key).await
    } else {
        match writer.commit().await {
            Ok(hash) => uploads
                .media
                .publish_staged(&pipeline.staged, pipeline.stored, &key)
                .await
                .map(|()| hash),
            Err(error) => Err(error),
        }
    };
    let sha256 = match committed {
        Ok(hash) => hash.hex(),
        Err(error) => {
            release(&uploads.db, id, token).await;
            return Err(ApiError::Storage(error));
        }
    };
    metrics::counter!("resumable_upload_bytes_total").increment(kept);
    complete(
        uploads,
        upload,
        token,
        pipeline,
        attachment_id,
        facts,
        sha256,
    )
    .await
}

/// The last bytes have arrived, passed the filter and are stored as
/// the attachment `attachment_id`'s: it is recorded in the same
/// transaction that moves the offset to the end.
async fn complete(
    uploads: &Uploads,
    upload: &upload::Model,
    token: Uuid,
    pipeline: Pipeline,
    attachment_id: Uuid,
    photo: Option<PhotoFacts>,
    sha256: Sha256Hex,
) -> Result<Progress, ApiError> {
    let key = storage_key(attachment_id);
    let stored = Stored {
        id: attachment_id,
        key,
        media_type: pipeline.media_type.unwrap_or("application/pdf"),
        byte_size: pipeline.stored,
        sha256,
        photo,
    };
    let expires_at = Utc::now() + uploads.limits.upload_expiry;
    let recorded = async {
        let txn = onestop_model::begin_write(&uploads.db).await?;
        record(&txn, upload.owner_id, &stored, upload.file_name.as_deref()).await?;
        let moved = advance(
            upload,
            token,
            upload.upload_length as u64,
            Some(stored.id),
            expires_at,
        )
        .exec(&txn)
        .await?;
        if moved.rows_affected != 1 {
            return Ok(false);
        }
        upload_part::Entity::delete_many()
            .filter(upload_part::Column::UploadId.eq(upload.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok::<_, DbErr>(true)
    }
    .await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            uploads.forget(&stored.key).await;
            return Err(lost_lock());
        }
        Err(error) => {
            uploads.forget(&stored.key).await;
            release(&uploads.db, upload.id, token).await;
            return Err(error.into());
        }
    }
    if let Err(error) = uploads.media.delete_prefix(&pieces_prefix(upload.id)).await {
        tracing::warn!(id = %upload.id, %error, "the staged bytes of a finished upload could not be removed");
    }
    metrics::counter!("attachment_bytes_removed_total")
        .increment((upload.upload_length as u64).saturating_sub(stored.byte_size));
    uploads.accepted(&stored);
    metrics::counter!("resumable_uploads_completed_total").increment(1);
    Ok(Progress {
        offset: upload.upload_length as u64,
        expires_at: None,
        attachment_id: Some(stored.id),
    })
}
