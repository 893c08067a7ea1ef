//! Where photos and PDFs live. One interface, so the local disk (the
//! default) and S3-compatible object storage ([`S3Store`]) are chosen by
//! configuration (`MEDIA_STORE=local|s3`).

mod local;
mod s3;

use std::ops::Range;

use async_trait::async_trait;
use tokio::io::AsyncRead;

pub use local::{LocalDisk, Writeback, QUEUED_WRITES};
pub use s3::{S3Config, S3Store};

/// The store the settings name: `MEDIA_STORE=local` (files under
/// `MEDIA_DIR`) or `s3` (the `S3_*` settings).
pub async fn from_settings(
    settings: &crate::settings::Settings,
) -> std::io::Result<std::sync::Arc<dyn MediaStore>> {
    Ok(match settings.media_store.as_str() {
        "s3" => std::sync::Arc::new(S3Store::new(&S3Config {
            bucket: settings.s3_bucket.clone().unwrap_or_default(),
            endpoint: settings.s3_endpoint.clone(),
            region: settings.s3_region.clone(),
            access_key_id: settings.s3_access_key_id.clone(),
            secret_access_key: settings.s3_secret_access_key.clone(),
        })?),
        _ => std::sync::Arc::new(LocalDisk::open_dir(&settings.media_dir).await?),
    })
}

/// A readable stream of an object's bytes.
pub type MediaReader = Box<dyn AsyncRead + Send + Unpin>;

/// An object found by [`MediaStore::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    /// When its bytes were last written.
    pub modified: std::time::SystemTime,
}

/// The objects under a prefix, as the store finds them.
pub type Listing = futures_util::stream::BoxStream<'static, std::io::Result<Listed>>;

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Starts writing a new object; nothing is visible until `commit`.
    async fn create(&self, key: &str) -> std::io::Result<Box<dyn MediaWriter>>;
    /// Reads a committed object and tells its size.
    async fn open(&self, key: &str) -> std::io::Result<(MediaReader, u64)>;
    /// Reads the bytes `range` of a committed object; the range lies
    /// within the object.
    async fn open_range(&self, key: &str, range: Range<u64>) -> std::io::Result<MediaReader>;
    /// Removes an object; removing one that is not there is no error.
    async fn delete(&self, key: &str) -> std::io::Result<()>;
    /// Removes every object whose key starts with `prefix`, which ends
    /// with `/`.
    async fn delete_prefix(&self, prefix: &str) -> std::io::Result<()>;
    /// Whether the store can be written to, for readiness.
    async fn check(&self) -> std::io::Result<()>;
    /// Every committed object whose key starts with `prefix`, which ends
    /// with `/`, in no particular order; a store of millions of objects
    /// is listed without holding them all.
    fn list(&self, prefix: &str) -> Listing;

    /// Continues a staged object, one written in several sittings (a
    /// resumable upload), whose first `at` bytes were committed before
    /// and hash to `so_far`; whatever an attempt that did not count left
    /// after them is replaced. `commit` makes the new bytes durable; `abort`
    /// throws them away and keeps the first `at`.
    async fn append(
        &self,
        key: &str,
        at: u64,
        so_far: FileHash,
    ) -> std::io::Result<Box<dyn MediaWriter>>;
    /// Reads the first `len` committed bytes of a staged object.
    async fn open_staged(&self, key: &str, len: u64) -> std::io::Result<MediaReader>;
    /// Makes the first `len` bytes of a staged object the object
    /// `target`, durably, leaving the staged object as it is (it goes
    /// with [`MediaStore::delete_prefix`]). Local disk links the file,
    /// so no byte is written again; S3 copies an object of one piece
    /// within the bucket.
    async fn publish_staged(&self, key: &str, len: u64, target: &str) -> std::io::Result<()>;
}

/// SHA-256 of an object's bytes, hexadecimal.
pub type Sha256Hex = String;

/// The SHA-256 of an object's bytes from its first one, still open: a
/// staged object written in several sittings carries it from one to the
/// next (saved between them with [`FileHash::saved`]), so its hash is
/// known when the last byte is written without reading the object back.
#[derive(Clone, Default)]
pub struct FileHash(sha2_resumable::Sha256);

impl FileHash {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2_resumable::Digest::update(&mut self.0, bytes);
    }

    /// The SHA-256 of the bytes so far.
    pub fn hex(&self) -> Sha256Hex {
        hex::encode(sha2_resumable::Digest::finalize(self.0.clone()))
    }

    /// The state to continue from, as text.
    pub fn saved(&self) -> String {
        use sha2_resumable::digest::common::hazmat::SerializableState;
        hex::encode(self.0.serialize())
    }

    /// Continues from [`FileHash::saved`]; `None` if it is not one.
    pub fn restore(saved: &str) -> Option<Self> {
        use sha2_resumable::digest::common::hazmat::{SerializableState, SerializedState};
        let bytes = hex::decode(saved).ok()?;
        let state = SerializedState::<sha2_resumable::Sha256>::try_from(bytes.as_slice()).ok()?;
        sha2_resumable::Sha256::deserialize(&state)
            .ok()
            .map(FileHash)
    }
}

#[async_trait]
pub trait MediaWriter: Send {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
    /// Writes bytes the caller is done with. A store that queues its
    /// writes keeps them as they are; large ones ([`LARGE_WRITE`]) then
    /// reach the disk without another copy.
    async fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.write(&bytes).await
    }
    /// Makes the object visible under its key, durably, and tells the
    /// hash of all its bytes (for `append`, continued from `so_far`).
    async fn commit(self: Box<Self>) -> std::io::Result<FileHash>;
    /// Whether [`MediaWriter::commit_as`] can give this writer's bytes
    /// another key directly.
    fn can_commit_as(&self) -> bool {
        false
    }
    /// For a staged object written whole in this sitting (`append` at
    /// 0): makes its bytes the new object `target` instead, durably, as
    /// `commit` and then `publish_staged` would, but without naming the
    /// staged object first. Only when [`MediaWriter::can_commit_as`].
    async fn commit_as(self: Box<Self>, target: &str) -> std::io::Result<FileHash> {
        let _ = target;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this store names a staged object before publishing it",
        ))
    }
    /// Throws away what was written.
    async fn abort(self: Box<Self>);
}

/// Bytes gathered before one write to the file; callers that gather
/// their own hand over batches of this size.
pub const LARGE_WRITE: usize = 256 * 1024;
