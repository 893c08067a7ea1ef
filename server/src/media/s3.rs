//! S3-compatible object storage (AWS S3, MinIO, Ceph, ...) through the
//! `object_store` crate, on the workspace's reqwest and rustls with ring.
//!
//! Writes go through `object_store`'s buffered writer: an object smaller
//! than one part (5 MiB, the S3 minimum) is sent with one PUT when it is
//! committed; a larger one becomes a multipart upload whose parts leave
//! while the rest still streams in, at most two at a time. A multipart
//! upload is invisible until completed, and aborted on failure, so no key
//! ever names half an object.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;
use tokio_util::io::StreamReader;

use super::{FileHash, MediaReader, MediaStore, MediaWriter};

/// One multipart part; S3 refuses smaller ones (except the last).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one object in flight at once: bounds memory per upload to
/// about `PART_SIZE * (1 + PARTS_IN_FLIGHT)`.
const PARTS_IN_FLIGHT: usize = 2;

/// Where the bucket is and how to sign in to it.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Base URL of an S3-compatible service; unset for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
}

pub struct S3Store {
    store: Arc<dyn ObjectStore>,
}

impl S3Store {
    pub fn new(config: &S3Config) -> std::io::Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key.expose_secret());
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        let store = builder.build().map_err(to_io)?;
        Ok(S3Store {
            store: Arc::new(store),
        })
    }
}

fn to_io(error: object_store::Error) -> std::io::Error {
    match error {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, error)
        }
        other => std::io::Error::other(other),
    }
}

fn reader(result: object_store::GetResult) -> MediaReader {
    Box::new(StreamReader::new(result.into_stream().map_err(to_io)))
}

struct S3Writer {
    writer: BufWriter,
    sha256: FileHash,
}

/// A staged object is a series of pieces `<key>/<start>`, one per
/// sitting, since S3 objects cannot be appended to; a later piece at the
/// same start replaces one that did not count.
fn piece_key(key: &str, start: u64) -> Path {
    Path::from(format!("{key}/{start:020}"))
}

impl S3Store {
    /// The pieces covering the first `len` bytes of a staged object, in
    /// order, with how many bytes of each to take (all of the last one's,
    /// or fewer).
    async fn pieces(&self, key: &str, len: u64) -> std::io::Result<Vec<(Path, u64, u64)>> {
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&Path::from(key)))
            .try_collect()
            .await
            .map_err(to_io)?;
        let mut sizes = std::collections::BTreeMap::new();
        for meta in listed {
            let start = meta
                .location
                .filename()
                .and_then(|name| name.parse::<u64>().ok());
            if let Some(start) = start {
                sizes.insert(start, (meta.location, meta.size));
            }
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < len {
            let Some((location, size)) = sizes.remove(&at) else {
                return Err(std::io::Error::other(format!(
                    "a staged object has no piece at {at} of {len}"
                )));
            };
            let take = size.min(len - at);
            if take == 0 {
                return Err(std::io::Error::other("a staged object has an empty piece"));
            }
            pieces.push((location, take, size));
            at += take;
        }
        Ok(pieces)
    }

    /// Reads `pieces` (from [`S3Store::pieces`]) one after another.
    fn read_pieces(&self, pieces: Vec<(Path, u64, u64)>) -> MediaReader {
        let store = self.store.clone();
        let stream = futures_util::stream::iter(pieces)
            .then(move |(location, take, _)| {
                let store = store.clone();
                async move {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(0..take)),
                        ..GetOptions::default()
                    };
                    let result = store.get_opts(&location, options).await.map_err(to_io)?;
                    Ok::<_, std::io::Error>(result.into_stream().map_err(to_io))
                }
            })
            .try_flatten();
        Box::new(StreamReader::new(Box::pin(stream)))
    }
}

#[async_trait]
impl MediaStore for S3Store {
    async fn create(&self, key: &str) -> std::io::Result<Box<dyn MediaWriter>> {
        let writer = BufWriter::with_capacity(self.store.clone(), Path::from(key), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(S3Writer {
            writer,
            sha256: FileHash::default(),
        }))
    }

    async fn open(&self, key: &str) -> std::io::Result<(MediaReader, u64)> {
        let result = self.store.get(&Path::from(key)).await.map_err(to_io)?;
        let size = result.meta.size;
        Ok((reader(result), size))
    }

    async fn open_range(&self, key: &str, range: Range<u64>) -> std::io::Result<MediaReader> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&Path::from(key), options)
            .await
            .map_err(to_io)?;
        Ok(reader(result))
    }

    async fn delete(&self, key: &str) -> std::io::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(to_io(error)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> std::io::Result<()> {
        let prefix = Path::from(prefix.trim_end_matches('/'));
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(to_io(error)),
            }
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> super::Listing {
        let prefix = Path::from(prefix.trim_end_matches('/'));
        self.store
            .list(Some(&prefix))
            .map(|meta| {
                meta.map(|meta| super::Listed {
                    key: meta.location.to_string(),
                    modified: meta.last_modified.into(),
                })
                .map_err(to_io)
            })
            .boxed()
    }

    async fn append(
        &self,
        key: &str,
        at: u64,
        so_far: FileHash,
    ) -> std::io::Result<Box<dyn MediaWriter>> {
        let writer = BufWriter::with_capacity(self.store.clone(), piece_key(key, at), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(S3Writer {
            writer,
            sha256: so_far,
        }))
    }

    async fn open_staged(&self, key: &str, len: u64) -> std::io::Result<MediaReader> {
        Ok(self.read_pieces(self.pieces(key, len).await?))
    }

    async fn publish_staged(&self, key: &str, len: u64, target: &str) -> std::io::Result<()> {
        // Sent in one sitting, the object is one piece: the bucket copies
        // it without its bytes coming back through the server.
        let pieces = self.pieces(key, len).await?;
        if let [(location, _, size)] = pieces.as_slice() {
            if *size == len {
                return self
                    .store
                    .copy(location, &Path::from(target))
                    .await
                    .map_err(to_io);
            }
        }
        let mut reader = self.read_pieces(pieces);
        let mut writer = self.create(target).await?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    writer.abort().await;
                    return Err(error);
                }
            };
            if read == 0 {
                break;
            }
            if let Err(error) = writer.write(&buffer[..read]).await {
                writer.abort().await;
                return Err(error);
            }
        }
        writer.commit().await.map(|_| ())
    }

    async fn check(&self) -> std::io::Result<()> {
        // Any answer from the bucket, "no such key" included, means it
        // is reachable and the credentials are accepted.
        match self.store.head(&Path::from(".readiness")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(to_io(error)),
        }
    }
}

#[async_trait]
impl MediaWriter for S3Writer {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.sha256.update(chunk);
        self.writer.write_all(chunk).await
    }

    async fn commit(mut self: Box<Self>) -> std::io::Result<FileHash> {
        self.writer.shutdown().await?;
        Ok(self.sha256)
    }

    async fn abort(mut self: Box<Self>) {
        if let Err(error) = self.writer.abort().await {
            tracing::warn!(%error, "could not abort a multipart upload");
        }
    }
}
