//! Receiving a file: the bytes stream from the request to the media store
//! while they are counted, filtered and hashed; the type is decided from
//! the first bytes, never from the name or the declared content type.
//! Photos lose their metadata on the way ([`strip`]), so the stored bytes
//! never hold a location; the recorded SHA-256 is that of the stored
//! bytes. Nothing is kept of a refused upload.
//!
//! Resumable uploads ([`tus`]) pass the same type check and the same
//! filter as their pieces arrive and end in the same [`record`], so a
//! photo sent in pieces becomes exactly the attachment a one-shot upload
//! would have made. Thumbnails are made afterwards, off the
//! request path ([`thumbnails`]).
//!
//! [`Uploads`] holds what all this needs: the database, the media store,
//! the upload limits and the thumbnailer.

pub mod multipart_front;
pub mod orphans;
pub mod strip;
pub mod thumbnails;
pub mod tus;

use std::sync::Arc;

use chrono::Utc;
use onestop_model::entities::{attachment, attachment_thumbnail};
use sea_orm::prelude::*;
use sea_orm::ActiveValue::Set;
use sea_orm::DatabaseConnection;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use uuid::Uuid;

use crate::error::ApiError;
use crate::media::{self, MediaStore, MediaWriter};
use crate::settings::Settings;
use strip::{PhotoFacts, Refusal, Sanitizer};
use thumbnails::Thumbnailer;

/// Receiving files, one-shot or resumable, recording them as
/// attachments and making their thumbnails. Cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    db: DatabaseConnection,
    media: Arc<dyn MediaStore>,
    limits: UploadLimits,
    thumbnails: Thumbnailer,
}

/// What an upload is held to.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest file, in bytes.
    pub max_upload_bytes: u64,
    /// Largest photo, in pixels (width × height, from its header).
    pub max_image_pixels: u64,
    /// How long an unfinished resumable upload is kept after its last
    /// chunk, and a finished one's record after it completed.
    pub upload_expiry: chrono::Duration,
}

impl UploadLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        UploadLimits {
            max_upload_bytes: settings.max_upload_bytes,
            max_image_pixels: settings.max_image_pixels,
            upload_expiry: chrono::Duration::seconds(
                i64::try_from(settings.upload_expiry_secs).unwrap_or(i64::MAX / 2),
            ),
        }
    }
}

impl Uploads {
    /// Files recorded in `db` and stored in `media`, within the settings'
    /// limits, with as many thumbnail workers as they say.
    pub fn from_settings(
        settings: &Settings,
        db: DatabaseConnection,
        media: Arc<dyn MediaStore>,
    ) -> Self {
        Uploads {
            thumbnails: Thumbnailer::new(settings.thumbnail_workers, db.clone(), media.clone()),
            db,
            media,
            limits: UploadLimits::from_settings(settings),
        }
    }

    /// The store the files are in.
    pub fn media(&self) -> &Arc<dyn MediaStore> {
        &self.media
    }

    pub fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    pub fn thumbnails(&self) -> &Thumbnailer {
        &self.thumbnails
    }

    /// Streams `body` through the type check, the size limit and the
    /// metadata filter into a new object; the store hashes what it writes.
    /// The body's chunks are filtered where they lie and the filtered bytes
    /// go to the store in large owned batches: after the multipart parser,
    /// the filter's output is the only copy a byte makes before the file.
    /// On any refusal or failure nothing stays in the store.
    pub async fn ingest(
        &self,
        mut body: impl AsyncBufRead + Unpin + Send,
    ) -> Result<Stored, ApiError> {
        let limit = self.limits.max_upload_bytes;
        let mut head = Vec::with_capacity(SNIFF_LEN);

        // Read until the type can be told (or the file ends).
        while head.len() < SNIFF_LEN {
            let chunk = body.fill_buf().await.map_err(read_error)?;
            if chunk.is_empty() {
                break;
            }
            let take = chunk.len().min(SNIFF_LEN - head.len());
            head.extend_from_slice(&chunk[..take]);
            body.consume(take);
        }
        if head.is_empty() {
            return Err(ApiError::Validation("the file is empty".into()));
        }
        let media_type = accepted_type(&head)?;
        let mut sanitizer = Sanitizer::for_media_type(media_type, self.limits.max_image_pixels);
        let mut out = Batch::new();
        sanitizer.push(&head, out.bytes()).map_err(refused)?;

        let id = Uuid::new_v4();
        let key = storage_key(id);
        let mut writer = self.media.create(&key).await.map_err(ApiError::Storage)?;
        let mut received = head.len() as u64;
        let mut stored = 0u64;
        let copied: Result<Option<PhotoFacts>, ApiError> = async {
            loop {
                let chunk = body.fill_buf().await.map_err(read_error)?;
                if chunk.is_empty() {
                    break;
                }
                let read = chunk.len();
                received += read as u64;
                if received > limit {
                    return Err(ApiError::TooLarge { limit });
                }
                stored += out
                    .filter(&mut sanitizer, chunk, &mut *writer)
                    .await
                    .map_err(|stop| match stop {
                        Stop::Refused(refusal) => refused(refusal),
                        Stop::Storage(error) => ApiError::Storage(error),
                    })?;
                body.consume(read);
            }
            stored += out
                .hand_over(&mut *writer)
                .await
                .map_err(ApiError::Storage)?;
            sanitizer.finish().map_err(refused)
        }
        .await;
        let photo = match copied {
            Ok(photo) => photo,
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        };
        let sha256 = writer.commit().await.map_err(ApiError::Storage)?.hex();
        metrics::counter!("attachment_bytes_removed_total").increment(received - stored);
        Ok(Stored {
            id,
            key,
            media_type,
            byte_size: stored,
            sha256,
            photo,
        })
    }

    /// Streams `body` into the store and records the attachment.
    pub async fn receive(
        &self,
        owner_id: Uuid,
        file_name: Option<&str>,
        body: impl AsyncBufRead + Unpin + Send,
    ) -> Result<attachment::Model, ApiError> {
        let _receiving = self.thumbnails.receiving();
        let stored = self.ingest(body).await?;
        let recorded = async {
            let txn = onestop_model::begin_write(&self.db).await?;
            let model = record(&txn, owner_id, &stored, file_name).await?;
            txn.commit().await?;
            Ok::<_, DbErr>(model)
        }
        .await;
        match recorded {
            Ok(model) => {
                self.accepted(&stored);
                Ok(model)
            }
            Err(error) => {
                self.forget(&stored.key).await;
                Err(error.into())
            }
        }
    }

    /// After an attachment is recorded: metrics, and its thumbnail queued.
    fn accepted(&self, stored: &Stored) {
        metrics::counter!("attachments_stored_total", "media_type" => stored.media_type)
            .increment(1);
        metrics::counter!("attachment_bytes_total").increment(stored.byte_size);
        if stored.photo.is_some() {
            self.thumbnails.enqueue(stored.id);
        }
    }

    /// The uploads' background work until `cancel`: thumbnails left pending
    /// by a restart are queued, then abandoned resumable uploads are swept
    /// every minute.
    pub async fn background(self, cancel: tokio_util::sync::CancellationToken) {
        match self.thumbnails.resume_pending().await {
            Ok(0) => {}
            Ok(queued) => tracing::info!(queued, "pending thumbnails queued again"),
            Err(error) => {
                tracing::warn!(error = %crate::error::ErrorChain(&error), "pending thumbnails could not be listed")
            }
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(error) = tus::sweep_expired(&self).await {
                tracing::warn!(error = %crate::error::ErrorChain(&error), "sweeping expired uploads failed");
            }
        }
    }

    /// Removes an object that will not be recorded.
    async fn forget(&self, key: &str) {
        if let Err(cleanup) = self.media.delete(key).await {
            tracing::error!(%cleanup, key, "an unrecorded upload could not be removed");
        }
    }
}

/// Bytes needed to tell the allowed types apart.
pub const SNIFF_LEN: usize = 64;

/// The types accepted, by what their bytes are.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let kind = infer::get(head)?;
    match kind.mime_type() {
        "image/jpeg" => Some("image/jpeg"),
        "image/png" => Some("image/png"),
        "application/pdf" => Some("application/pdf"),
        _ => None,
    }
}

/// The accepted type of a file starting with `head`, or why it is refused.
pub fn accepted_type(head: &[u8]) -> Result<&'static str, ApiError> {
    if let Some(media_type) = sniff(head) {
        return Ok(media_type);
    }
    let detail = match infer::get(head).map(|kind| kind.mime_type()) {
        Some("image/heif" | "image/heic" | "image/avif") => {
            "HEIC/HEIF photos are not accepted, because their location data cannot be removed \
             safely here; send the photo as JPEG (on an iPhone: Settings › Camera › Formats › \
             Most Compatible)"
        }
        _ => "only JPEG and PNG photos and PDF documents are accepted",
    };
    Err(ApiError::UnsupportedMediaType(detail.into()))
}

fn refused(refusal: Refusal) -> ApiError {
    ApiError::Validation(refusal.to_string())
}

/// A file name safe to show and to put in a header: the last path
/// component, without control characters, at most 120 characters.
pub fn clean_file_name(raw: Option<&str>, media_type: &str) -> String {
    let base = raw
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | ':' | '|' | '?' | '*'))
        .take(120)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        let extension = match media_type {
            "image/jpeg" => "jpg",
            "image/png" => "png",
            _ => "pdf",
        };
        format!("upload.{extension}")
    } else {
        cleaned
    }
}

/// Where an attachment's file lies in the media store.
pub fn storage_key(id: Uuid) -> String {
    let hex = id.simple().to_string();
    format!("attachments/{}/{}/{hex}", &hex[..2], &hex[2..4])
}

/// A file checked, filtered and committed to the media store, not yet
/// recorded.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: Uuid,
    pub key: String,
    pub media_type: &'static str,
    /// Size of the stored (filtered) bytes.
    pub byte_size: u64,
    /// SHA-256 of the stored bytes, hexadecimal.
    pub sha256: String,
    /// Size, pixels and orientation of a photo.
    pub photo: Option<PhotoFacts>,
}

/// Filtered bytes gathered into one large write, then handed to the
/// store whole ([`MediaWriter::write_owned`]), which keeps them instead
/// of copying them again.
pub struct Batch {
    bytes: Vec<u8>,
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            bytes: Vec::with_capacity(BATCH_CAPACITY),
        }
    }

    /// Where the filter puts its output.
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Runs `bytes` through `sanitizer` into the batch, at most
    /// [`FILTER_PIECE`] at a time, handing the batch over whenever it
    /// holds enough for a large write; tells how many bytes went.
    pub async fn filter(
        &mut self,
        sanitizer: &mut Sanitizer,
        bytes: &[u8],
        writer: &mut dyn MediaWriter,
    ) -> Result<u64, Stop> {
        let mut handed_over = 0;
        for piece in bytes.chunks(FILTER_PIECE) {
            if self.bytes.len() >= media::LARGE_WRITE {
                handed_over += self.hand_over(writer).await.map_err(Stop::Storage)?;
            }
            sanitizer
                .push(piece, &mut self.bytes)
                .map_err(Stop::Refused)?;
        }
        Ok(handed_over)
    }

    /// Hands over whatever is gathered; tells how many bytes went.
    pub async fn hand_over(&mut self, writer: &mut dyn MediaWriter) -> std::io::Result<u64> {
        if self.bytes.is_empty() {
            return Ok(0);
        }
        let full = std::mem::replace(&mut self.bytes, Vec::with_capacity(BATCH_CAPACITY));
        let len = full.len() as u64;
        writer.write_owned(full).await?;
        Ok(len)
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// Why filtering into a batch stopped.
pub enum Stop {
    /// The file is not an acceptable one.
    Refused(Refusal),
    /// The store could not take the bytes.
    Storage(std::io::Error),
}

/// The most the filter is given at once: a batch short of a large write
/// takes one more piece's output without growing, so a large network
/// chunk never makes a batch (and the memory it holds) larger.
const FILTER_PIECE: usize = 64 * 1024;
/// Room for a large write, one more piece, and a segment the filter
/// rewrites (an orientation-only EXIF block).
const BATCH_CAPACITY: usize = media::LARGE_WRITE + FILTER_PIECE + 1024;

/// Records a stored file as an attachment, with its thumbnail to make.
pub async fn record(
    db: &impl ConnectionTrait,
    owner_id: Uuid,
    stored: &Stored,
    file_name: Option<&str>,
) -> Result<attachment::Model, DbErr> {
    let now = Utc::now();
    let model = attachment::ActiveModel {
        id: Set(stored.id),
        owner_id: Set(owner_id),
        media_type: Set(stored.media_type.to_owned()),
        byte_size: Set(stored.byte_size as i64),
        sha256: Set(stored.sha256.clone()),
        storage_key: Set(stored.key.clone()),
        file_name: Set(clean_file_name(file_name, stored.media_type)),
        created_at: Set(now),
    }
    .insert(db)
    .await?;
    let (thumbnail_state, detail) = match stored.photo {
        Some(_) => (thumbnails::PENDING, None),
        None => (
            thumbnails::NONE,
            Some("PDF documents have no thumbnail".to_owned()),
        ),
    };
    attachment_thumbnail::ActiveModel {
        attachment_id: Set(stored.id),
        state: Set(thumbnail_state.to_owned()),
        orientation: Set(stored.photo.map_or(1, |p| i16::from(p.orientation))),
        storage_key: Set(None),
        byte_size: Set(None),
        sha256: Set(None),
        width: Set(None),
        height: Set(None),
        detail: Set(detail),
        updated_at: Set(now),
    }
    .insert(db)
    .await?;
    Ok(model)
}

/// Hands a request body to the multipart parser one chunk per poll.
///
/// `multer` reads its input greedily into one growing buffer until the
/// input has nothing ready, so a client sending faster than storage takes
/// the bytes (a fast network, slow object storage) would have its whole
/// file buffered. After each chunk this stream answers "not ready, poll
/// again", which bounds that buffer to about one network chunk. Written
/// here because multer offers only a total size limit, not a buffer limit.
pub struct OneChunkAtATime<S> {
    inner: S,
    just_gave: bool,
}

impl<S> OneChunkAtATime<S> {
    pub fn new(inner: S) -> Self {
        OneChunkAtATime {
            inner,
            just_gave: false,
        }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for OneChunkAtATime<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if self.just_gave {
            self.just_gave = false;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let item = futures_util::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx));
        self.just_gave = item.is_some();
        std::task::Poll::Ready(item)
    }
}

/// A read error of the request body: the client went away or sent a
/// broken multipart stream, or the body limit was reached.
pub fn read_error(error: std::io::Error) -> ApiError {
    ApiError::MalformedBody(format!("the upload could not be read to its end: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_bytes_not_names() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']),
            Some("image/jpeg")
        );
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"just some text pretending to be a photo"), None);
        assert_eq!(sniff(b"GIF89a......"), None);
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(
            clean_file_name(Some("../../etc/passwd"), "image/png"),
            "passwd"
        );
        assert_eq!(
            clean_file_name(Some("C:\\photos\\receipt 1.jpg"), "image/jpeg"),
            "receipt 1.jpg"
        );
        assert_eq!(
            clean_file_name(Some("a\u{0}b\nc.pdf"), "application/pdf"),
            "abc.pdf"
        );
        assert_eq!(clean_file_name(Some(".."), "image/jpeg"), "upload.jpg");
        assert_eq!(clean_file_name(None, "application/pdf"), "upload.pdf");
    }
}
