//! One PATCH: its body read through the pipeline into the staged object,
//! then what arrived kept or dropped, and recorded as a piece, or handed
//! on to completion when it holds the last byte.

use std::time::{Duration, Instant};

use chrono::Utc;
use onestop_model::entities::{upload, upload_part};
use sea_orm::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::completion;
use super::headers::{Checksum, RunningDigest};
use super::lock::{advance, heartbeat, lost_lock, release, HEARTBEAT};
use super::removal::discard;
use super::staging::{Ending, Pipeline};
use super::Progress;
use crate::error::ApiError;
use crate::media::MediaWriter;
use crate::uploads::Uploads;

/// A PATCH whose client sends nothing for this long ends; what arrived
/// is kept (without a checksum) and the upload can be resumed.
pub const IDLE: Duration = Duration::from_secs(30);

/// Takes one PATCH body into the staged object under the lock `token`
/// holds, and keeps, drops or completes what arrived.
pub(super) async fn write_chunk(
    uploads: &Uploads,
    upload: upload::Model,
    token: Uuid,
    took_over: bool,
    checksum: Option<Checksum>,
    body: impl AsyncBufRead + Send + Unpin,
) -> Result<Progress, ApiError> {
    let id = upload.id;
    let resumed = Pipeline::resume(
        &uploads.db,
        uploads.media.as_ref(),
        uploads.limits.max_image_pixels,
        &upload,
        token,
        took_over,
    )
    .await;
    let mut pipeline = match resumed {
        Ok(pipeline) => pipeline,
        Err(error) => {
            release(&uploads.db, id, token).await;
            return Err(error);
        }
    };
    let appended = uploads
        .media
        .append(&pipeline.staged, pipeline.stored, pipeline.hash.clone())
        .await;
    let mut writer = match appended {
        Ok(writer) => writer,
        Err(error) => {
            release(&uploads.db, id, token).await;
            return Err(ApiError::Storage(error));
        }
    };
    let (ending, received) = receive_chunk(
        &uploads.db,
        &upload,
        token,
        &checksum,
        &mut pipeline,
        &mut *writer,
        body,
    )
    .await;

    let kept = match ending {
        Ending::Complete => {
            let matches = match (pipeline.digest.take(), &checksum) {
                (Some(digest), Some(checksum)) => digest.matches(checksum),
                _ => true,
            };
            if !matches {
                writer.abort().await;
                release(&uploads.db, id, token).await;
                metrics::counter!("resumable_upload_checksum_mismatches_total").increment(1);
                return Err(ApiError::ChecksumMismatch);
            }
            received
        }
        // Without a checksum, what arrived is kept: the client resumes
        // after it. With one, the chunk cannot be verified and goes.
        Ending::Interrupted(_) if checksum.is_none() && received > 0 => received,
        Ending::Interrupted(why) => {
            writer.abort().await;
            release(&uploads.db, id, token).await;
            return Err(ApiError::BadRequest(format!(
                "the chunk was cut off ({why}); nothing of it was kept, ask with HEAD where to continue"
            )));
        }
        Ending::Refused(error) => {
            writer.abort().await;
            release(&uploads.db, id, token).await;
            return Err(error);
        }
        Ending::Unacceptable(error) => {
            // The file can never be accepted: nothing of it is kept.
            writer.abort().await;
            discard(uploads, id, token).await;
            return Err(error);
        }
        Ending::LostLock => {
            writer.abort().await;
            return Err(lost_lock());
        }
    };
    if kept == 0 {
        writer.abort().await;
        release(&uploads.db, id, token).await;
        return Ok(Progress::of(&upload));
    }
    let offset = upload.upload_offset as u64 + kept;
    if offset < upload.upload_length as u64 {
        if let Err(error) = pipeline.hold_undecided(&mut *writer).await {
            writer.abort().await;
            release(&uploads.db, id, token).await;
            return Err(ApiError::Storage(error));
        }
        match writer.commit().await {
            Ok(hash) => pipeline.hash = hash,
            Err(error) => {
                release(&uploads.db, id, token).await;
                return Err(ApiError::Storage(error));
            }
        }
        metrics::counter!("resumable_upload_bytes_total").increment(kept);
        record_piece(
            &uploads.db,
            uploads.limits.upload_expiry,
            &upload,
            token,
            &pipeline,
            kept,
        )
        .await
    } else {
        completion::finish_upload(uploads, &upload, token, pipeline, writer, kept).await
    }
}

/// Reads one PATCH body through the pipeline into the staged object,
/// each network chunk filtered where it lies. Returns how it ended and
/// how many bytes of it were taken; what was taken is all handed to the
/// writer unless the chunk was refused.
async fn receive_chunk(
    db: &DatabaseConnection,
    upload: &upload::Model,
    token: Uuid,
    checksum: &Option<Checksum>,
    pipeline: &mut Pipeline,
    writer: &mut dyn MediaWriter,
    mut body: impl AsyncBufRead + Send + Unpin,
) -> (Ending, u64) {
    let room = (upload.upload_length - upload.upload_offset) as u64;
    pipeline.digest = checksum.as_ref().map(RunningDigest::for_checksum);
    let mut received = 0u64;
    let mut last_beat = Instant::now();
    let ending = loop {
        let chunk = match tokio::time::timeout(IDLE, body.fill_buf()).await {
            Err(_) => break Ending::Interrupted("the client sent nothing for a while".into()),
            Ok(Err(error)) => break Ending::Interrupted(error.to_string()),
            Ok(Ok([])) => break Ending::Complete,
            Ok(Ok(chunk)) => chunk,
        };
        let read = chunk.len();
        if received + read as u64 > room {
            break Ending::Refused(ApiError::TooLarge {
                limit: upload.upload_length as u64,
            });
        }
        if let Err(ending) = pipeline.push(chunk, writer).await {
            break ending;
        }
        body.consume(read);
        received += read as u64;
        if last_beat.elapsed() >= HEARTBEAT {
            match heartbeat(db, upload.id, token).await {
                Ok(true) => last_beat = Instant::now(),
                Ok(false) => break Ending::LostLock,
                Err(error) => break Ending::Refused(error.into()),
            }
        }
    };
    let ending = match ending {
        Ending::Complete | Ending::Interrupted(_) => match pipeline.flush(writer).await {
            Ok(()) => ending,
            Err(error) => Ending::Refused(ApiError::Storage(error)),
        },
        refused => refused,
    };
    (ending, received)
}

/// Records a PATCH that did not finish the file and moves the offset, if
/// the lock is still ours; the filter's state is committed with it.
async fn record_piece(
    db: &DatabaseConnection,
    expiry: chrono::Duration,
    upload: &upload::Model,
    token: Uuid,
    pipeline: &Pipeline,
    size: u64,
) -> Result<Progress, ApiError> {
    let offset = upload.upload_offset as u64 + size;
    let expires_at = Utc::now() + expiry;
    let outcome = async {
        let txn = onestop_model::begin_write(db).await?;
        upload_part::ActiveModel {
            upload_id: Set(upload.id),
            start_offset: Set(upload.upload_offset),
            byte_size: Set(size as i64),
            storage_key: Set(pipeline.staged.clone()),
            filter_state: Set(pipeline.saved()),
        }
        .insert(&txn)
        .await?;
        let moved = advance(upload, token, offset, None, expires_at)
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            return Ok(false);
        }
        txn.commit().await?;
        Ok::<_, DbErr>(true)
    }
    .await;
    match outcome {
        Ok(true) => Ok(Progress {
            offset,
            expires_at: Some(expires_at),
            attachment_id: None,
        }),
        Ok(false) => Err(lost_lock()),
        Err(error) => {
            release(db, upload.id, token).await;
            Err(error.into())
        }
    }
}
