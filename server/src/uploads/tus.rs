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

use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use onestop_model::entities::{upload, upload_part};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, Condition, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::strip::{PhotoFacts, Sanitizer};
use super::{accepted_type, record, Batch, Stop, Stored, Uploads, SNIFF_LEN};
use crate::error::{ApiError, ErrorChain};
use crate::media::{FileHash, MediaWriter, Sha256Hex};

pub const TUS_VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,checksum,termination,expiration";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// A lock not refreshed for this long belongs to a request that died.
pub const LOCK_STALE_SECS: i64 = 60;
/// How often a writing request refreshes its lock.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A PATCH whose client sends nothing for this long ends; what arrived
/// is kept (without a checksum) and the upload can be resumed.
pub const IDLE: Duration = Duration::from_secs(30);
/// Pieces one upload may have; clients send chunks of hundreds of KiB.
const MAX_PARTS: i32 = 2_000;
const MAX_METADATA_BYTES: usize = 4 * 1024;
const CHUNK: usize = 64 * 1024;

/// RFC 9110 date, as `Upload-Expires` wants it.
pub fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs. Returns
/// the file name (`filename`, or `name` as some clients call it) as text;
/// bytes that are not UTF-8 become replacement characters.
pub fn parse_metadata(raw: &str) -> Result<Option<String>, ApiError> {
    if raw.len() > MAX_METADATA_BYTES {
        return Err(ApiError::BadRequest(format!(
            "Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes"
        )));
    }
    let mut seen = Vec::new();
    let mut file_name = None;
    let mut name = None;
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, Some(value.trim())),
            None => (pair, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) || seen.contains(&key) {
            return Err(ApiError::BadRequest(format!(
                "Upload-Metadata has a bad or repeated key `{key}`"
            )));
        }
        seen.push(key);
        let Some(value) = value else { continue };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "the Upload-Metadata value of `{key}` is not base64"
                ))
            })?;
        let text: String = String::from_utf8_lossy(&decoded)
            .chars()
            .take(255)
            .collect();
        match key {
            "filename" => file_name = Some(text),
            "name" => name = Some(text),
            _ => {}
        }
    }
    Ok(file_name.or(name))
}

/// `Upload-Checksum`: an algorithm and the base64 digest of the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

impl Checksum {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let (algorithm, digest) = raw.trim().split_once(' ').ok_or_else(|| {
            ApiError::BadRequest("Upload-Checksum must be `<algorithm> <base64 digest>`".into())
        })?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(digest.trim())
            .map_err(|_| ApiError::BadRequest("the Upload-Checksum digest is not base64".into()))?;
        let checksum = match algorithm.to_ascii_lowercase().as_str() {
            "sha1" => Checksum::Sha1(digest),
            "sha256" => Checksum::Sha256(digest),
            other => {
                return Err(ApiError::BadRequest(format!(
                "checksum algorithm `{other}` is not supported; use one of {CHECKSUM_ALGORITHMS}"
            )))
            }
        };
        let (expected, got) = match &checksum {
            Checksum::Sha1(d) => (20, d.len()),
            Checksum::Sha256(d) => (32, d.len()),
        };
        if expected != got {
            return Err(ApiError::BadRequest(
                "the Upload-Checksum digest has the wrong length".into(),
            ));
        }
        Ok(checksum)
    }
}

enum RunningDigest {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl RunningDigest {
    fn for_checksum(checksum: &Checksum) -> Self {
        match checksum {
            Checksum::Sha1(_) => RunningDigest::Sha1(Sha1::new()),
            Checksum::Sha256(_) => RunningDigest::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            RunningDigest::Sha1(h) => h.update(bytes),
            RunningDigest::Sha256(h) => h.update(bytes),
        }
    }

    fn matches(self, checksum: &Checksum) -> bool {
        match (self, checksum) {
            (RunningDigest::Sha1(h), Checksum::Sha1(d)) => h.finalize().as_slice() == d.as_slice(),
            (RunningDigest::Sha256(h), Checksum::Sha256(d)) => {
                h.finalize().as_slice() == d.as_slice()
            }
            _ => false,
        }
    }
}

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
    upload::Entity::find_by_id(id)
        .filter(upload::Column::OwnerId.eq(owner_id))
        .filter(upload::Column::ExpiresAt.gt(Utc::now()))
        .one(&uploads.db)
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
        return Err(offset_conflict(offset, current));
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
    acquire(uploads, &upload, token).await?;
    // The writing runs on its own task: if the client goes away and the
    // request is dropped, the bytes that arrived are still kept and the
    // lock is still released.
    let task_uploads = uploads.clone();
    let receiving = uploads.thumbnails.receiving();
    tokio::spawn(async move {
        let written = write_chunk(&task_uploads, upload, token, took_over, checksum, body).await;
        drop(receiving);
        written
    })
    .await
    .map_err(|error| ApiError::Internal(format!("the upload task failed: {error}")))?
}

fn offset_conflict(sent: u64, current: u64) -> ApiError {
    ApiError::Conflict(format!(
        "Upload-Offset is {sent} but the upload is at {current}; ask with HEAD and continue from there"
    ))
}

async fn acquire(uploads: &Uploads, upload: &upload::Model, token: Uuid) -> Result<(), ApiError> {
    let now = Utc::now();
    let stale = now - chrono::Duration::seconds(LOCK_STALE_SECS);
    let taken = upload::Entity::update_many()
        .col_expr(upload::Column::LockToken, Expr::value(token))
        .col_expr(upload::Column::LockedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(upload.id))
        .filter(upload::Column::UploadOffset.eq(upload.upload_offset))
        .filter(upload::Column::AttachmentId.is_null())
        .filter(
            Condition::any()
                .add(upload::Column::LockToken.is_null())
                .add(upload::Column::LockedAt.lt(stale)),
        )
        .exec(&uploads.db)
        .await?;
    if taken.rows_affected == 1 {
        return Ok(());
    }
    let fresh = find(uploads, upload.owner_id, upload.id).await?;
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
async fn release(uploads: &Uploads, id: Uuid, token: Uuid) {
    let released = upload::Entity::update_many()
        .col_expr(upload::Column::LockToken, Expr::value(Option::<Uuid>::None))
        .col_expr(
            upload::Column::LockedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::LockToken.eq(token))
        .exec(&uploads.db)
        .await;
    if let Err(error) = released {
        tracing::warn!(%id, error = %ErrorChain(&error), "an upload lock could not be released; it lapses by itself");
    }
}

/// Refreshes the lock; false when another request has taken it over.
async fn heartbeat(uploads: &Uploads, id: Uuid, token: Uuid) -> Result<bool, DbErr> {
    let refreshed = upload::Entity::update_many()
        .col_expr(upload::Column::LockedAt, Expr::value(Utc::now()))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::LockToken.eq(token))
        .exec(&uploads.db)
        .await?;
    Ok(refreshed.rows_affected == 1)
}

/// How reading a chunk ended.
enum Ending {
    /// The body ended normally.
    Complete,
    /// The client went away or stalled.
    Interrupted(String),
    /// The bytes cannot be taken now (too many, storage failed).
    Refused(ApiError),
    /// The file can never be accepted (its type, its structure).
    Unacceptable(ApiError),
    /// Another request took the upload over.
    LostLock,
}

async fn write_chunk(
    uploads: &Uploads,
    upload: upload::Model,
    token: Uuid,
    took_over: bool,
    checksum: Option<Checksum>,
    body: impl AsyncBufRead + Send + Unpin,
) -> Result<Progress, ApiError> {
    let id = upload.id;
    let mut pipeline = match Pipeline::resume(uploads, &upload, token, took_over).await {
        Ok(pipeline) => pipeline,
        Err(error) => {
            release(uploads, id, token).await;
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
            release(uploads, id, token).await;
            return Err(ApiError::Storage(error));
        }
    };
    let (ending, received) = receive_chunk(
        uploads,
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
                release(uploads, id, token).await;
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
            release(uploads, id, token).await;
            return Err(ApiError::BadRequest(format!(
                "the chunk was cut off ({why}); nothing of it was kept, ask with HEAD where to continue"
            )));
        }
        Ending::Refused(error) => {
            writer.abort().await;
            release(uploads, id, token).await;
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
        release(uploads, id, token).await;
        return Ok(Progress::of(&upload));
    }
    let offset = upload.upload_offset as u64 + kept;
    if offset < upload.upload_length as u64 {
        if let Err(error) = pipeline.hold_undecided(&mut *writer).await {
            writer.abort().await;
            release(uploads, id, token).await;
            return Err(ApiError::Storage(error));
        }
        match writer.commit().await {
            Ok(hash) => pipeline.hash = hash,
            Err(error) => {
                release(uploads, id, token).await;
                return Err(ApiError::Storage(error));
            }
        }
        metrics::counter!("resumable_upload_bytes_total").increment(kept);
        record_piece(uploads, &upload, token, &pipeline, kept).await
    } else {
        let facts = match pipeline.finish(&mut *writer).await {
            Ok(facts) => facts,
            Err(error) if error.status().is_client_error() => {
                writer.abort().await;
                discard(uploads, id, token).await;
                return Err(error);
            }
            Err(error) => {
                writer.abort().await;
                release(uploads, id, token).await;
                return Err(error);
            }
        };
        let attachment_id = Uuid::new_v4();
        let key = super::storage_key(attachment_id);
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
                release(uploads, id, token).await;
                return Err(ApiError::Storage(error));
            }
        };
        metrics::counter!("resumable_upload_bytes_total").increment(kept);
        complete(
            uploads,
            &upload,
            token,
            pipeline,
            attachment_id,
            facts,
            sha256,
        )
        .await
    }
}

/// Reads one PATCH body through the pipeline into the staged object,
/// each network chunk filtered where it lies. Returns how it ended and
/// how many bytes of it were taken; what was taken is all handed to the
/// writer unless the chunk was refused.
async fn receive_chunk(
    uploads: &Uploads,
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
            match heartbeat(uploads, upload.id, token).await {
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

/// The filter's state between two PATCHes, kept in the row of the piece
/// it follows and committed with the offset (pieces recorded by earlier
/// versions kept a photo filter's beside the staged bytes, in
/// `uploads/<id>/filter-<offset>`, and none for a PDF).
#[derive(Deserialize)]
struct Saved {
    /// Bytes of the staged object the state belongs after.
    stored: u64,
    filter: Sanitizer,
    /// The running hash of those bytes ([`FileHash::saved`]); pieces
    /// recorded by earlier versions have none.
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(Serialize)]
struct ToSave<'a> {
    stored: u64,
    sha256: String,
    filter: &'a Sanitizer,
}

fn saved_key(id: Uuid, offset: u64) -> String {
    format!("uploads/{}/filter-{offset:012}", id.simple())
}

fn unreadable_state(error: serde_json::Error) -> ApiError {
    ApiError::Internal(format!(
        "the saved state of an upload is unreadable: {error}"
    ))
}

/// The filter's state after the last piece, if there is one: from the
/// piece's row, or from the file where an earlier version saved it.
async fn load_saved(
    uploads: &Uploads,
    id: Uuid,
    offset: u64,
    in_row: Option<&str>,
) -> Result<Option<Saved>, ApiError> {
    if let Some(saved) = in_row {
        return serde_json::from_str(saved)
            .map(Some)
            .map_err(unreadable_state);
    }
    let mut reader = match uploads.media.open(&saved_key(id, offset)).await {
        Ok((reader, _)) => reader,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(ApiError::Storage(error)),
    };
    let mut raw = Vec::new();
    reader
        .read_to_end(&mut raw)
        .await
        .map_err(ApiError::Storage)?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(unreadable_state)
}

/// One upload's bytes on their way to storage: the type check, the
/// metadata filter and (for a chunk with `Upload-Checksum`) the chunk's
/// digest, appending the filtered bytes to the staged object. Bytes are
/// filtered as they arrive and written once; the filter's state is saved
/// between PATCHes, so any server can continue an upload.
struct Pipeline {
    /// The staged object's key, `uploads/<id>/<lineage>`.
    staged: String,
    /// Committed bytes of the staged object.
    stored: u64,
    /// The first bytes, while the type is not known yet; stored as they
    /// came until then.
    head: Vec<u8>,
    filter: Option<Sanitizer>,
    media_type: Option<&'static str>,
    max_pixels: u64,
    /// Whether the staged object is started in this sitting, so that,
    /// written whole, it can take the attachment's name directly.
    fresh: bool,
    /// The SHA-256 of the committed bytes so far, continued by the store.
    hash: FileHash,
    digest: Option<RunningDigest>,
    /// Filtered bytes on their way to the staged object.
    out: Batch,
}

impl Pipeline {
    /// Where the upload stands: its staged object, the filter's saved
    /// state, or (before the type is known) the first bytes again.
    async fn resume(
        uploads: &Uploads,
        upload: &upload::Model,
        token: Uuid,
        took_over: bool,
    ) -> Result<Self, ApiError> {
        let offset = upload.upload_offset as u64;
        let lineage = if offset == 0 {
            None
        } else {
            upload_part::Entity::find()
                .filter(upload_part::Column::UploadId.eq(upload.id))
                .order_by_desc(upload_part::Column::StartOffset)
                .one(&uploads.db)
                .await?
        };
        let fresh_key = format!("{}{}", pieces_prefix(upload.id), token.simple());
        let mut pipeline = Pipeline {
            staged: fresh_key.clone(),
            stored: 0,
            head: Vec::with_capacity(SNIFF_LEN),
            filter: None,
            media_type: None,
            max_pixels: uploads.limits.max_image_pixels,
            fresh: true,
            hash: FileHash::default(),
            digest: None,
            out: Batch::new(),
        };
        let Some(upload_part::Model {
            storage_key: staged,
            filter_state,
            ..
        }) = lineage
        else {
            return Ok(pipeline);
        };
        if offset < SNIFF_LEN as u64 {
            // The type was not known yet: the first bytes are read back
            // and go through the filter again with the rest.
            let mut head = Vec::new();
            uploads
                .media
                .open_staged(&staged, offset)
                .await
                .map_err(ApiError::Storage)?
                .read_to_end(&mut head)
                .await
                .map_err(ApiError::Storage)?;
            pipeline.head = head;
            return Ok(pipeline);
        }
        // A photo's filter left its state; a PDF passes as it came. The
        // staged bytes of a photo are filtered and may not even show the
        // type yet (a long EXIF block being dropped), so the state decides.
        let (media_type, stored, filter, mut hash) =
            match load_saved(uploads, upload.id, offset, filter_state.as_deref()).await? {
                Some(Saved {
                    stored,
                    filter,
                    sha256,
                }) => {
                    let media_type = match &filter {
                        Sanitizer::Jpeg(_) => "image/jpeg",
                        Sanitizer::Png(_) => "image/png",
                        Sanitizer::Verbatim => "application/pdf",
                    };
                    let hash = sha256
                        .map(|saved| {
                            FileHash::restore(&saved).ok_or_else(|| {
                                ApiError::Internal(format!(
                                    "upload {} has an unreadable saved hash",
                                    upload.id
                                ))
                            })
                        })
                        .transpose()?;
                    (media_type, stored, filter, hash)
                }
                None => {
                    let mut head = Vec::new();
                    uploads
                        .media
                        .open_staged(&staged, SNIFF_LEN as u64)
                        .await
                        .map_err(ApiError::Storage)?
                        .read_to_end(&mut head)
                        .await
                        .map_err(ApiError::Storage)?;
                    let media_type = accepted_type(&head)?;
                    match Sanitizer::for_media_type(media_type, pipeline.max_pixels) {
                        Sanitizer::Verbatim => (media_type, offset, Sanitizer::Verbatim, None),
                        // Never continue a photo without its filter's state.
                        _ => {
                            return Err(ApiError::Internal(format!(
                                "upload {} lost the saved state of its photo filter",
                                upload.id
                            )))
                        }
                    }
                }
            };
        pipeline.media_type = Some(media_type);
        pipeline.filter = Some(filter);
        pipeline.stored = stored;
        pipeline.fresh = false;
        pipeline.staged = staged;
        if took_over {
            // The request that held the upload before may still be
            // writing somewhere: continue in a copy of its bytes.
            let mut from = uploads
                .media
                .open_staged(&pipeline.staged, stored)
                .await
                .map_err(ApiError::Storage)?;
            let mut copy = uploads
                .media
                .append(&fresh_key, 0, FileHash::default())
                .await
                .map_err(ApiError::Storage)?;
            let mut buffer = vec![0u8; CHUNK];
            let copied = async {
                loop {
                    let read = from.read(&mut buffer).await?;
                    if read == 0 {
                        break;
                    }
                    copy.write(&buffer[..read]).await?;
                }
                Ok::<_, std::io::Error>(())
            }
            .await;
            if let Err(error) = copied {
                copy.abort().await;
                return Err(ApiError::Storage(error));
            }
            // The copy's hash is that of the bytes so far.
            hash = Some(copy.commit().await.map_err(ApiError::Storage)?);
            pipeline.staged = fresh_key;
        }
        pipeline.hash = match hash {
            Some(hash) => hash,
            // Recorded by an earlier version: the bytes so far are read
            // back once.
            None => hash_of_staged(uploads, &pipeline.staged, stored)
                .await
                .map_err(ApiError::Storage)?,
        };
        Ok(pipeline)
    }

    /// Takes the next bytes of the file.
    async fn push(&mut self, bytes: &[u8], writer: &mut dyn MediaWriter) -> Result<(), Ending> {
        if let Some(digest) = self.digest.as_mut() {
            digest.update(bytes);
        }
        let mut bytes = bytes;
        if self.filter.is_none() {
            let take = (SNIFF_LEN - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() < SNIFF_LEN {
                return Ok(());
            }
            self.decide().map_err(Ending::Unacceptable)?;
        }
        let Some(filter) = self.filter.as_mut() else {
            return Ok(());
        };
        self.stored += self
            .out
            .filter(filter, bytes, writer)
            .await
            .map_err(|stop| match stop {
                Stop::Refused(refusal) => Ending::Unacceptable(super::refused(refusal)),
                Stop::Storage(error) => Ending::Refused(ApiError::Storage(error)),
            })?;
        Ok(())
    }

    /// The type is known from the first bytes: the filter starts with
    /// them.
    fn decide(&mut self) -> Result<(), ApiError> {
        let media_type = accepted_type(&self.head)?;
        let mut filter = Sanitizer::for_media_type(media_type, self.max_pixels);
        filter
            .push(&self.head, self.out.bytes())
            .map_err(super::refused)?;
        self.media_type = Some(media_type);
        self.filter = Some(filter);
        Ok(())
    }

    /// Hands every filtered byte gathered so far to the writer.
    async fn flush(&mut self, writer: &mut dyn MediaWriter) -> std::io::Result<()> {
        self.stored += self.out.hand_over(writer).await?;
        Ok(())
    }

    /// A PATCH ends before the type is known: its first bytes are kept as
    /// they came, to be read back by the next one.
    async fn hold_undecided(&mut self, writer: &mut dyn MediaWriter) -> std::io::Result<()> {
        if self.filter.is_none() {
            self.out.bytes().extend_from_slice(&self.head);
            self.flush(writer).await?;
        }
        Ok(())
    }

    /// The whole file has arrived: a file shorter than the sniffed bytes
    /// is decided now, and the filter checks the file is complete.
    async fn finish(
        &mut self,
        writer: &mut dyn MediaWriter,
    ) -> Result<Option<PhotoFacts>, ApiError> {
        if self.filter.is_none() {
            self.decide()?;
            self.flush(writer).await.map_err(ApiError::Storage)?;
        }
        match self.filter.as_ref() {
            Some(filter) => filter.finish().map_err(super::refused),
            None => Ok(None),
        }
    }

    /// The state to save after this PATCH, once the type is known.
    fn saved(&self) -> Option<String> {
        serde_json::to_string(&ToSave {
            stored: self.stored,
            sha256: self.hash.saved(),
            filter: self.filter.as_ref()?,
        })
        .ok()
    }
}

fn lost_lock() -> ApiError {
    ApiError::Conflict(
        "another request took this upload over; ask with HEAD where to continue".into(),
    )
}

/// Records a PATCH that did not finish the file and moves the offset, if
/// the lock is still ours; the filter's state is committed with it.
async fn record_piece(
    uploads: &Uploads,
    upload: &upload::Model,
    token: Uuid,
    pipeline: &Pipeline,
    size: u64,
) -> Result<Progress, ApiError> {
    let offset = upload.upload_offset as u64 + size;
    let expires_at = Utc::now() + uploads.limits.upload_expiry;
    let outcome = async {
        let txn = onestop_model::begin_write(&uploads.db).await?;
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
            release(uploads, upload.id, token).await;
            Err(error.into())
        }
    }
}

/// The update that moves the offset and releases the lock.
fn advance(
    upload: &upload::Model,
    token: Uuid,
    offset: u64,
    attachment_id: Option<Uuid>,
    expires_at: DateTime<Utc>,
) -> sea_orm::UpdateMany<upload::Entity> {
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

/// The hash of the first `len` bytes of a staged object, read back.
async fn hash_of_staged(uploads: &Uploads, key: &str, len: u64) -> std::io::Result<FileHash> {
    let mut reader = uploads.media.open_staged(key, len).await?;
    let mut hasher = FileHash::default();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher)
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
    let key = super::storage_key(attachment_id);
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
            release(uploads, upload.id, token).await;
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

fn pieces_prefix(id: Uuid) -> String {
    format!("uploads/{}/", id.simple())
}

/// Deletes an upload whose lock `token` holds, with its pieces: first it
/// is marked expired (so it is gone for clients at once and the sweep
/// finishes the job if this is interrupted), then the pieces, then the
/// row.
async fn discard(uploads: &Uploads, id: Uuid, token: Uuid) {
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
        release(uploads, id, token).await;
    }
}

/// Termination: the upload and its pieces are deleted. A finished
/// upload's attachment stays; only the upload's record goes.
pub async fn terminate(uploads: &Uploads, owner_id: Uuid, id: Uuid) -> Result<(), ApiError> {
    let upload = find(uploads, owner_id, id).await?;
    let token = Uuid::new_v4();
    let stale = Utc::now() - chrono::Duration::seconds(LOCK_STALE_SECS);
    let taken = upload::Entity::update_many()
        .col_expr(upload::Column::LockToken, Expr::value(token))
        .col_expr(upload::Column::LockedAt, Expr::value(Utc::now()))
        .filter(upload::Column::Id.eq(upload.id))
        .filter(
            Condition::any()
                .add(upload::Column::LockToken.is_null())
                .add(upload::Column::LockedAt.lt(stale)),
        )
        .exec(&uploads.db)
        .await?;
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
    let stale = now - chrono::Duration::seconds(LOCK_STALE_SECS);
    let unlocked = || {
        Condition::any()
            .add(upload::Column::LockToken.is_null())
            .add(upload::Column::LockedAt.lt(stale))
    };
    let expired: Vec<Uuid> = upload::Entity::find()
        .select_only()
        .column(upload::Column::Id)
        .filter(upload::Column::ExpiresAt.lte(now))
        .filter(unlocked())
        .limit(200)
        .into_tuple()
        .all(&uploads.db)
        .await?;
    let mut removed = 0;
    for id in expired {
        let token = Uuid::new_v4();
        let taken = upload::Entity::update_many()
            .col_expr(upload::Column::LockToken, Expr::value(token))
            .col_expr(upload::Column::LockedAt, Expr::value(now))
            .filter(upload::Column::Id.eq(id))
            .filter(upload::Column::ExpiresAt.lte(now))
            .filter(unlocked())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_gives_the_file_name_whatever_its_bytes() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let raw = format!(
            "filename {},filetype {},is_confidential",
            b64(b"receipt.jpg"),
            b64(b"image/jpeg")
        );
        assert_eq!(
            parse_metadata(&raw).unwrap().as_deref(),
            Some("receipt.jpg")
        );
        // EUC-KR bytes are not UTF-8: they become replacement characters.
        let raw = format!("filename {}", b64(b"\xbf\xb5\xbc\xf6.jpg"));
        let name = parse_metadata(&raw).unwrap().unwrap();
        assert!(name.ends_with(".jpg") && name.contains('\u{FFFD}'));
        assert_eq!(parse_metadata("").unwrap(), None);
        assert!(parse_metadata("filename !!!notbase64").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
    }

    #[test]
    fn checksums_name_a_known_algorithm_and_a_digest_of_its_length() {
        let sha1 = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(b"x"));
        assert!(matches!(
            Checksum::parse(&format!("sha1 {sha1}")),
            Ok(Checksum::Sha1(_))
        ));
        assert!(Checksum::parse(&format!("sha256 {sha1}")).is_err());
        assert!(Checksum::parse(&format!("md5 {sha1}")).is_err());
        assert!(Checksum::parse("sha1").is_err());
    }

    #[test]
    fn expiry_dates_are_http_dates() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:05:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(http_date(at), "Mon, 23 Nov 2026 08:05:09 GMT");
    }
}
