//! Staging: an unfinished upload's bytes in the media store (one staged
//! object, `uploads/<id>/<lineage>`, grown PATCH by PATCH), the filter's
//! state saved between PATCHes, and the pipeline each PATCH's bytes pass
//! through on their way there.

use onestop_model::entities::{upload, upload_part};
use sea_orm::prelude::*;
use sea_orm::{DatabaseConnection, QueryOrder};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::headers::RunningDigest;
use crate::error::ApiError;
use crate::media::{FileHash, MediaStore, MediaWriter};
use crate::uploads::strip::{PhotoFacts, Sanitizer};
use crate::uploads::{accepted_type, refused, Batch, Stop, SNIFF_LEN};

/// Bytes copied at a time when a taken-over upload continues in a copy.
const CHUNK: usize = 64 * 1024;

/// How taking a chunk ended.
pub(super) enum Ending {
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
    media: &dyn MediaStore,
    id: Uuid,
    offset: u64,
    in_row: Option<&str>,
) -> Result<Option<Saved>, ApiError> {
    if let Some(saved) = in_row {
        return serde_json::from_str(saved)
            .map(Some)
            .map_err(unreadable_state);
    }
    let mut reader = match media.open(&saved_key(id, offset)).await {
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
pub(super) struct Pipeline {
    /// The staged object's key, `uploads/<id>/<lineage>`.
    pub staged: String,
    /// Committed bytes of the staged object.
    pub stored: u64,
    /// The first bytes, while the type is not known yet; stored as they
    /// came until then.
    head: Vec<u8>,
    filter: Option<Sanitizer>,
    pub media_type: Option<&'static str>,
    max_pixels: u64,
    /// Whether the staged object is started in this sitting, so that,
    /// written whole, it can take the attachment's name directly.
    pub fresh: bool,
    /// The SHA-256 of the committed bytes so far, continued by the store.
    pub hash: FileHash,
    /// The chunk's digest, for a chunk sent with `Upload-Checksum`.
    pub digest: Option<RunningDigest>,
    /// Filtered bytes on their way to the staged object.
    out: Batch,
}

impl Pipeline {
    /// Where the upload stands: its staged object, the filter's saved
    /// state, or (before the type is known) the first bytes again.
    pub async fn resume(
        db: &DatabaseConnection,
        media: &dyn MediaStore,
        max_pixels: u64,
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
                .one(db)
                .await?
        };
        let fresh_key = format!("{}{}", pieces_prefix(upload.id), token.simple());
        let mut pipeline = Pipeline {
            staged: fresh_key.clone(),
            stored: 0,
            head: Vec::with_capacity(SNIFF_LEN),
            filter: None,
            media_type: None,
            max_pixels,
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
            media
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
            match load_saved(media, upload.id, offset, filter_state.as_deref()).await? {
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
                    media
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
            let mut from = media
                .open_staged(&pipeline.staged, stored)
                .await
                .map_err(ApiError::Storage)?;
            let mut copy = media
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
            None => hash_of_staged(media, &pipeline.staged, stored)
                .await
                .map_err(ApiError::Storage)?,
        };
        Ok(pipeline)
    }

    /// Takes the next bytes of the file.
    pub async fn push(&mut self, bytes: &[u8], writer: &mut dyn MediaWriter) -> Result<(), Ending> {
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
                Stop::Refused(refusal) => Ending::Unacceptable(refused(refusal)),
                Stop::Storage(error) => Ending::Refused(ApiError::Storage(error)),
            })?;
        Ok(())
    }

    /// The type is known from the first bytes: the filter starts with
    /// them.
    fn decide(&mut self) -> Result<(), ApiError> {
        let media_type = accepted_type(&self.head)?;
        let mut filter = Sanitizer::for_media_type(media_type, self.max_pixels);
        filter.push(&self.head, self.out.bytes()).map_err(refused)?;
        self.media_type = Some(media_type);
        self.filter = Some(filter);
        Ok(())
    }

    /// Hands every filtered byte gathered so far to the writer.
    pub async fn flush(&mut self, writer: &mut dyn MediaWriter) -> std::io::Result<()> {
        self.stored += self.out.hand_over(writer).await?;
        Ok(())
    }

    /// A PATCH ends before the type is known: its first bytes are kept as
    /// they came, to be read back by the next one.
    pub async fn hold_undecided(&mut self, writer: &mut dyn MediaWriter) -> std::io::Result<()> {
        if self.filter.is_none() {
            self.out.bytes().extend_from_slice(&self.head);
            self.flush(writer).await?;
        }
        Ok(())
    }

    /// The whole file has arrived: a file shorter than the sniffed bytes
    /// is decided now, and the filter checks the file is complete.
    pub async fn finish(
        &mut self,
        writer: &mut dyn MediaWriter,
    ) -> Result<Option<PhotoFacts>, ApiError> {
        if self.filter.is_none() {
            self.decide()?;
            self.flush(writer).await.map_err(ApiError::Storage)?;
        }
        match self.filter.as_ref() {
            Some(filter) => filter.finish().map_err(refused),
            None => Ok(None),
        }
    }

    /// The state to save after this PATCH, once the type is known.
    pub fn saved(&self) -> Option<String> {
        serde_json::to_string(&ToSave {
            stored: self.stored,
            sha256: self.hash.saved(),
            filter: self.filter.as_ref()?,
        })
        .ok()
    }
}

/// The hash of the first `len` bytes of a staged object, read back.
async fn hash_of_staged(media: &dyn MediaStore, key: &str, len: u64) -> std::io::Result<FileHash> {
    let mut reader = media.open_staged(key, len).await?;
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

/// Where the staged objects of upload `id` lie.
pub(super) fn pieces_prefix(id: Uuid) -> String {
    format!("uploads/{}/", id.simple())
}
