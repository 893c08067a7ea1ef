//! Resumable uploads, the tus 1.0 core protocol with the creation,
//! checksum, termination and expiration extensions
//! (<https://tus.io/protocols/resumable-upload>).
//!
//! Each PATCH streams its bytes through the same type check and metadata
//! filter as a one-shot upload, as they arrive, and appends what is to be
//! stored to the upload's staged object (`uploads/<id>/<lineage>`; on
//! local disk one file, on S3 one object per PATCH). The bytes are
//! written once: when the last one arrives the staged object becomes the
//! attachment's (on local disk a rename when it was written in this one
//! request, else a hard link; on S3 a copy within the bucket when it is
//! one piece), and its SHA-256 is the one the store computed while
//! writing it, continued from PATCH to PATCH, so nothing is read back.
//! Between PATCHes the filter's state and the running hash are saved in
//! the row of the piece, so any server, or the same one after a restart,
//! continues where the last PATCH ended.
//!
//! The offset moves only once the bytes and the filter's state are
//! durably stored, in the transaction that records the PATCH, so an
//! interrupted request never leaves a gap or half-written bytes that
//! count: a later PATCH cuts the staged object back to what was
//! committed. One request at a time may write to an upload: it takes a
//! lock on the upload's row with a compare-and-set on the offset (the same
//! SQL on SQLite and PostgreSQL); another request meanwhile gets 409. The
//! lock is refreshed while bytes arrive and counts as abandoned after
//! [`LOCK_STALE_SECS`] (a server that died mid-request); the request that
//! takes an abandoned lock over continues in a copy of the staged bytes
//! (a new lineage), so a stalled request that wakes up cannot touch them.
//! A request whose client sends nothing for [`IDLE`] ends, keeping what
//! arrived.
//!
//! A file the filter refuses (not a photo or PDF, damaged, too many
//! pixels) is refused at the PATCH that shows it, and the upload goes. The
//! attachment row and the upload's final offset are written in one
//! transaction, so `HEAD` shows the full offset only once the attachment
//! exists.
//!
//! Here: the protocol's headers (`headers`), the lock (`lock`), the
//! staged bytes and the pipeline they pass (`staging`), one PATCH
//! (`chunk`), its end when it brings the last byte (`completion`), and
//! uploads going (`removal`).

mod chunk;
mod completion;
mod headers;
mod lock;
mod removal;
mod staging;

use chrono::{DateTime, Utc};
use onestop_model::entities::upload;
use sea_orm::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection};
use tokio::io::AsyncBufRead;

use super::Uploads;
use crate::error::ApiError;

pub use chunk::IDLE;
pub use headers::{
    http_date, parse_metadata, Checksum, CHECKSUM_ALGORITHMS, EXTENSIONS, TUS_VERSION,
};
pub use lock::LOCK_STALE_SECS;
pub use removal::{sweep_expired, terminate};

/// Pieces one upload may have; clients send chunks of hundreds of KiB.
const MAX_PARTS: i32 = 2_000;

/// Creates an upload of `length` bytes.
pub async fn create(
    uploads: &Uploads,
    owner_id: Uuid,
    length: u64,
    metadata: Option<&str>,
) -> Result<upload::Model, ApiError> {
    let limit = uploads.limits.max_upload_bytes;
    if length == 0 {
        return Err(ApiError::Validation("the file is empty".into()));
    }
    if length > limit {
        return Err(ApiError::TooLarge { limit });
    }
    let file_name = metadata.map(parse_metadata).transpose()?.flatten();
    let now = Utc::now();
    let model = upload::ActiveModel {
        id: Set(Uuid::new_v4()),
        owner_id: Set(owner_id),
        upload_length: Set(length as i64),
        upload_offset: Set(0),
        part_count: Set(0),
        metadata: Set(metadata.map(str::to_owned)),
        file_name: Set(file_name),
        lock_token: Set(None),
        locked_at: Set(None),
        attachment_id: Set(None),
        created_at: Set(now),
        expires_at: Set(now + uploads.limits.upload_expiry),
    }
    .insert(&uploads.db)
    .await?;
    metrics::counter!("resumable_uploads_created_total").increment(1);
    Ok(model)
}

/// An upload of the caller's own that has not expired.
pub async fn find(uploads: &Uploads, owner_id: Uuid, id: Uuid) -> Result<upload::Model, ApiError> {
    own_upload(&uploads.db, owner_id, id).await
}

async fn own_upload(
    db: &DatabaseConnection,
    owner_id: Uuid,
    id: Uuid,
) -> Result<upload::Model, ApiError> {
    upload::Entity::find_by_id(id)
        .filter(upload::Column::OwnerId.eq(owner_id))
        .filter(upload::Column::ExpiresAt.gt(Utc::now()))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("upload"))
}

/// Where an upload stands after a PATCH.
#[derive(Debug, Clone)]
pub struct Progress {
    pub offset: u64,
    /// When an unfinished upload will be deleted.
    pub expires_at: Option<DateTime<Utc>>,
    /// The attachment a finished upload became.
    pub attachment_id: Option<Uuid>,
}

impl Progress {
    pub fn of(upload: &upload::Model) -> Self {
        Progress {
            offset: upload.upload_offset as u64,
            expires_at: upload.attachment_id.is_none().then_some(upload.expires_at),
            attachment_id: upload.attachment_id,
        }
    }
}

/// Appends the request body at `offset`. `declared_length` is the
/// request's Content-Length when it sent one.
pub async fn patch(
    uploads: &Uploads,
    owner_id: Uuid,
    id: Uuid,
    offset: u64,
    checksum: Option<Checksum>,
    declared_length: Option<u64>,
    body: impl AsyncBufRead + Send + Unpin + 'static,
) -> Result<Progress, ApiError> {
    let upload = find(uploads, owner_id, id).await?;
    let (length, current) = (upload.upload_length as u64, upload.upload_offset as u64);
    if offset != current {
        return Err(lock::offset_conflict(offset, current));
    }
    if upload.attachment_id.is_some() {
        return match declared_length {
            Some(0) => Ok(Progress::of(&upload)),
            _ => Err(ApiError::TooLarge { limit: length }),
        };
    }
    if declared_length.is_some_and(|n| offset + n > length) {
        return Err(ApiError::TooLarge { limit: length });
    }
    if upload.part_count >= MAX_PARTS {
        return Err(ApiError::Validation(format!(
            "the upload is already in {MAX_PARTS} pieces; send the rest in larger chunks"
        )));
    }
    let token = Uuid::new_v4();
    // A lock still set here is a stale one (else acquiring fails): its
    // request may be alive, so this one continues in a copy.
    let took_over = upload.lock_token.is_some();
    lock::acquire(&uploads.db, &upload, token).await?;
    // The writing runs on its own task: if the client goes away and the
    // request is dropped, the bytes that arrived are still kept and the
    // lock is still released.
    let task_uploads = uploads.clone();
    let receiving = uploads.thumbnails.receiving();
    tokio::spawn(async move {
        let written =
            chunk::write_chunk(&task_uploads, upload, token, took_over, checksum, body).await;
        drop(receiving);
        written
    })
    .await
    .map_err(|error| ApiError::Internal(format!("the upload task failed: {error}")))?
}
