//! Content-addressed blob storage under the data dir: `blobs/sha256/<2 hex>/<hex>`, and
//! uploads in progress under `uploads/<uuid>`; or, with `storage.backend: s3`, the same in
//! an S3-compatible object store that several ecrld instances share ([`s3`],
//! [`s3_upload`]). [`BlobStore`]'s API is the same for both: each call goes to the backend
//! the store was opened on, and only the filesystem's code below knows files.
//!
//! Owns every byte of blob content on disk; every byte goes in through [`writer`] and out
//! through [`reader`], which is where encryption at rest sits ([`crypt`] has the format,
//! [`keys`] the master keys). It must not call the registry, metadata or any network code.
//!
//! Encryption is a property of the data dir, chosen when it is created and recorded in
//! `<data dir>/storage.json` with the ids of its keys: a new data dir is encrypted unless
//! configured otherwise; one made before encryption existed (blobs but no `storage.json`)
//! stays plain; a configuration asking for another mode than the data dir's is refused at
//! start-up rather than mixing plain and encrypted blobs.
//!
//! Durability: a blob appears under its real name only after its bytes are on disk and its
//! digest checked (write to a temp file, fsync, verify, rename, fsync the directory; a small
//! blob's temp file is an unnamed one in its own directory, linked under its name once
//! synced). A crash at any point leaves the old state or the new one. Upload sessions live
//! in memory with their hash state (each byte is hashed once, as it arrives); a restart
//! forgets them and removes their files, and clients start those uploads again.

#[cfg(test)]
mod bench;
mod buf;
mod cache;
pub mod crypt;
pub mod keys;
mod map;
mod midstate;
mod reader;
mod s3;
mod s3_upload;
#[cfg(test)]
mod tests;
mod writer;

use bytes::Bytes;
use ecrl::config::Encryption;
use ecrl::names::Digest;
use futures_util::Stream;
use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use buf::trim as trim_buffers;
pub use cache::default_budget as default_read_cache;
pub use cache::idle_priority;
pub use keys::KeyPlace;
pub use reader::BlobStream;
pub use s3::Unavailable;

/// True for an error of the object store backend (it failed or did not answer): the
/// registry answers those with 503, as a condition a client may retry, not as its own bug.
pub fn is_unavailable(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unavailable>())
}

/// The file in the data dir that says how its blobs are stored.
const FORMAT_FILE: &str = "storage.json";

/// What `storage.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Format {
    encryption: Encryption,
    /// Ids of the master keys blobs may be sealed under, oldest first; the last one seals
    /// new blobs.
    #[serde(default)]
    keys: Vec<String>,
}

/// How the store is to be opened.
pub struct StoreOptions<'a> {
    /// The mode asked for; `None` takes the data dir's (or encryption for a new one).
    pub encryption: Option<Encryption>,
    /// Where key files go when there is no keyring.
    pub key_dir: PathBuf,
    pub keyring: &'a dyn keys::SecretStore,
    /// The bytes all upload sessions may hold in memory between requests (small uploads
    /// and the unwritten end of big ones): past it, requests that add to an upload are
    /// refused ([`StoreError::Busy`]) until sessions finish or expire.
    pub upload_memory: usize,
    /// The bytes of blobs ecrld keeps in the page cache for reads (see [`cache`]); 0 keeps
    /// none, and every read of what is not in memory goes O_DIRECT.
    pub read_cache: u64,
}

/// How the store keeps its blobs, for `ecrl daemon status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionStatus {
    pub mode: Encryption,
    /// Where the key that seals new blobs is kept.
    pub key: Option<KeyPlace>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(
        "the data dir {} was created with encryption {has}, but encryption {asked} is asked \
         for (--encryption, ECRL_ENCRYPTION or storage.encryption in the config file); a data \
         dir keeps the mode it was created with: ask for {has} or for nothing, or use a new \
         data dir",
        data_dir.display()
    )]
    ModeMismatch {
        data_dir: PathBuf,
        has: Encryption,
        asked: Encryption,
    },
    #[error("{} is damaged: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("cannot use the object store {location}: {message}")]
    Backend { location: String, message: String },
    #[error(
        "the object store {location} was created with encryption {has}, but encryption {asked} \
         is asked for (--encryption, ECRL_ENCRYPTION or storage.encryption in the config \
         file); a store keeps the mode it was created with: ask for {has} or for nothing, or \
         use another bucket or prefix"
    )]
    StoreModeMismatch {
        location: String,
        has: Encryption,
        asked: Encryption,
    },
    #[error(
        "the object store {location} is encrypted under storage key {id}, which this machine \
         does not have: every ecrld that serves the store needs it. Copy the key file {} \
         from the machine whose ecrld created the store (same path, mode 0600), or add the \
         keyring entry 'ecrl/storage-key-{id}' ({source})",
        file.display()
    )]
    StoreKey {
        location: String,
        id: String,
        file: PathBuf,
        // Boxed: the other variants are small, and this error is rare.
        source: Box<keys::KeyError>,
    },
}

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
    /// The upload sessions hold all the memory they may: try again once some finish.
    #[error(
        "upload sessions hold {held} bytes in memory, the most they may \
         (registry.upload_memory): finish or cancel uploads, or retry later"
    )]
    Busy { held: usize },
    /// The object store failed or did not answer.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// How the store's backend is doing, for `ecrl daemon status`.
pub struct BackendStatus {
    pub backend: ecrl::config::StorageBackend,
    /// The data dir, or the bucket, prefix and endpoint.
    pub location: String,
    /// Why it does not answer (`None`: it answers).
    pub error: Option<String>,
}

/// What [`BlobStore::remove_unlisted`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Blob files in the store.
    pub blobs: usize,
    /// Of those, the ones `keep` did not name and `released` did not explain.
    pub unheld: usize,
    /// Removed, and their files' bytes.
    pub removed: usize,
    pub bytes: u64,
    /// Unheld blobs left alone, as too many were.
    pub left: usize,
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

/// An upload session, and when it was opened and last used.
struct Entry {
    session: Session,
    opened: Instant,
    /// When its last request started or ended.
    touched: Instant,
}

struct Inner {
    root: PathBuf,
    uploads: Mutex<HashMap<UploadId, Entry>>,
    /// Sessions written most recently, oldest first: only these keep their file open and
    /// their workers running between requests.
    warm: Mutex<std::collections::VecDeque<UploadId>>,
    /// The bytes sessions hold in memory between requests, and how many they may.
    held: Arc<std::sync::atomic::AtomicUsize>,
    upload_memory: usize,
    /// Write and first-read big blobs with O_DIRECT (off only to test the fallback).
    direct: bool,
    dirs: Arc<writer::DirSync>,
    /// Which blobs reads keep in the page cache.
    cache: Arc<cache::ReadCache>,
    /// The keys of an encrypted data dir; `None` when blobs are stored plain.
    keys: Option<Arc<crypt::Keys>>,
    encryption: EncryptionStatus,
    /// The object store, when blobs live there: then every call goes to it, and the fields
    /// above (but `encryption`) are unused.
    s3: Option<Arc<s3::S3Store>>,
}

/// How many upload sessions keep their file open and their workers running between requests:
/// a client's next chunk then finds its pipeline still going (a chunked push runs about 13%
/// faster than when each chunk has to wait for the last one's workers), while a client that
/// opens thousands of sessions makes ecrld hold no more descriptors than this.
pub const WARM_SESSIONS: usize = 64;

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

impl BlobStore {
    /// Opens (creating) the store under `data_dir`. Upload files left by a previous run are
    /// removed: their sessions died with it.
    pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<Self, OpenError> {
        Self::open_with(data_dir, options, true)
    }

    fn open_with(data_dir: &Path, options: &StoreOptions, direct: bool) -> Result<Self, OpenError> {
        let root = data_dir.to_path_buf();
        let (keys, encryption) = prepare_format(&root, options)?;
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
        let cache = Arc::new(cache::ReadCache::new(
            &root.join("cache"),
            options.read_cache,
        )?);
        Ok(BlobStore {
            inner: Arc::new(Inner {
                root,
                uploads: Mutex::new(HashMap::new()),
                warm: Mutex::default(),
                held: Arc::default(),
                upload_memory: options.upload_memory,
                direct,
                dirs: Arc::new(writer::DirSync::default()),
                cache,
                keys,
                encryption,
                s3: None,
            }),
        })
    }

    /// Opens the store on an S3-compatible object store (see [`s3`]). Nothing of it goes in
    /// the data dir. Fails, naming the store, when it cannot be reached.
    pub async fn open_s3(
        data_dir: &Path,
        config: &ecrl::config::S3Config,
        options: &StoreOptions<'_>,
    ) -> Result<Self, OpenError> {
        let (store, encryption) = s3::S3Store::open(config, options).await?;
        let keys = store.keys.clone();
        Ok(BlobStore {
            inner: Arc::new(Inner {
                root: data_dir.to_path_buf(),
                uploads: Mutex::new(HashMap::new()),
                warm: Mutex::default(),
                held: Arc::default(),
                upload_memory: options.upload_memory,
                direct: false,
                dirs: Arc::new(writer::DirSync::default()),
                // The page cache holds files: an object store has none.
                cache: Arc::new(cache::ReadCache::new(&data_dir.join("cache"), 0)?),
                keys,
                encryption,
                s3: Some(Arc::new(store)),
            }),
        })
    }

    /// True when the blobs are in an object store (not under the data dir).
    pub fn on_object_store(&self) -> bool {
        self.inner.s3.is_some()
    }

    /// Which backend holds the blobs, and whether it answers now (asked with a short
    /// timeout).
    pub async fn backend_status(&self) -> BackendStatus {
        match &self.inner.s3 {
            Some(s3) => BackendStatus {
                backend: ecrl::config::StorageBackend::S3,
                location: s3.location().to_string(),
                error: s3.probe().await.err(),
            },
            None => BackendStatus {
                backend: ecrl::config::StorageBackend::Filesystem,
                location: self.inner.root.display().to_string(),
                error: None,
            },
        }
    }

    /// The read cache at work, for `ecrl daemon status`.
    pub fn read_cache(&self) -> ecrl::api::system::ReadCacheInfo {
        self.inner.cache.status()
    }

    /// A stored blob is about to be read again: the read cache reads it into memory in the
    /// background (see [`cache::ReadCache::warm`]).
    pub fn warm_blob(&self, digest: &Digest) {
        if self.inner.s3.is_some() {
            return;
        }
        self.inner.cache.warm(digest, &self.blob_path(digest));
    }

    /// How blobs are kept at rest, and where the key is.
    /// The keys blobs are sealed with, when they are (what else ecrld keeps sealed uses them).
    pub fn keys(&self) -> Option<Arc<crypt::Keys>> {
        match &self.inner.s3 {
            Some(s3) => s3.keys.clone(),
            None => self.inner.keys.clone(),
        }
    }

    pub fn encryption(&self) -> &EncryptionStatus {
        &self.inner.encryption
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

    /// The size of a stored blob (its content's, not its file's), or `None` when it is not in
    /// the store. Needs no read: the file's length says it.
    pub async fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        if let Some(s3) = &self.inner.s3 {
            return s3.stat(digest).await;
        }
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) => self.content_len(meta.len()).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The content length of a blob file `len` bytes long.
    fn content_len(&self, len: u64) -> io::Result<u64> {
        match self.inner.keys {
            None => Ok(len),
            Some(_) => crypt::plain_len(len).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an encrypted blob file cannot be {len} bytes long: it is damaged"),
                )
            }),
        }
    }

    /// The bytes of `range` of a stored blob (the caller checks the range against the size).
    pub async fn read(&self, digest: &Digest, range: Range<u64>) -> io::Result<BlobStream> {
        if let Some(s3) = &self.inner.s3 {
            return s3.read(digest, range).await;
        }
        let cold = reader::Cold::Fill {
            cache: self.inner.cache.clone(),
            digest: *digest,
        };
        self.read_with(digest, range, cold).await
    }

    /// `read`, with what to do with what is not in memory.
    async fn read_with(
        &self,
        digest: &Digest,
        range: Range<u64>,
        cold: reader::Cold,
    ) -> io::Result<BlobStream> {
        reader::open(
            self.blob_path(digest),
            range,
            cold,
            self.inner.direct,
            self.inner.keys.clone(),
        )
        .await
    }

    /// Reads a stored blob whole (decrypting it) and hashes it: its content's length and
    /// digest, for `ecrl fsck`. Runs on a blocking thread of its own.
    pub async fn hash_blob(&self, digest: &Digest) -> io::Result<(u64, Digest)> {
        if let Some(s3) = &self.inner.s3 {
            return s3.hash_blob(digest).await;
        }
        let path = self.blob_path(digest);
        let keys = self.inner.keys.clone();
        let direct = self.inner.direct;
        tokio::task::spawn_blocking(move || reader::hash_blob(&path, direct, keys.as_deref()))
            .await
            .map_err(io::Error::other)?
    }

    /// A whole (small) blob in memory: manifests and configs.
    pub async fn read_all(&self, digest: &Digest) -> io::Result<Bytes> {
        if let Some(s3) = &self.inner.s3 {
            return s3.read_all(digest).await;
        }
        reader::read_all(self.blob_path(digest), self.inner.keys.clone()).await
    }

    /// Stores bytes that are already in memory; returns their digest. With `expected`, a
    /// different digest stores nothing.
    pub async fn put(&self, data: Bytes, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        if let Some(s3) = &self.inner.s3 {
            return s3.put(data, expected).await;
        }
        let id = self.upload_start().await?;
        let body = futures_util::stream::iter([Ok::<_, io::Error>(data)]);
        self.upload_write(&id, None, body).await?;
        match expected {
            Some(expected) => self.upload_finish(&id, expected).await.map(|_| *expected),
            None => self.upload_finish_computed(&id).await.map(|(d, _)| d),
        }
    }

    /// Removes a blob's content. True when it was there.
    pub async fn delete(&self, digest: &Digest) -> io::Result<bool> {
        if let Some(s3) = &self.inner.s3 {
            return s3.delete(digest).await;
        }
        self.inner.cache.forget(digest);
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the blob files whose digest `keep` does not name. For start-up, before
    /// anything is served: a daemon killed between a blob's commit and its link into a
    /// repository leaves a blob nobody holds. Files whose name is not a digest are left alone.
    /// When more than half of the blobs would go unexplained, only the `released` ones go
    /// (blobs deleted images freed, as the metadata recorded): the metadata is then not the
    /// one the other blobs belong to (a lost or replaced `metadata.db`), and they may be
    /// wanted.
    pub fn remove_unlisted(
        &self,
        keep: &HashSet<Digest>,
        released: &HashSet<Digest>,
    ) -> io::Result<Sweep> {
        if let Some(s3) = &self.inner.s3 {
            return s3.remove_unlisted(keep, released);
        }
        let root = self.inner.root.join("blobs").join("sha256");
        let mut sweep = Sweep::default();
        let mut unheld = Vec::new();
        for prefix in std::fs::read_dir(&root)? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(prefix.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
                else {
                    continue;
                };
                if !entry.file_type()?.is_file() {
                    continue;
                }
                sweep.blobs += 1;
                if !keep.contains(&digest) {
                    unheld.push((entry.path(), released.contains(&digest)));
                }
            }
        }
        sweep.unheld = unheld.iter().filter(|(_, released)| !released).count();
        if sweep.unheld * 2 > sweep.blobs {
            sweep.left = sweep.unheld;
            unheld.retain(|(_, released)| *released);
        }
        for (path, _) in unheld {
            let len = std::fs::metadata(&path)?.len();
            std::fs::remove_file(&path)?;
            sweep.removed += 1;
            sweep.bytes += len;
        }
        Ok(sweep)
    }

    /// Every blob file's digest. Blocking (a walk of the store's directories, names only: no
    /// file is opened or stat'ed); files whose name is not a digest are not listed.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        if let Some(s3) = &self.inner.s3 {
            return s3.list();
        }
        let root = self.inner.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for prefix in std::fs::read_dir(&root)? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(prefix.path())? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                if let Some(digest) = entry
                    .file_name()
                    .to_str()
                    .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
                {
                    out.push(digest);
                }
            }
        }
        Ok(out)
    }

    /// A blob file's length on disk and when it was last written, if it exists. Blocking.
    pub fn file_info(&self, digest: &Digest) -> io::Result<Option<(u64, std::time::SystemTime)>> {
        if let Some(s3) = &self.inner.s3 {
            return s3.file_info(digest);
        }
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some((m.len(), m.modified()?))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves a blob's file out of the store into `<data dir>/quarantine/` (where `ecrl fsck
    /// --repair` puts corrupt blobs, for inspection); answers where it went.
    pub async fn quarantine(&self, digest: &Digest) -> io::Result<PathBuf> {
        if let Some(s3) = &self.inner.s3 {
            return s3.quarantine(digest).await;
        }
        self.inner.cache.forget(digest);
        let dir = self.inner.root.join("quarantine");
        tokio::fs::create_dir_all(&dir).await?;
        let to = dir.join(format!("sha256-{}", digest.hex()));
        tokio::fs::rename(self.blob_path(digest), &to).await?;
        Ok(to)
    }

    /// When a blob's file was last written, if it exists.
    pub async fn modified(&self, digest: &Digest) -> io::Result<Option<std::time::SystemTime>> {
        if let Some(s3) = &self.inner.s3 {
            return s3.modified(digest).await;
        }
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => m.modified().map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes of blob content stored, each blob once (the content's size, not the files').
    pub async fn bytes_stored(&self) -> io::Result<u64> {
        if let Some(s3) = &self.inner.s3 {
            return s3.bytes_stored().await;
        }
        let root = self.inner.root.join("blobs").join("sha256");
        let sealed = self.inner.keys.is_some();
        tokio::task::spawn_blocking(move || {
            dir_size(&root, &|len| {
                if sealed {
                    crypt::plain_len(len).unwrap_or(0)
                } else {
                    len
                }
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Opens an upload session.
    pub async fn upload_start(&self) -> Result<UploadId, StoreError> {
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_start(None).await;
        }
        self.upload_start_local()
    }

    /// Opens an upload session on behalf of `label` (the registry: a repository). On a
    /// shared store another instance may continue it, and asks for the label first
    /// ([`BlobStore::upload_label`]).
    pub async fn upload_start_for(&self, label: &str) -> Result<UploadId, StoreError> {
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_start(Some(label)).await;
        }
        self.upload_start_local()
    }

    /// Whose session `id` is, for a session this instance did not open: on a shared store,
    /// the label it was opened with (this instance then serves it too). A store of this
    /// instance's alone has no session it does not know.
    pub async fn upload_label(&self, id: &UploadId) -> Result<Option<String>, StoreError> {
        match &self.inner.s3 {
            Some(s3) => s3.upload_label(id).await,
            None => Err(StoreError::UploadNotFound),
        }
    }

    fn upload_start_local(&self) -> Result<UploadId, StoreError> {
        let id = UploadId(uuid::Uuid::new_v4());
        let sealer = match &self.inner.keys {
            Some(keys) => Some(keys.sealer()?),
            None => None,
        };
        let upload = writer::Upload::create(
            self.upload_path(&id),
            self.inner.direct,
            sealer,
            self.inner.held.clone(),
        );
        let now = Instant::now();
        self.inner.uploads.lock().map_err(poisoned)?.insert(
            id,
            Entry {
                session: Arc::new(tokio::sync::Mutex::new(Some(upload))),
                opened: now,
                touched: now,
            },
        );
        Ok(id)
    }

    fn session(&self, id: &UploadId) -> Result<Session, StoreError> {
        let mut map = self.inner.uploads.lock().map_err(poisoned)?;
        match map.get_mut(id) {
            Some(entry) => {
                entry.touched = Instant::now();
                Ok(entry.session.clone())
            }
            None => Err(StoreError::UploadNotFound),
        }
    }

    /// True while the session exists (not finished, cancelled, failed or expired).
    pub fn upload_exists(&self, id: &UploadId) -> bool {
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_exists(id);
        }
        self.inner
            .uploads
            .lock()
            .is_ok_and(|map| map.contains_key(id))
    }

    /// Marks a session used now (at the end of a request: its idle time starts then).
    fn touch(&self, id: &UploadId) {
        if let Ok(mut map) = self.inner.uploads.lock() {
            if let Some(entry) = map.get_mut(id) {
                entry.touched = Instant::now();
            }
        }
    }

    /// The bytes upload sessions hold in memory between requests.
    pub fn upload_memory_held(&self) -> usize {
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_memory_held();
        }
        self.inner.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn forget(&self, id: &UploadId) {
        if let Ok(mut map) = self.inner.uploads.lock() {
            map.remove(id);
        }
        if let Ok(mut warm) = self.inner.warm.lock() {
            warm.retain(|w| w != id);
        }
    }

    /// Counts a session just written as the warmest, and cools the coldest one past
    /// [`WARM_SESSIONS`] (unless a request is writing to it: it is warm then anyway, and
    /// goes to the back of the line when that request ends).
    fn warm(&self, id: &UploadId) {
        let coldest = match self.inner.warm.lock() {
            Ok(mut warm) => {
                warm.retain(|w| w != id);
                warm.push_back(*id);
                if warm.len() > WARM_SESSIONS {
                    warm.pop_front()
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        let Some(coldest) = coldest else { return };
        let session = self
            .inner
            .uploads
            .lock()
            .ok()
            .and_then(|map| map.get(&coldest).map(|e| e.session.clone()));
        if let Some(session) = session {
            if let Ok(mut guard) = session.try_lock() {
                if let Some(upload) = guard.as_mut() {
                    upload.cool();
                }
            }
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
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_write(id, offset, body).await;
        }
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
        // A request may leave up to a small upload's worth (or a segment) more in memory.
        let held = self.upload_memory_held();
        if held.saturating_add(writer::SMALL) > self.inner.upload_memory {
            return Err(StoreError::Busy { held });
        }
        let result = upload.append(body).await;
        self.touch(id);
        match result {
            Ok(size) => {
                self.warm(id);
                Ok(size)
            }
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
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_size(id).await;
        }
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
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_commit(id, Some(expected)).await.map(|c| c.size);
        }
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
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_commit(id, None).await.map(|c| (c.digest, c.new));
        }
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
        if let Some(s3) = &self.inner.s3 {
            return s3.upload_cancel(id).await;
        }
        let session = self.session(id)?;
        let upload = session.lock().await.take();
        self.forget(id);
        if let Some(upload) = upload {
            upload.discard().await;
        }
        Ok(())
    }

    /// Removes the upload sessions no request used for `idle` (since the last one ended),
    /// and those opened more than `max_age` ago. A session a request is writing to now is
    /// left until that request ends. Returns the ids removed.
    pub async fn expire_uploads(&self, idle: Duration, max_age: Duration) -> Vec<UploadId> {
        if let Some(s3) = &self.inner.s3 {
            return s3.expire_uploads(idle, max_age).await;
        }
        let expired: Vec<(UploadId, Session)> = match self.inner.uploads.lock() {
            Ok(map) => map
                .iter()
                .filter(|(_, e)| e.touched.elapsed() > idle || e.opened.elapsed() > max_age)
                .map(|(id, e)| (*id, e.session.clone()))
                .collect(),
            Err(_) => return Vec::new(),
        };
        let mut removed = Vec::new();
        for (id, session) in expired {
            let Ok(mut guard) = session.try_lock() else {
                continue;
            };
            let upload = guard.take();
            drop(guard);
            self.forget(&id);
            if let Some(upload) = upload {
                upload.discard().await;
                removed.push(id);
            }
        }
        removed
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Io(io::Error::other("upload table lock poisoned"))
}

fn dir_size(dir: &Path, content_len: &dyn Fn(u64) -> u64) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path(), content_len)?
        } else {
            content_len(meta.len())
        };
    }
    Ok(total)
}

/// Reads (or, for a new data dir, writes) `storage.json`, checks the mode asked for against
/// it, and loads the keys of an encrypted data dir.
fn prepare_format(
    root: &Path,
    options: &StoreOptions,
) -> Result<(Option<Arc<crypt::Keys>>, EncryptionStatus), OpenError> {
    let path = root.join(FORMAT_FILE);
    let damaged = |message: String| OpenError::Format {
        path: path.clone(),
        message,
    };
    let mismatch = |has: Encryption, asked: Encryption| OpenError::ModeMismatch {
        data_dir: root.to_path_buf(),
        has,
        asked,
    };
    let recorded = match std::fs::read(&path) {
        Ok(bytes) => {
            Some(serde_json::from_slice::<Format>(&bytes).map_err(|e| damaged(e.to_string()))?)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let format = match recorded {
        Some(format) => format,
        // Blobs but no record: a data dir from before encryption, whose blobs are plain.
        None if root.join("blobs").join("sha256").is_dir() => {
            if let Some(asked @ Encryption::Aes256Gcm) = options.encryption {
                return Err(mismatch(Encryption::None, asked));
            }
            let format = Format {
                encryption: Encryption::None,
                keys: Vec::new(),
            };
            write_format(root, &format)?;
            format
        }
        None => {
            let encryption = options.encryption.unwrap_or(Encryption::Aes256Gcm);
            let keys = match encryption {
                Encryption::Aes256Gcm => {
                    let (key, _) = keys::create(options.keyring, &options.key_dir)?;
                    vec![key.id().to_string()]
                }
                Encryption::None => Vec::new(),
            };
            // Recorded before any blob exists, so no blob is ever of an unknown mode.
            let format = Format { encryption, keys };
            write_format(root, &format)?;
            tracing::info!(
                encryption = %encryption,
                data_dir = %root.display(),
                "new data dir"
            );
            format
        }
    };
    if let Some(asked) = options.encryption {
        if asked != format.encryption {
            return Err(mismatch(format.encryption, asked));
        }
    }
    match format.encryption {
        Encryption::None => Ok((
            None,
            EncryptionStatus {
                mode: Encryption::None,
                key: None,
            },
        )),
        Encryption::Aes256Gcm => {
            let mut loaded = Vec::new();
            let mut place = None;
            for id in &format.keys {
                let id: crypt::KeyId = id
                    .parse()
                    .map_err(|()| damaged(format!("{id:?} is not a key id")))?;
                let (key, at) = keys::load(id, options.keyring, &options.key_dir)?;
                loaded.push(key);
                place = Some(at);
            }
            let current = loaded
                .pop()
                .ok_or_else(|| damaged("an encrypted data dir names no key".into()))?;
            let keys = crypt::Keys::new(&current, &loaded)?;
            Ok((
                Some(Arc::new(keys)),
                EncryptionStatus {
                    mode: Encryption::Aes256Gcm,
                    key: place,
                },
            ))
        }
    }
}

/// Writes `storage.json` durably (temp file, fsync, rename, directory fsync).
fn write_format(root: &Path, format: &Format) -> io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(format).map_err(io::Error::other)?;
    let tmp = root.join(format!("{FORMAT_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&text)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, root.join(FORMAT_FILE))?;
    std::fs::File::open(root)?.sync_all()
}
