//! The local-disk store: objects as files under one folder (`MEDIA_DIR`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::{FileHash, Listed, Listing, MediaReader, MediaStore, MediaWriter, LARGE_WRITE};

/// Objects as files under one folder, written to `.partial/` first and
/// renamed into place when complete, so a crash never leaves half a photo
/// under a real key. A file counts once its bytes and its name are both
/// on the disk: after every rename or link the folder holding the new
/// name is synced too, as is the parent of any folder made for it.
pub struct LocalDisk {
    root: PathBuf,
}

/// Refuses a key that could leave the store's folder; keys are made by
/// the server, but all the same.
fn check_key(key: &str) -> std::io::Result<()> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "bad media key",
        ));
    }
    Ok(())
}

/// Partial files older than this were left by a process that stopped
/// half-way (no upload stays open a day); they are removed at start.
/// Younger ones may belong to another server on the same folder.
const STALE_PARTIAL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

impl LocalDisk {
    pub async fn open_dir(root: &Path) -> std::io::Result<Self> {
        let root = root.to_owned();
        tokio::task::spawn_blocking(move || {
            let partial = root.join(".partial");
            ensure_dir(&partial)?;
            let removed = remove_stale(&partial, STALE_PARTIAL);
            if removed > 0 {
                tracing::info!(removed, "partial files left by an earlier run were removed");
            }
            Ok(LocalDisk { root })
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn path_of(&self, key: &str) -> std::io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn new_partial(&self) -> PathBuf {
        self.root.join(".partial").join(Uuid::new_v4().to_string())
    }
}

/// Makes `dir` and any missing parent, each recorded durably in its own
/// parent folder.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        ensure_dir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => return Err(error),
        // Made here or, a moment ago, by another writer that may not have
        // synced the parent yet: sync it either way.
        _ => {}
    }
    match parent {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Writes a folder's entries to the disk, so a name just made in it
/// survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the files in `dir` last changed more than `age` ago; tells how
/// many went.
fn remove_stale(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|old| old > age))
        })
        .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
        .count()
}

/// Objects a listing finds ahead of its reader.
const LISTED_AHEAD: usize = 256;

/// Walks the folder of `prefix` under `root`, depth first, sending each
/// file as it is found; stops when the reader goes away. A prefix with no
/// folder has no objects.
fn list_files(
    root: &Path,
    prefix: &str,
    found: &tokio::sync::mpsc::Sender<std::io::Result<Listed>>,
) {
    let mut folders = vec![prefix.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(root.join(&folder)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                let _ = found.blocking_send(Err(error));
                return;
            }
        };
        for entry in entries {
            let entry = entry.and_then(|entry| {
                let name = entry.file_name().into_string().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a file name in the store is not UTF-8",
                    )
                })?;
                Ok((format!("{folder}/{name}"), entry.metadata()?))
            });
            let listed = match entry {
                Ok((key, meta)) if meta.is_dir() => {
                    folders.push(key);
                    continue;
                }
                Ok((key, meta)) => meta.modified().map(|modified| Listed { key, modified }),
                // Removed since the folder was read (an upload swept or
                // completed meanwhile): no longer there to list.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => Err(error),
            };
            if found.blocking_send(listed).is_err() {
                return;
            }
        }
    }
}

/// The folder a key's file lies in.
fn folder_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Gives a finished file the name `target` through `name` (a rename or a
/// hard link), durably: the folder is made if need be, and synced once
/// the new name is in it.
fn name_durably(
    target: &Path,
    name: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let folder = folder_of(target);
    ensure_dir(folder)?;
    name(target)?;
    sync_dir(folder)
}

/// Renames a finished partial file to `target`, durably, off the
/// runtime's threads.
async fn rename_durably(partial: PathBuf, target: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        name_durably(&target, |target| std::fs::rename(&partial, target))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Writes waiting for the file thread: with writes of about
/// [`LARGE_WRITE`], about 1 MiB per object in progress.
pub const QUEUED_WRITES: usize = 3;
/// The file thread hands every so many bytes to the disk while more
/// arrive, so committing waits only for the last of them.
const WRITEBACK_EVERY: u64 = 512 * 1024;

enum Sink {
    Bytes(Vec<u8>),
    /// Everything is sent: make it durable.
    Finish,
}

/// Asks the kernel to start writing `len` bytes from `offset` to the
/// disk now, without waiting, so the final `fsync` finds most of the file
/// already written. `POSIX_FADV_DONTNEED` starts writeback of dirty pages
/// on Linux (and keeps the pages under writeback in the cache); elsewhere,
/// or if it fails, the final `fsync` simply has more to do. Unlike an
/// `fsync` every so often, the file thread does not stop to wait, so it
/// keeps up with the request while the disk works.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

/// Where a file being written stands: writeback starts for every
/// `WRITEBACK_EVERY` (512 KiB) written since it last started.
pub struct Writeback {
    written: u64,
    flushed: u64,
}

impl Writeback {
    /// For a file whose next write lands at `position`.
    pub fn at(position: u64) -> Self {
        Writeback {
            written: position,
            flushed: position,
        }
    }

    /// Counts `len` more bytes written to `file`, and starts writeback
    /// of what was written since it last started once that is enough.
    pub fn wrote(&mut self, file: &std::fs::File, len: usize) {
        self.written += len as u64;
        if self.written - self.flushed >= WRITEBACK_EVERY {
            start_writeback(file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
    }
}

/// A file written and made durable on a blocking thread while the
/// request's task goes on receiving, filtering and hashing: the two cores
/// share the work, and most of the file is on the disk by the time the
/// last byte arrives. Hashing on the file thread as well made that thread
/// the slower of the two (side by side, one photo after another, the
/// split gives 4-30% more throughput; see `loadtests/README.md`).
struct FileSink {
    pending: Vec<u8>,
    queue: Option<tokio::sync::mpsc::Sender<Sink>>,
    worker: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
    /// SHA-256 of the file's bytes sent to the thread so far, with those
    /// it had before.
    hasher: FileHash,
}

impl FileSink {
    /// Writes to `file` from where it is positioned; the bytes before
    /// hash to `so_far`.
    fn start(file: std::fs::File, so_far: FileHash) -> Self {
        let (queue, mut chunks) = tokio::sync::mpsc::channel::<Sink>(QUEUED_WRITES);
        let worker = tokio::task::spawn_blocking(move || {
            use std::io::{Seek, Write};
            let mut file = file;
            // An appended piece starts where the staged file ended.
            let mut writeback = Writeback::at(file.stream_position()?);
            while let Some(message) = chunks.blocking_recv() {
                match message {
                    Sink::Bytes(bytes) => {
                        file.write_all(&bytes)?;
                        writeback.wrote(&file, bytes.len());
                    }
                    Sink::Finish => {
                        file.sync_all()?;
                        return Ok(file);
                    }
                }
            }
            Err(std::io::Error::other("the write was abandoned"))
        });
        FileSink {
            pending: Vec::with_capacity(LARGE_WRITE),
            queue: Some(queue),
            worker: Some(worker),
            hasher: so_far,
        }
    }

    async fn send(&mut self, message: Sink) -> std::io::Result<()> {
        if let Sink::Bytes(bytes) = &message {
            self.hasher.update(bytes);
        }
        let sent = match self.queue.as_ref() {
            Some(queue) => queue.send(message).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped: its error says why.
        self.queue = None;
        Err(match self.worker.take() {
            Some(worker) => match worker.await {
                Ok(Err(error)) => error,
                Ok(Ok(_)) => std::io::Error::other("the file was already finished"),
                Err(error) => std::io::Error::other(error),
            },
            None => std::io::Error::other("the file was already finished"),
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= LARGE_WRITE {
            let full = std::mem::replace(&mut self.pending, Vec::with_capacity(LARGE_WRITE));
            self.send(Sink::Bytes(full)).await?;
        }
        Ok(())
    }

    /// Sends `bytes` to the file thread as they are when nothing is
    /// gathered before them; otherwise they join what is.
    async fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            return self.write(&bytes).await;
        }
        self.send(Sink::Bytes(bytes)).await
    }

    /// Writes what is left and makes the file durable.
    async fn finish(&mut self) -> std::io::Result<(std::fs::File, FileHash)> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.send(Sink::Bytes(rest)).await?;
        }
        self.send(Sink::Finish).await?;
        self.queue = None;
        let file = self.done().await?;
        Ok((file, std::mem::take(&mut self.hasher)))
    }

    /// Stops the thread without making anything durable.
    async fn stop(&mut self) {
        self.queue = None;
        let _ = self.done().await;
    }

    async fn done(&mut self) -> std::io::Result<std::fs::File> {
        match self.worker.take() {
            Some(worker) => worker.await.map_err(std::io::Error::other)?,
            None => Err(std::io::Error::other("the file was already finished")),
        }
    }

    /// Runs `cleanup` once the thread has stopped, from a `Drop` where
    /// nothing can be awaited.
    fn stop_then(&mut self, cleanup: impl FnOnce() + Send + 'static) {
        self.queue = None;
        let worker = self.worker.take();
        match (worker, tokio::runtime::Handle::try_current()) {
            (Some(worker), Ok(runtime)) => {
                runtime.spawn(async move {
                    let _ = worker.await;
                    cleanup();
                });
            }
            _ => cleanup(),
        }
    }
}

struct LocalWriter {
    sink: FileSink,
    partial: PathBuf,
    target: PathBuf,
    /// Committed or aborted: nothing left to clean up.
    finished: bool,
}

impl Drop for LocalWriter {
    /// A writer dropped half-way (its request was cancelled) removes its
    /// partial file, so nothing half-written stays behind.
    fn drop(&mut self) {
        if !self.finished {
            let partial = self.partial.clone();
            self.sink.stop_then(move || {
                let _ = std::fs::remove_file(partial);
            });
        }
    }
}

#[async_trait]
impl MediaStore for LocalDisk {
    async fn create(&self, key: &str) -> std::io::Result<Box<dyn MediaWriter>> {
        let target = self.path_of(key)?;
        let partial = self.new_partial();
        let file = fs::File::create(&partial).await?.into_std().await;
        Ok(Box::new(LocalWriter {
            sink: FileSink::start(file, FileHash::default()),
            partial,
            target,
            finished: false,
        }))
    }

    async fn open(&self, key: &str) -> std::io::Result<(MediaReader, u64)> {
        let file = fs::File::open(self.path_of(key)?).await?;
        let size = file.metadata().await?.len();
        Ok((Box::new(file), size))
    }

    async fn open_range(&self, key: &str, range: Range<u64>) -> std::io::Result<MediaReader> {
        let mut file = fs::File::open(self.path_of(key)?).await?;
        file.seek(std::io::SeekFrom::Start(range.start)).await?;
        Ok(Box::new(file.take(range.end.saturating_sub(range.start))))
    }

    async fn delete(&self, key: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path_of(key)?).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> std::io::Result<()> {
        let folder = self.path_of(prefix.trim_end_matches('/'))?;
        match fs::remove_dir_all(folder).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    async fn check(&self) -> std::io::Result<()> {
        fs::metadata(self.root.join(".partial")).await.map(|_| ())
    }

    fn list(&self, prefix: &str) -> Listing {
        let (found, listing) = tokio::sync::mpsc::channel(LISTED_AHEAD);
        let start = check_key(prefix.trim_end_matches('/'))
            .map(|()| (self.root.clone(), prefix.trim_end_matches('/').to_owned()));
        tokio::task::spawn_blocking(move || match start {
            Ok((root, prefix)) => list_files(&root, &prefix, &found),
            Err(error) => {
                let _ = found.blocking_send(Err(error));
            }
        });
        futures_util::stream::unfold(listing, |mut listing| async move {
            listing.recv().await.map(|listed| (listed, listing))
        })
        .boxed()
    }

    async fn append(
        &self,
        key: &str,
        at: u64,
        so_far: FileHash,
    ) -> std::io::Result<Box<dyn MediaWriter>> {
        let path = self.path_of(key)?;
        let partial = self.new_partial();
        let root = self.root.clone();
        // A staged object started in this sitting is written in
        // `.partial/` like a one-shot upload and named only once it is
        // committed: a photo sent whole in one request then goes straight
        // to its attachment's name (`commit_as`), with no folder made,
        // synced and removed for it. One that goes on is appended to
        // where it lies.
        let (file, fresh) = tokio::task::spawn_blocking({
            let (path, partial) = (path.clone(), partial.clone());
            move || {
                if at == 0 && !path.exists() {
                    return Ok::<_, std::io::Error>((std::fs::File::create(&partial)?, true));
                }
                let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len(at)?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at))?;
                Ok((file, false))
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Box::new(LocalAppender {
            sink: FileSink::start(file, so_far),
            path,
            at,
            partial: fresh.then_some(partial),
            root,
            finished: false,
        }))
    }

    async fn open_staged(&self, key: &str, len: u64) -> std::io::Result<MediaReader> {
        let file = fs::File::open(self.path_of(key)?).await?;
        Ok(Box::new(file.take(len)))
    }

    async fn publish_staged(&self, key: &str, len: u64, target: &str) -> std::io::Result<()> {
        let staged = self.path_of(key)?;
        let target = self.path_of(target)?;
        let size = fs::metadata(&staged).await?.len();
        if size != len {
            return Err(std::io::Error::other(format!(
                "a staged object has {size} bytes, not the {len} committed"
            )));
        }
        tokio::task::spawn_blocking(move || {
            name_durably(&target, |target| std::fs::hard_link(&staged, target))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Appends to a staged file; cuts it back to `at` unless committed. A
/// staged file started by this writer lies in `.partial/` until then,
/// and goes if it is not committed.
struct LocalAppender {
    sink: FileSink,
    path: PathBuf,
    at: u64,
    partial: Option<PathBuf>,
    root: PathBuf,
    finished: bool,
}

impl LocalAppender {
    /// Undoes what was written: cuts the staged file back, or removes the
    /// one this writer started.
    fn undo(partial: Option<PathBuf>, path: PathBuf, at: u64) {
        match partial {
            Some(partial) => {
                if let Err(error) = std::fs::remove_file(&partial) {
                    tracing::warn!(%error, path = %partial.display(), "could not remove a partial upload");
                }
            }
            None => cut_back(&path, at),
        }
    }

    /// Writes what is left, then names the file this writer started
    /// `target`, durably.
    async fn finish_as(mut self: Box<Self>, target: PathBuf) -> std::io::Result<FileHash> {
        let (file, sha256) = self.sink.finish().await?;
        drop(file);
        if let Some(partial) = self.partial.clone() {
            rename_durably(partial, target).await?;
        }
        self.finished = true;
        Ok(sha256)
    }
}

fn cut_back(path: &Path, at: u64) {
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(at));
    if let Err(error) = cut {
        tracing::warn!(%error, path = %path.display(), "a staged file could not be cut back");
    }
}

impl Drop for LocalAppender {
    fn drop(&mut self) {
        if !self.finished {
            let (partial, path, at) = (self.partial.clone(), self.path.clone(), self.at);
            self.sink
                .stop_then(move || LocalAppender::undo(partial, path, at));
        }
    }
}

#[async_trait]
impl MediaWriter for LocalAppender {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.sink.write(chunk).await
    }

    async fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.sink.write_owned(bytes).await
    }

    async fn commit(self: Box<Self>) -> std::io::Result<FileHash> {
        let path = self.path.clone();
        self.finish_as(path).await
    }

    fn can_commit_as(&self) -> bool {
        self.partial.is_some()
    }

    async fn commit_as(self: Box<Self>, target: &str) -> std::io::Result<FileHash> {
        if self.partial.is_none() {
            return Err(std::io::Error::other(
                "a staged file written in several sittings is published with publish_staged",
            ));
        }
        check_key(target)?;
        let target = self.root.join(target);
        self.finish_as(target).await
    }

    async fn abort(mut self: Box<Self>) {
        self.finished = true;
        self.sink.stop().await;
        let (partial, path, at) = (self.partial.take(), self.path.clone(), self.at);
        let _ = tokio::task::spawn_blocking(move || LocalAppender::undo(partial, path, at)).await;
    }
}

#[async_trait]
impl MediaWriter for LocalWriter {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.sink.write(chunk).await
    }

    async fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.sink.write_owned(bytes).await
    }

    async fn commit(mut self: Box<Self>) -> std::io::Result<FileHash> {
        let (file, sha256) = self.sink.finish().await?;
        drop(file);
        rename_durably(self.partial.clone(), self.target.clone()).await?;
        self.finished = true;
        Ok(sha256)
    }

    async fn abort(mut self: Box<Self>) {
        self.finished = true;
        self.sink.stop().await;
        if let Err(error) = fs::remove_file(&self.partial).await {
            tracing::warn!(%error, path = %self.partial.display(), "could not remove a partial upload");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn an_object_is_invisible_until_committed_and_aborts_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("media-{}", Uuid::new_v4()));
        let store = LocalDisk::open_dir(&dir).await.unwrap();
        let mut writer = store.create("ab/photo").await.unwrap();
        writer.write(b"hello ").await.unwrap();
        writer.write(b"world").await.unwrap();
        assert!(store.open("ab/photo").await.is_err());
        writer.commit().await.unwrap();
        let (mut reader, size) = store.open("ab/photo").await.unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert_eq!((text.as_str(), size), ("hello world", 11));

        let mut writer = store.create("ab/other").await.unwrap();
        writer.write(b"half").await.unwrap();
        writer.abort().await;
        assert_eq!(std::fs::read_dir(dir.join(".partial")).unwrap().count(), 0);
        assert!(store.path_of("../etc/passwd").is_err());

        let mut writer = store.create("up/1/a").await.unwrap();
        writer.write(b"0123456789").await.unwrap();
        writer.commit().await.unwrap();
        let mut middle = String::new();
        store
            .open_range("up/1/a", 3..7)
            .await
            .unwrap()
            .read_to_string(&mut middle)
            .await
            .unwrap();
        assert_eq!(middle, "3456");
        store.delete_prefix("up/1/").await.unwrap();
        store.delete_prefix("up/1/").await.unwrap();
        assert!(store.open("up/1/a").await.is_err());

        // A staged object grows in sittings; one that does not count is
        // cut off again, and the result is published without copying.
        // Its hash goes on from sitting to sitting, saved as text between
        // them, and ends as the whole file's.
        let mut staged = store
            .append("up/2/s", 0, FileHash::default())
            .await
            .unwrap();
        staged.write(b"hello ").await.unwrap();
        let so_far = staged.commit().await.unwrap();
        assert_eq!(so_far.hex(), hex::encode(sha2::Sha256::digest(b"hello ")));
        let saved = so_far.saved();
        assert!(FileHash::restore("not a hash").is_none());
        assert!(FileHash::restore(&saved[2..]).is_none());
        let restored = || FileHash::restore(&saved).unwrap();
        let mut cut = store.append("up/2/s", 6, restored()).await.unwrap();
        cut.write(b"cruel ").await.unwrap();
        cut.abort().await;
        let mut more = store.append("up/2/s", 6, restored()).await.unwrap();
        more.write(b"world").await.unwrap();
        let whole = more.commit().await.unwrap();
        assert_eq!(
            whole.hex(),
            hex::encode(sha2::Sha256::digest(b"hello world"))
        );
        let mut text = String::new();
        store
            .open_staged("up/2/s", 11)
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "hello world");
        store
            .publish_staged("up/2/s", 11, "ab/published")
            .await
            .unwrap();
        store.delete_prefix("up/2/").await.unwrap();
        let (mut reader, size) = store.open("ab/published").await.unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert_eq!((text.as_str(), size), ("hello world", 11));

        // Started and finished in one sitting, a staged object can become
        // the object straight away; one started and thrown away leaves
        // nothing, and a continued one cannot skip its name.
        let mut gone = store
            .append("up/3/s", 0, FileHash::default())
            .await
            .unwrap();
        gone.write(b"never").await.unwrap();
        gone.abort().await;
        let mut whole = store
            .append("up/3/s", 0, FileHash::default())
            .await
            .unwrap();
        assert!(whole.can_commit_as());
        whole.write(b"in one go").await.unwrap();
        let sha256 = whole.commit_as("ab/direct").await.unwrap().hex();
        assert_eq!(sha256, hex::encode(sha2::Sha256::digest(b"in one go")));
        assert_eq!(std::fs::read(dir.join("ab/direct")).unwrap(), b"in one go");
        assert!(!dir.join("up/3").exists());
        assert_eq!(std::fs::read_dir(dir.join(".partial")).unwrap().count(), 0);
        let mut first = store
            .append("up/4/s", 0, FileHash::default())
            .await
            .unwrap();
        first.write(b"first").await.unwrap();
        first.commit().await.unwrap();
        let more = store
            .append("up/4/s", 5, FileHash::default())
            .await
            .unwrap();
        assert!(!more.can_commit_as());
        assert!(more.commit_as("ab/skipped").await.is_err());
        assert_eq!(std::fs::read(dir.join("up/4/s")).unwrap(), b"first");
        // A staged object that was never started cannot be continued.
        assert!(store
            .append("up/5/s", 5, FileHash::default())
            .await
            .is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn partial_files_left_by_a_stopped_server_go_at_start_and_recent_ones_stay() {
        let dir = std::env::temp_dir().join(format!("media-{}", Uuid::new_v4()));
        LocalDisk::open_dir(&dir).await.unwrap();
        let partial = dir.join(".partial");
        let left = partial.join("left-yesterday");
        std::fs::write(&left, b"half a photo").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&left)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - STALE_PARTIAL * 2)
            .unwrap();
        let recent = partial.join("another-server-writing");
        std::fs::write(&recent, b"in progress").unwrap();

        let store = LocalDisk::open_dir(&dir).await.unwrap();
        assert!(!left.exists());
        assert!(recent.exists());
        // Folders a key needs are made on the way, however deep.
        let mut writer = store.create("a/b/c/d").await.unwrap();
        writer.write(b"kept").await.unwrap();
        writer.commit().await.unwrap();
        assert_eq!(std::fs::read(dir.join("a/b/c/d")).unwrap(), b"kept");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
