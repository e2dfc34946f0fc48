//! Content-addressed blob storage under the data dir: `blobs/sha256/<2 hex>/<hex>`, and
//! uploads in progress under `uploads/<uuid>`.
//!
//! Owns every byte of blob content on disk; every byte goes in through [`writer`] and out
//! through [`reader`] (the seam where encryption at rest sits). It must not call the
//! registry, metadata or any network code.
//!
//! Durability: a blob appears under its real name only after its bytes are on disk and its
//! digest checked (write to a temp file, fsync, verify, rename, fsync the directory). A crash
//! at any point leaves the old state or the new one. Upload sessions live in memory with
//! their hash state (each byte is hashed once, as it arrives); a restart forgets them and
//! removes their files, and clients start those uploads again.

#[cfg(test)]
mod bench;
mod buf;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use bytes::Bytes;
use ecrl::names::Digest;
use futures_util::Stream;
use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use reader::BlobStream;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("upload session not found")]
    UploadNotFound,
    /// A chunk did not start where the upload ends.
    #[error("chunk starts at {offset} but the upload holds {size} bytes")]
    RangeMismatch { offset: u64, size: u64 },
    #[error("content digest {actual} does not match the expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// The request body failed before its end (client gone, length shorter than announced).
    #[error("request body failed: {0}")]
    Body(String),
}

/// An upload session's id (a v4 UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(uuid::Uuid);

impl std::str::FromStr for UploadId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(UploadId)
            .map_err(|_| StoreError::UploadNotFound)
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

type Session = Arc<tokio::sync::Mutex<Option<writer::Upload>>>;

struct Inner {
    root: PathBuf,
    uploads: Mutex<HashMap<UploadId, (Session, Instant)>>,
    /// Write and first-read big blobs with O_DIRECT (off only to test the fallback).
    direct: bool,
    dirs: Arc<writer::DirSync>,
    /// Blobs read before (bounded): their next reads go through the page cache.
    read_before: Mutex<HashSet<Digest>>,
}

/// How many blobs `read_before` remembers before it starts over.
const READ_BEFORE_MAX: usize = 4096;

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

impl BlobStore {
    /// Opens (creating) the store under `data_dir`. Upload files left by a previous run are
    /// removed: their sessions died with it.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        Self::open_with(data_dir, true)
    }

    fn open_with(data_dir: &Path, direct: bool) -> io::Result<Self> {
        let root = data_dir.to_path_buf();
        let sha = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&sha)?;
        // All 256 fan-out directories exist (durably) before any commit, so a commit only
        // ever needs to sync the one directory it renames into.
        let mut made = false;
        for i in 0..=255u8 {
            let dir = sha.join(format!("{i:02x}"));
            if !dir.is_dir() {
                std::fs::create_dir(&dir)?;
                made = true;
            }
        }
        if made {
            std::fs::File::open(&sha)?.sync_all()?;
            if let Some(blobs) = sha.parent() {
                std::fs::File::open(blobs)?.sync_all()?;
            }
            std::fs::File::open(&root)?.sync_all()?;
        }
        let uploads = root.join("uploads");
        if uploads.exists() {
            std::fs::remove_dir_all(&uploads)?;
        }
        std::fs::create_dir_all(&uploads)?;
        Ok(BlobStore {
            inner: Arc::new(Inner {
                root,
                uploads: Mutex::new(HashMap::new()),
                direct,
                dirs: Arc::new(writer::DirSync::default()),
                read_before: Mutex::new(HashSet::new()),
            }),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.inner
            .root
            .join("blobs")
            .join("sha256")
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.inner.root.join("uploads").join(id.to_string())
    }

    /// The size of a stored blob, or `None` when it is not in the store.
    pub async fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The bytes of `range` of a stored blob (the caller checks the range against the size).
    pub async fn read(&self, digest: &Digest, range: Range<u64>) -> io::Result<BlobStream> {
        let mode = if self.inner.direct && self.first_read(digest) {
            reader::Mode::Cold
        } else {
            reader::Mode::Cached
        };
        reader::open(self.blob_path(digest), range, mode).await
    }

    /// True the first time a blob is read (as far as this process remembers). A blob we
    /// wrote is not in the page cache: its first read goes O_DIRECT, and later reads through
    /// the cache, which keeps hot blobs in memory.
    fn first_read(&self, digest: &Digest) -> bool {
        let Ok(mut seen) = self.inner.read_before.lock() else {
            return false;
        };
        if seen.len() >= READ_BEFORE_MAX {
            seen.clear();
        }
        seen.insert(*digest)
    }

    /// A whole (small) blob in memory: manifests and configs.
    pub async fn read_all(&self, digest: &Digest) -> io::Result<Bytes> {
        reader::read_all(self.blob_path(digest)).await
    }

    /// Stores bytes that are already in memory; returns their digest. With `expected`, a
    /// different digest stores nothing.
    pub async fn put(&self, data: Bytes, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let id = self.upload_start()?;
        let body = futures_util::stream::iter([Ok::<_, io::Error>(data)]);
        self.upload_write(&id, None, body).await?;
        match expected {
            Some(expected) => self.upload_finish(&id, expected).await.map(|_| *expected),
            None => self.upload_finish_computed(&id).await.map(|(d, _)| d),
        }
    }

    /// Removes a blob's content. True when it was there.
    pub async fn delete(&self, digest: &Digest) -> io::Result<bool> {
        if let Ok(mut seen) = self.inner.read_before.lock() {
            seen.remove(digest);
        }
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bytes of blob content stored, each blob once.
    pub async fn bytes_stored(&self) -> io::Result<u64> {
        let root = self.inner.root.join("blobs").join("sha256");
        tokio::task::spawn_blocking(move || dir_size(&root))
            .await
            .map_err(io::Error::other)?
    }

    /// Opens an upload session.
    pub fn upload_start(&self) -> Result<UploadId, StoreError> {
        let id = UploadId(uuid::Uuid::new_v4());
        let upload = writer::Upload::create(self.upload_path(&id), self.inner.direct)?;
        self.inner.uploads.lock().map_err(poisoned)?.insert(
            id,
            (
                Arc::new(tokio::sync::Mutex::new(Some(upload))),
                Instant::now(),
            ),
        );
        Ok(id)
    }

    fn session(&self, id: &UploadId) -> Result<Session, StoreError> {
        let mut map = self.inner.uploads.lock().map_err(poisoned)?;
        match map.get_mut(id) {
            Some((session, touched)) => {
                *touched = Instant::now();
                Ok(session.clone())
            }
            None => Err(StoreError::UploadNotFound),
        }
    }

    fn forget(&self, id: &UploadId) {
        if let Ok(mut map) = self.inner.uploads.lock() {
            map.remove(id);
        }
    }

    /// Appends a request body to an upload. With `offset`, the chunk must start where the
    /// upload ends. Returns the upload's new size. A body that fails midway ends the session.
    pub async fn upload_write<S, E>(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        body: S,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let session = self.session(id)?;
        let mut guard = session.lock().await;
        let upload = guard.as_mut().ok_or(StoreError::UploadNotFound)?;
        if let Some(offset) = offset {
            if offset != upload.size() {
                return Err(StoreError::RangeMismatch {
                    offset,
                    size: upload.size(),
                });
            }
        }
        match upload.append(body).await {
            Ok(size) => Ok(size),
            Err(e) => {
                if let Some(upload) = guard.take() {
                    upload.discard().await;
                }
                self.forget(id);
                Err(e)
            }
        }
    }

    /// The number of bytes an upload holds.
    pub async fn upload_size(&self, id: &UploadId) -> Result<u64, StoreError> {
        let session = self.session(id)?;
        let guard = session.lock().await;
        guard
            .as_ref()
            .map(writer::Upload::size)
            .ok_or(StoreError::UploadNotFound)
    }

    /// Completes an upload: its content must hash to `expected`. On success the blob is
    /// durable under its name; on a mismatch nothing remains. Returns the blob's size.
    pub async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<u64, StoreError> {
        let session = self.session(id)?;
        let upload = session
            .lock()
            .await
            .take()
            .ok_or(StoreError::UploadNotFound)?;
        self.forget(id);
        let size = upload.size();
        let target = self.blob_path(expected);
        upload
            .commit(Some(expected), &target, &self.inner.dirs)
            .await?;
        Ok(size)
    }

    /// Completes an upload under the digest of what it holds (content that names no digest
    /// of its own, such as a layer compressed on the way in). Returns the digest and whether
    /// the store did not hold that content before.
    pub async fn upload_finish_computed(
        &self,
        id: &UploadId,
    ) -> Result<(Digest, bool), StoreError> {
        let session = self.session(id)?;
        let mut upload = session
            .lock()
            .await
            .take()
            .ok_or(StoreError::UploadNotFound)?;
        self.forget(id);
        let digest = match upload.digest().await {
            Ok(digest) => digest,
            Err(e) => {
                upload.discard().await;
                return Err(e);
            }
        };
        let new = self.stat(&digest).await?.is_none();
        let target = self.blob_path(&digest);
        upload
            .commit(Some(&digest), &target, &self.inner.dirs)
            .await?;
        Ok((digest, new))
    }

    /// Abandons an upload and removes its file.
    pub async fn upload_cancel(&self, id: &UploadId) -> Result<(), StoreError> {
        let session = self.session(id)?;
        let upload = session.lock().await.take();
        self.forget(id);
        if let Some(upload) = upload {
            upload.discard().await;
        }
        Ok(())
    }

    /// Removes upload sessions untouched for `max_age`. Returns how many.
    pub async fn expire_uploads(&self, max_age: Duration) -> usize {
        let expired: Vec<UploadId> = match self.inner.uploads.lock() {
            Ok(map) => map
                .iter()
                .filter(|(_, (_, touched))| touched.elapsed() > max_age)
                .map(|(id, _)| *id)
                .collect(),
            Err(_) => return 0,
        };
        let mut n = 0;
        for id in expired {
            if self.upload_cancel(&id).await.is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Io(io::Error::other("upload table lock poisoned"))
}

fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
