//! Thumbnails for the officials' tablets, made off the request path.
//!
//! A bounded pool: at most `THUMBNAIL_WORKERS` photos (one per core by
//! default) are decoded at once, each on one of the pool's own threads,
//! each with the `image` crate's allocation limit, so a decompression bomb
//! fails its own thumbnail instead of taking the server's memory. Work
//! waiting for a worker is only an id. The pool's threads run at a lower
//! scheduling priority (nice 19 on Linux), so requests come first for the
//! cores. That alone is not enough: once started, a decode holds a core for
//! tens of milliseconds, and it starts in any short gap between a phone's
//! photos. So a thumbnail also waits for a lull in uploads ([`LULL`] with
//! none being received), for at most [`YIELD_AT_MOST`] after its photo was
//! accepted: a phone's upload should not wait for a tablet's preview. On a
//! quiet server thumbnails start at once. A thumbnail not made before a
//! restart is still `pending` in the database and is queued again at
//! start.
//!
//! The thumbnail is a JPEG whose pixels are already turned by the photo's
//! EXIF orientation and which carries no metadata at all, so it displays
//! upright everywhere.

use std::io::Cursor;
use std::sync::Arc;

use chrono::Utc;
use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use onestop_model::entities::{attachment, attachment_thumbnail};
use sea_orm::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, QuerySelect};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::error::ErrorChain;
use crate::media::MediaStore;

pub const PENDING: &str = "pending";
pub const READY: &str = "ready";
pub const NONE: &str = "none";

/// Longest edge of a thumbnail, in pixels.
pub const EDGE: u32 = 512;
/// JPEG quality of a thumbnail.
pub const QUALITY: u8 = 80;
/// Most memory one decode may allocate: a 12-megapixel phone photo needs
/// about 36 MiB, the largest accepted photo more; beyond this the photo
/// gets no thumbnail (the tablet opens the photo itself).
const DECODE_MEMORY: u64 = 192 * 1024 * 1024;

/// Longest a thumbnail waits for uploads to pause before it is made
/// anyway, so a server that always has an upload arriving still makes
/// every thumbnail soon after its photo.
pub const YIELD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);
/// How long no upload must have been received before thumbnails start:
/// longer than the gap between one phone's consecutive photos.
pub const LULL: std::time::Duration = std::time::Duration::from_millis(250);

/// Makes the thumbnails of recorded photos: reads each from the media
/// store, decodes it in the pool and records the outcome in the database.
/// Cheap to clone.
#[derive(Clone)]
pub struct Thumbnailer {
    pool: Pool,
    db: DatabaseConnection,
    media: Arc<dyn MediaStore>,
}

/// The decoding threads, the permits that bound the thumbnails made at
/// once, and the uploads being received, which thumbnails wait for.
#[derive(Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    decoders: Arc<Decoders>,
    incoming: Arc<tokio::sync::watch::Sender<Incoming>>,
}

/// Uploads being received, and when the last one ended.
#[derive(Clone, Copy)]
struct Incoming {
    receiving: usize,
    last_ended: Option<tokio::time::Instant>,
}

impl Incoming {
    /// When the lull begins, if no upload is being received.
    fn quiet_from(&self) -> Option<tokio::time::Instant> {
        match (self.receiving, self.last_ended) {
            (0, Some(ended)) => Some(ended + LULL),
            (0, None) => Some(tokio::time::Instant::now()),
            _ => None,
        }
    }
}

/// One upload being received: thumbnails wait while any is held (see
/// [`Thumbnailer::receiving`]).
pub struct Receiving(Arc<tokio::sync::watch::Sender<Incoming>>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.send_modify(|incoming| {
            incoming.receiving = incoming.receiving.saturating_sub(1);
            incoming.last_ended = Some(tokio::time::Instant::now());
        });
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The decoding threads. They end when the last [`Thumbnailer`] holding
/// them is dropped.
struct Decoders {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

/// Niceness of the decoding threads: background work yields to requests.
#[cfg(target_os = "linux")]
const DECODER_NICENESS: i32 = 19;

impl Decoders {
    fn start(workers: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..workers {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("thumbnail-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "a thumbnail thread could not be started");
            }
        }
        Decoders {
            jobs: std::sync::Mutex::new(jobs),
        }
    }

    /// Runs `work` on a decoding thread and waits for its result. A
    /// `work` that panics gives its panic (`Ok(Err(_))`) and the thread
    /// goes on with the next job.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::Result<T>, BoxError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
        });
        self.jobs
            .lock()
            .map_err(|_| "the thumbnail threads are gone")?
            .send(job)
            .map_err(|_| "the thumbnail threads are gone")?;
        Ok(result.await.map_err(|_| "a thumbnail thread stopped")?)
    }
}

/// Lowers the calling thread's scheduling priority; Linux keeps a nice
/// value per thread. Where refused, the thread keeps the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(None, DECODER_NICENESS) {
        tracing::debug!(%error, "thumbnail threads keep the normal priority");
    }
}

impl Pool {
    /// A pool of `workers` decoders; 0 means one per core.
    fn new(workers: usize) -> Self {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            workers
        };
        Pool {
            permits: Arc::new(Semaphore::new(workers)),
            decoders: Arc::new(Decoders::start(workers)),
            incoming: Arc::new(tokio::sync::watch::Sender::new(Incoming {
                receiving: 0,
                last_ended: None,
            })),
        }
    }

    fn receiving(&self) -> Receiving {
        self.incoming
            .send_modify(|incoming| incoming.receiving += 1);
        Receiving(self.incoming.clone())
    }

    /// Waits for a lull in uploads, or until `deadline`.
    async fn lull(&self, deadline: tokio::time::Instant) {
        let mut incoming = self.incoming.subscribe();
        let lull = async {
            loop {
                let quiet_from = match incoming.wait_for(|u| u.receiving == 0).await {
                    Ok(idle) => idle.quiet_from(),
                    Err(_) => return,
                };
                if let Some(quiet_from) = quiet_from {
                    tokio::time::sleep_until(quiet_from).await;
                }
                let now = incoming.borrow_and_update().quiet_from();
                if now.is_some_and(|from| from <= tokio::time::Instant::now()) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, lull).await;
    }
}

impl Thumbnailer {
    /// Thumbnails of the photos recorded in `db` and stored in `media`,
    /// `workers` at a time; 0 means one per core.
    pub fn new(workers: usize, db: DatabaseConnection, media: Arc<dyn MediaStore>) -> Self {
        Thumbnailer {
            pool: Pool::new(workers),
            db,
            media,
        }
    }

    /// Marks an upload as being received until the result is dropped.
    pub fn receiving(&self) -> Receiving {
        self.pool.receiving()
    }

    /// Queues the thumbnail of a recorded photo; returns at once.
    pub fn enqueue(&self, attachment_id: Uuid) {
        let thumbnailer = self.clone();
        let deadline = tokio::time::Instant::now() + YIELD_AT_MOST;
        tokio::spawn(async move {
            let Ok(_permit) = thumbnailer.pool.permits.clone().acquire_owned().await else {
                return;
            };
            thumbnailer.pool.lull(deadline).await;
            if let Err(error) = thumbnailer.make(attachment_id).await {
                tracing::warn!(%attachment_id, error = %ErrorChain(&*error), "a thumbnail could not be made");
            }
        });
    }

    /// Queues every thumbnail still pending (after a restart).
    pub async fn resume_pending(&self) -> Result<usize, DbErr> {
        let pending: Vec<Uuid> = attachment_thumbnail::Entity::find()
            .select_only()
            .column(attachment_thumbnail::Column::AttachmentId)
            .filter(attachment_thumbnail::Column::State.eq(PENDING))
            .into_tuple()
            .all(&self.db)
            .await?;
        for id in &pending {
            self.enqueue(*id);
        }
        Ok(pending.len())
    }

    /// Marks a photo recorded before thumbnails existed as pending, so the
    /// next request queues it.
    pub async fn ensure_row(&self, photo: &attachment::Model) -> Result<String, DbErr> {
        if let Some(row) = attachment_thumbnail::Entity::find_by_id(photo.id)
            .one(&self.db)
            .await?
        {
            return Ok(row.state);
        }
        let is_photo = photo.media_type.starts_with("image/");
        let state_name = if is_photo { PENDING } else { NONE };
        let inserted = attachment_thumbnail::Entity::insert(attachment_thumbnail::ActiveModel {
            attachment_id: Set(photo.id),
            state: Set(state_name.to_owned()),
            orientation: Set(1),
            storage_key: Set(None),
            byte_size: Set(None),
            sha256: Set(None),
            width: Set(None),
            height: Set(None),
            detail: Set((!is_photo).then(|| "PDF documents have no thumbnail".to_owned())),
            updated_at: Set(Utc::now()),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(attachment_thumbnail::Column::AttachmentId)
                .do_nothing()
                .to_owned(),
        )
        .do_nothing()
        .exec(&self.db)
        .await?;
        if is_photo && matches!(inserted, sea_orm::TryInsertResult::Inserted(_)) {
            self.enqueue(photo.id);
        }
        Ok(state_name.to_owned())
    }

    async fn make(&self, attachment_id: Uuid) -> Result<(), BoxError> {
        let Some(row) = attachment_thumbnail::Entity::find_by_id(attachment_id)
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        if row.state != PENDING {
            return Ok(());
        }
        let Some(photo) = attachment::Entity::find_by_id(attachment_id)
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        let format = match photo.media_type.as_str() {
            "image/jpeg" => ImageFormat::Jpeg,
            "image/png" => ImageFormat::Png,
            _ => return self.finish(attachment_id, Err("not a photo".into())).await,
        };
        // The decoders want the whole file; it is at most MAX_UPLOAD_BYTES.
        let (mut reader, size) = self.media.open(&photo.storage_key).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader.read_to_end(&mut bytes).await?;
        let orientation = Orientation::from_exif(u8::try_from(row.orientation).unwrap_or(1))
            .unwrap_or(Orientation::NoTransforms);
        let rendered = self
            .pool
            .decoders
            .run(move || render(&bytes, format, orientation))
            .await?
            // A decoder that panics on a hostile file fails this thumbnail for
            // good, like a decoding error.
            .unwrap_or_else(|_| {
                Err(image::ImageError::IoError(std::io::Error::other(
                    "the decoder failed on this file",
                )))
            });
        let outcome = match rendered {
            Ok(thumbnail) => {
                let key = thumbnail_key(attachment_id);
                let mut writer = self.media.create(&key).await?;
                if let Err(error) = writer.write(&thumbnail.jpeg).await {
                    writer.abort().await;
                    return Err(error.into());
                }
                writer.commit().await?;
                Ok((key, thumbnail))
            }
            Err(error) => Err(error.to_string()),
        };
        self.finish(attachment_id, outcome).await
    }

    async fn finish(
        &self,
        attachment_id: Uuid,
        outcome: Result<(String, Thumbnail), String>,
    ) -> Result<(), BoxError> {
        let mut row = attachment_thumbnail::ActiveModel {
            attachment_id: Set(attachment_id),
            updated_at: Set(Utc::now()),
            ..Default::default()
        };
        match outcome {
            Ok((key, thumbnail)) => {
                row.state = Set(READY.to_owned());
                row.byte_size = Set(Some(thumbnail.jpeg.len() as i64));
                row.sha256 = Set(Some(hex::encode(Sha256::digest(&thumbnail.jpeg))));
                row.storage_key = Set(Some(key));
                row.width = Set(Some(thumbnail.width as i32));
                row.height = Set(Some(thumbnail.height as i32));
                metrics::counter!("thumbnails_made_total").increment(1);
            }
            Err(reason) => {
                row.state = Set(NONE.to_owned());
                row.detail = Set(Some(format!("no thumbnail could be made: {reason}")));
                metrics::counter!("thumbnails_failed_total").increment(1);
            }
        }
        attachment_thumbnail::Entity::update_many()
            .set(row)
            .filter(attachment_thumbnail::Column::AttachmentId.eq(attachment_id))
            .filter(attachment_thumbnail::Column::State.eq(PENDING))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn thumbnail_key(attachment_id: Uuid) -> String {
    let hex = attachment_id.simple().to_string();
    format!("thumbnails/{}/{}/{hex}", &hex[..2], &hex[2..4])
}

pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Decodes a photo within the memory bound, shrinks it to fit
/// [`EDGE`]×[`EDGE`], turns it upright and encodes it as JPEG.
pub fn render(
    bytes: &[u8],
    format: ImageFormat,
    orientation: Orientation,
) -> Result<Thumbnail, image::ImageError> {
    let reduced = match format {
        ImageFormat::Jpeg => decode_jpeg_reduced(bytes),
        _ => None,
    };
    let decoded = match reduced {
        Some(decoded) => decoded,
        None => {
            let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
            let mut limits = Limits::default();
            limits.max_image_width = Some(65_535);
            limits.max_image_height = Some(65_535);
            limits.max_alloc = Some(DECODE_MEMORY);
            reader.limits(limits);
            reader.decode()?
        }
    };
    let mut small = if decoded.width() <= EDGE && decoded.height() <= EDGE {
        decoded
    } else {
        decoded.thumbnail(EDGE, EDGE)
    };
    small.apply_orientation(orientation);
    let rgb = small.to_rgb8();
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, QUALITY).encode_image(&rgb)?;
    Ok(Thumbnail {
        jpeg,
        width: rgb.width(),
        height: rgb.height(),
    })
}

/// Decodes a JPEG at a reduced size when the thumbnail needs no more:
/// the decoder scales the inverse DCT to 1/2, 1/4 or 1/8, the smallest
/// that still covers [`EDGE`], so a 12-megapixel photo is never expanded
/// to full size (a quarter of the work and a sixteenth of the memory, or
/// less). `None` (then the full decode, with its allocation limit, runs)
/// for what it does not handle: CMYK and 16-bit JPEGs, a progressive JPEG
/// whose coefficients (kept whole until its last scan) would pass
/// [`DECODE_MEMORY`], or a file it cannot read.
fn decode_jpeg_reduced(bytes: &[u8]) -> Option<DynamicImage> {
    // The decoder has arms that panic instead of failing (its `info` on
    // a frame it should have refused); should a hostile file reach one,
    // the full decode runs instead.
    std::panic::catch_unwind(|| {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        decoder.set_max_decoding_buffer_size(usize::try_from(DECODE_MEMORY).ok()?);
        decoder.read_info().ok()?;
        let full = decoder.info()?;
        let components: u64 = match full.pixel_format {
            jpeg_decoder::PixelFormat::RGB24 => 3,
            jpeg_decoder::PixelFormat::L8 => 1,
            _ => return None,
        };
        if full.coding_process == jpeg_decoder::CodingProcess::DctProgressive {
            // 64 two-byte coefficients per 8×8 block and component, with
            // room for the blocks' padding.
            let blocks =
                (u64::from(full.width).div_ceil(8) + 2) * (u64::from(full.height).div_ceil(8) + 2);
            if blocks * 64 * 2 * components > DECODE_MEMORY {
                return None;
            }
        }
        let edge = u16::try_from(EDGE).ok()?;
        let (width, height) = decoder.scale(edge, edge).ok()?;
        let (width, height) = (u32::from(width), u32::from(height));
        let pixels = decoder.decode().ok()?;
        match components {
            3 => image::RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8),
            _ => image::GrayImage::from_raw(width, height, pixels).map(DynamicImage::ImageLuma8),
        }
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    /// Whether [`Pool::lull`] has returned after `after`.
    async fn lull_over(
        lull: &mut (impl std::future::Future<Output = ()> + Unpin),
        after: std::time::Duration,
    ) -> bool {
        tokio::time::timeout(after, lull).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_quiet_server_thumbnails_start_at_once() {
        let pool = Pool::new(1);
        let deadline = tokio::time::Instant::now() + YIELD_AT_MOST;
        let mut lull = Box::pin(pool.lull(deadline));
        assert!(lull_over(&mut lull, std::time::Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn thumbnails_wait_for_a_lull_in_uploads() {
        let pool = Pool::new(1);
        let first = pool.receiving();
        let second = pool.receiving();
        let deadline = tokio::time::Instant::now() + YIELD_AT_MOST;
        let mut lull = Box::pin(pool.lull(deadline));
        assert!(!lull_over(&mut lull, std::time::Duration::from_secs(2)).await);
        drop(first);
        assert!(
            !lull_over(&mut lull, std::time::Duration::from_secs(2)).await,
            "one upload is still arriving"
        );
        drop(second);
        // The next photo of the same phone arrives before the lull.
        tokio::time::sleep(LULL / 2).await;
        let next = pool.receiving();
        assert!(!lull_over(&mut lull, LULL * 2).await);
        drop(next);
        assert!(
            !lull_over(&mut lull, LULL / 2).await,
            "too soon after the last upload"
        );
        assert!(lull_over(&mut lull, LULL).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_server_still_makes_thumbnails_soon() {
        let pool = Pool::new(1);
        let _always = pool.receiving();
        let deadline = tokio::time::Instant::now() + YIELD_AT_MOST;
        let mut lull = Box::pin(pool.lull(deadline));
        assert!(
            !lull_over(
                &mut lull,
                YIELD_AT_MOST - std::time::Duration::from_millis(10)
            )
            .await
        );
        assert!(lull_over(&mut lull, std::time::Duration::from_millis(20)).await);
    }

    #[test]
    fn thumbnails_fit_the_edge_and_are_turned_upright() {
        let photo = ImageBuffer::from_fn(1200, 600, |x, _| Rgb([(x % 256) as u8, 10, 20]));
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&photo)
            .unwrap();
        let upright = render(&jpeg, ImageFormat::Jpeg, Orientation::NoTransforms).unwrap();
        assert_eq!((upright.width, upright.height), (512, 256));
        let turned = render(&jpeg, ImageFormat::Jpeg, Orientation::Rotate90).unwrap();
        assert_eq!((turned.width, turned.height), (256, 512));
        // A phone-sized photo is decoded at a reduced scale and still
        // fills the edge, with its colours.
        let phone = ImageBuffer::from_fn(4032, 3024, |x, y| {
            Rgb([if x < 2016 { 200 } else { 30 }, (y % 256) as u8, 90])
        });
        let mut big = Vec::new();
        JpegEncoder::new_with_quality(&mut big, 85)
            .encode_image(&phone)
            .unwrap();
        let small = render(&big, ImageFormat::Jpeg, Orientation::NoTransforms).unwrap();
        assert_eq!((small.width, small.height), (512, 384));
        let shown = image::load_from_memory(&small.jpeg).unwrap().to_rgb8();
        assert!(shown.get_pixel(100, 200)[0] > 170 && shown.get_pixel(400, 200)[0] < 60);
        // A frame of two components, which no JPEG decoder here takes.
        let two_components =
            b"\xFF\xD8\xFF\xC0\x00\x0E\x08\x00\x10\x00\x10\x02\x01\x11\x00\x02\x11\x00\xFF\xD9";
        assert!(render(two_components, ImageFormat::Jpeg, Orientation::NoTransforms).is_err());
        assert!(render(
            b"\xFF\xD8\xFF garbage",
            ImageFormat::Jpeg,
            Orientation::NoTransforms
        )
        .is_err());
    }
}
