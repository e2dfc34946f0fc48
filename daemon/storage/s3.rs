//! The blob store's second backend: an S3-compatible object store (AWS S3, SeaweedFS,
//! Garage, MinIO) that several ecrld instances share. Owns every object under the configured
//! prefix; uploads in progress are in [`super::s3_upload`]. It must not call the registry,
//! metadata or anything but the object store.
//!
//! Layout under `<prefix>/`:
//! - `storage.json`: the same record as a data dir's (encryption mode, key ids), written once
//!   by the first ecrld to open the bucket; every instance needs the keys it names.
//! - `data/<uuid>`: a blob's bytes as a blob file holds them after its 4096-byte header (the
//!   sealed segments of [`super::crypt`]; plain bytes in an unencrypted store). Written by one
//!   PUT or one multipart upload, never copied: S3 has no rename, and a copy costs nearly
//!   as much as the upload (and fails past 5 GiB).
//! - `blobs/sha256/<2 hex>/<hex>`: the blob's link ([`Link`]), written only once the data
//!   object is complete and the digest checked, with a conditional create; a link that is
//!   there already means the blob is stored, and the newer data object goes. Links are
//!   immutable, so each instance keeps recent ones in memory.
//! - `uploads/<uuid>/…`: upload sessions ([`super::s3_upload`]).
//! - `quarantine/sha256-<hex>`: links `ecrl fsck --repair` moved aside.
//!
//! The object store never holds plaintext of an encrypted store: data objects are sealed
//! segments, links hold the 40 meaningful header bytes (key id, nonce prefix, length), and an
//! upload's unsent end is sealed too. A failure of the object store is
//! [`Unavailable`]: the registry answers it with 503, never with a half-written blob.

use super::buf::{Buf, BUF_SIZE};
use super::crypt::{self, Keys, Opener, HEADER, HEADER_USED, PLAIN, SEGMENT};
use super::midstate::{hex, unhex};
use super::{keys, EncryptionStatus, Format, OpenError, StoreError, StoreOptions, Sweep};
use bytes::Bytes;
use ecrl::config::{Encryption, S3Addressing, S3Config};
use ecrl::names::Digest;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Links kept in memory per instance (about 200 bytes each).
const LINK_CACHE: usize = 16 * 1024;
/// Sealed segments a read opens at a time: one pooled buffer's worth (freshly allocated
/// memory is slow to touch on these VMs; see `super::buf`), opened in place.
const BATCH_SEGMENTS: usize = BUF_SIZE / SEGMENT;
/// Batches being opened at once per read, while the body goes on arriving.
const OPENING: usize = 2;
/// How long the store may take to answer at start-up and for `ecrl daemon status`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `bytes_stored` (a listing of every data object) is reused.
const STORED_TTL: Duration = Duration::from_secs(30);
/// Unheld blobs are removed at start-up only when their link is older than this: another
/// instance may have just committed one and not yet linked it into its repository.
const UNHELD_AGE: Duration = Duration::from_secs(3600);

/// The object store failed or could not be reached: a condition of the registry's backend,
/// which the registry reports as 503 (the client may retry), never as its own bug.
#[derive(Debug, thiserror::Error)]
#[error("the object store {location} failed: {message}")]
pub struct Unavailable {
    pub location: String,
    pub message: String,
}

/// A blob's link: which data object holds its bytes, and how to open them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The link format's version (1).
    pub v: u32,
    /// The content's (plaintext) length.
    pub size: u64,
    /// The data object's name under `data/` (a v4 UUID).
    pub data: String,
    /// An encrypted blob's header: its first [`HEADER_USED`] bytes, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl Link {
    /// The link's JSON, checked: a link that does not parse, names no UUID, or whose header
    /// disagrees with its size is damaged.
    pub fn parse(bytes: &[u8]) -> io::Result<Link> {
        let damaged = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a blob link in the object store is damaged: {why}"),
            )
        };
        let link: Link = serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))?;
        if link.v != 1 {
            return Err(damaged(format!("link format {} is unknown", link.v)));
        }
        if uuid::Uuid::parse_str(&link.data).is_err() {
            return Err(damaged(format!(
                "{:?} is not a data object name",
                link.data
            )));
        }
        if let Some(header) = &link.header {
            let bytes = unhex(header)
                .filter(|b| b.len() == HEADER_USED)
                .ok_or_else(|| damaged("its header is not 40 bytes of hex".into()))?;
            let mut len = [0u8; 8];
            len.copy_from_slice(&bytes[32..40]);
            if u64::from_le_bytes(len) != link.size {
                return Err(damaged("its size and its header disagree".into()));
            }
        }
        Ok(link)
    }

    /// The length the data object must have.
    pub fn data_len(&self) -> u64 {
        match self.header {
            Some(_) => crypt::sealed_len(self.size) - HEADER as u64,
            None => self.size,
        }
    }

    /// The opener of an encrypted blob's segments.
    fn opener(&self, keys: &Keys) -> io::Result<Opener> {
        let header = self
            .header
            .as_deref()
            .and_then(unhex)
            .ok_or_else(|| invalid("an encrypted store's blob link has no header"))?;
        keys.opener(&header)
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

pub struct S3Store {
    pub(super) client: Arc<AmazonS3>,
    /// Where, in words, for errors and status (never a secret).
    pub(super) location: String,
    config: S3Config,
    pub(super) keys: Option<Arc<Keys>>,
    links: Arc<Mutex<HashMap<Digest, Arc<Link>>>>,
    /// The runtime, for the store's blocking callers (gc's and fsck's threads).
    pub(super) handle: tokio::runtime::Handle,
    stored: Mutex<Option<(Instant, u64)>>,
    pub(super) uploads: super::s3_upload::Uploads,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .finish()
    }
}

/// Builds the object store client. Retries are few and short: a registry client waiting
/// on a dead backend should get its 503 in seconds, and retry itself. Four retries (five
/// attempts, as the AWS CLI makes) back off 0.1, 0.2, 0.4, 0.8 s: about 1.5 s in all, long
/// enough to ride out a store's passing 500 (SeaweedFS answered InternalError to three
/// attempts within 255 ms while the test suite loaded it).
fn client(config: &S3Config) -> Result<AmazonS3, object_store::Error> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_virtual_hosted_style_request(config.addressing == S3Addressing::VirtualHost)
        .with_retry(RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(10),
            ..Default::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                // A request moves at most one part or one read window (a few MiB).
                .with_timeout(Duration::from_secs(120))
                .with_allow_http(true),
        );
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(true);
    }
    if let Some(creds) = &config.credentials {
        builder = builder
            .with_access_key_id(&creds.access_key_id)
            .with_secret_access_key(&creds.secret_access_key);
        if let Some(token) = &creds.session_token {
            builder = builder.with_token(token);
        }
    }
    builder.build()
}

impl S3Store {
    /// Connects, checks that the bucket answers, and reads (for a new prefix, writes)
    /// `storage.json` and loads its keys. Every failure names the store and why.
    pub async fn open(
        config: &S3Config,
        options: &StoreOptions<'_>,
    ) -> Result<(S3Store, EncryptionStatus), OpenError> {
        let location = config.describe();
        let fail = |message: String| OpenError::Backend {
            location: location.clone(),
            message,
        };
        let client = Arc::new(client(config).map_err(|e| fail(e.to_string()))?);
        let mut store = S3Store {
            client,
            location: location.clone(),
            config: config.clone(),
            keys: None,
            links: Arc::default(),
            handle: tokio::runtime::Handle::current(),
            stored: Mutex::default(),
            uploads: super::s3_upload::Uploads::new(options.upload_memory),
        };
        store.probe().await.map_err(fail)?;
        let format_key = store.key("storage.json");
        let recorded = match store.client.get(&format_key).await {
            Ok(got) => Some(got.bytes().await.map_err(|e| fail(e.to_string()))?),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(fail(e.to_string())),
        };
        let damaged = |message: String| OpenError::Format {
            path: format!("{location}: storage.json").into(),
            message,
        };
        let format = match recorded {
            Some(bytes) => {
                serde_json::from_slice::<Format>(&bytes).map_err(|e| damaged(e.to_string()))?
            }
            None => {
                let encryption = options.encryption.unwrap_or(Encryption::Aes256Gcm);
                let keys = match encryption {
                    Encryption::Aes256Gcm => {
                        // The keyring is asked over D-Bus with blocking calls.
                        let (key, _) = tokio::task::block_in_place(|| {
                            keys::create(options.keyring, &options.key_dir)
                        })?;
                        vec![key.id().to_string()]
                    }
                    Encryption::None => Vec::new(),
                };
                let format = Format { encryption, keys };
                let text = serde_json::to_vec_pretty(&format).map_err(io::Error::other)?;
                let put = store
                    .client
                    .put_opts(
                        &format_key,
                        PutPayload::from(text),
                        PutOptions::from(PutMode::Create),
                    )
                    .await;
                match put {
                    Ok(_) => {
                        tracing::info!(encryption = %encryption, store = %location, "new object store");
                        format
                    }
                    // Another instance made it first: its record is the store's.
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        let bytes = store
                            .client
                            .get(&format_key)
                            .await
                            .map_err(|e| fail(e.to_string()))?
                            .bytes()
                            .await
                            .map_err(|e| fail(e.to_string()))?;
                        serde_json::from_slice::<Format>(&bytes)
                            .map_err(|e| damaged(e.to_string()))?
                    }
                    Err(e) => return Err(fail(e.to_string())),
                }
            }
        };
        if let Some(asked) = options.encryption {
            if asked != format.encryption {
                return Err(OpenError::StoreModeMismatch {
                    location,
                    has: format.encryption,
                    asked,
                });
            }
        }
        tracing::info!(store = %location, encryption = %format.encryption, "blobs are kept in an object store");
        let status = match format.encryption {
            Encryption::None => EncryptionStatus {
                mode: Encryption::None,
                key: None,
            },
            Encryption::Aes256Gcm => {
                let mut loaded = Vec::new();
                let mut place = None;
                for id in &format.keys {
                    let id: crypt::KeyId = id
                        .parse()
                        .map_err(|()| damaged(format!("{id:?} is not a key id")))?;
                    let (key, at) = tokio::task::block_in_place(|| {
                        keys::load(id, options.keyring, &options.key_dir)
                    })
                    .map_err(|source| OpenError::StoreKey {
                        location: location.clone(),
                        id: id.to_string(),
                        file: keys::key_file(&options.key_dir, id),
                        source: Box::new(source),
                    })?;
                    loaded.push(key);
                    place = Some(at);
                }
                let current = loaded
                    .pop()
                    .ok_or_else(|| damaged("an encrypted store names no key".into()))?;
                store.keys = Some(Arc::new(Keys::new(&current, &loaded)?));
                EncryptionStatus {
                    mode: Encryption::Aes256Gcm,
                    key: place,
                }
            }
        };
        Ok((store, status))
    }

    /// A cheap request with a short timeout: the bucket exists and answers. The error says
    /// why not.
    pub async fn probe(&self) -> Result<(), String> {
        let prefix = self.key("blobs");
        match tokio::time::timeout(
            PROBE_TIMEOUT,
            self.client.list_with_delimiter(Some(&prefix)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(object_store::Error::NotFound { .. })) => Err(format!(
                "the bucket {} does not exist (create it first)",
                self.config.bucket
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object's key under the store's prefix.
    pub(super) fn key(&self, rest: &str) -> Key {
        if self.config.prefix.is_empty() {
            Key::from(rest)
        } else {
            Key::from(format!("{}/{rest}", self.config.prefix))
        }
    }

    pub(super) fn link_key(digest: &Digest) -> String {
        let hex = digest.hex();
        format!("blobs/sha256/{}/{hex}", &hex[..2])
    }

    pub(super) fn data_key(&self, data: &str) -> Key {
        self.key(&format!("data/{data}"))
    }

    /// An object store error as the store reports it: not found stays not found; anything
    /// else is [`Unavailable`].
    pub(super) fn io_error(&self, e: object_store::Error) -> io::Error {
        match e {
            object_store::Error::NotFound { .. } => {
                io::Error::new(io::ErrorKind::NotFound, e.to_string())
            }
            e => io::Error::other(self.unavailable(e)),
        }
    }

    pub(super) fn unavailable(&self, e: impl std::fmt::Display) -> Unavailable {
        Unavailable {
            location: self.location.clone(),
            message: e.to_string(),
        }
    }

    pub(super) fn store_error(&self, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::UploadNotFound,
            e => StoreError::Unavailable(self.unavailable(e)),
        }
    }

    /// The link of a stored blob (from memory when read before), and when it was written
    /// when it was read now.
    async fn link(&self, digest: &Digest) -> io::Result<Option<Arc<Link>>> {
        if let Some(link) = self.links.lock().ok().and_then(|l| l.get(digest).cloned()) {
            return Ok(Some(link));
        }
        Ok(self.fetch_link(digest).await?.map(|(link, _)| link))
    }

    /// The link as the store has it now, and when it was written.
    async fn fetch_link(&self, digest: &Digest) -> io::Result<Option<(Arc<Link>, SystemTime)>> {
        let got = match self.client.get(&self.key(&Self::link_key(digest))).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                self.forget(digest);
                return Ok(None);
            }
            Err(e) => return Err(self.io_error(e)),
        };
        let written = got.meta.last_modified.into();
        let bytes = got.bytes().await.map_err(|e| self.io_error(e))?;
        let link = Arc::new(Link::parse(&bytes)?);
        if self.keys.is_some() != link.header.is_some() {
            return Err(invalid(
                "a blob link does not match the store's encryption: it is damaged or was changed",
            ));
        }
        self.remember(digest, link.clone());
        Ok(Some((link, written)))
    }

    pub(super) fn remember(&self, digest: &Digest, link: Arc<Link>) {
        if let Ok(mut links) = self.links.lock() {
            if links.len() >= LINK_CACHE {
                // Any one goes: links are cheap to read again.
                if let Some(old) = links.keys().next().copied() {
                    links.remove(&old);
                }
            }
            links.insert(*digest, link);
        }
    }

    pub(super) fn forget(&self, digest: &Digest) {
        if let Ok(mut links) = self.links.lock() {
            links.remove(digest);
        }
    }

    pub async fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        Ok(self.link(digest).await?.map(|l| l.size))
    }

    /// True when a link for `digest` is in the store now (not from memory).
    pub(super) async fn link_exists(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self.client.head(&self.key(&Self::link_key(digest))).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(self.unavailable(e))),
        }
    }

    /// The bytes of `range` of a stored blob: ranged GETs of its data object, a window at a
    /// time and a few ahead, decrypted segment by segment (a segment that fails
    /// authentication ends the stream with an error, never with wrong bytes).
    pub async fn read(&self, digest: &Digest, range: Range<u64>) -> io::Result<super::BlobStream> {
        let link = self
            .link(digest)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "blob not in the store"))?;
        if range.end > link.size || range.start > range.end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shorter than the range read",
            ));
        }
        let opener = match &self.keys {
            Some(keys) => Some(link.opener(keys)?),
            None => None,
        };
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        // The span of the data object that holds the range: whole segments when sealed.
        let (span, first_segment) = match &opener {
            None => (range.clone(), 0),
            Some(opener) => {
                let first = range.start / PLAIN as u64;
                let last = (range.end - 1) / PLAIN as u64;
                let to = last * SEGMENT as u64 + opener.segment_len(last);
                (first * SEGMENT as u64..to, first)
            }
        };
        // One GET for the whole span, streamed: the object store answers a plain GET about as
        // fast as it answers any number of ranged ones in parallel, and nothing is held but
        // what is being opened (the socket's buffer holds back the rest).
        let got = self
            .client
            .get_opts(
                &self.data_key(&link.data),
                GetOptions {
                    range: Some(GetRange::Bounded(span.clone())),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    // Deleted since its link was read: the link goes too.
                    self.forget(digest);
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "the blob's data object is gone from the object store",
                    )
                }
                e => self.io_error(e),
            })?;
        if got.meta.size != link.data_len() {
            return Err(invalid(format!(
                "a blob's data object is {} bytes long but its link says {}: it is damaged or \
                 was changed",
                got.meta.size,
                link.data_len()
            )));
        }
        let location = self.location.clone();
        let body = Sized {
            body: got.into_stream(),
            left: span.end - span.start,
        }
        .stream()
        .map_err(move |e| match e {
            BodyError::Store(e) => io::Error::other(Unavailable {
                location: location.clone(),
                message: e.to_string(),
            }),
            BodyError::Short => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the object store answered a short range",
            ),
        });
        let stream: super::BlobStream = match opener {
            None => Box::pin(body),
            // Opened a batch of segments at a time on the blocking threads, the next batch
            // arriving meanwhile.
            Some(opener) => Box::pin(
                segment_batches(body, first_segment)
                    .map(move |batch| {
                        let opener = opener.clone();
                        let range = range.clone();
                        async move {
                            let (first, sealed) = batch?;
                            tokio::task::spawn_blocking(move || {
                                open_batch(&opener, first, sealed, &range)
                            })
                            .await
                            .map_err(io::Error::other)?
                        }
                    })
                    .buffered(OPENING),
            ),
        };
        // The first bytes come before the stream is handed out: a body that fails at once
        // then makes the request's status (503) rather than a body that breaks off after a
        // 200.
        let mut stream = stream;
        match stream.next().await {
            None => Ok(Box::pin(futures_util::stream::empty())),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(Box::pin(
                futures_util::stream::once(std::future::ready(Ok(first))).chain(stream),
            )),
        }
    }

    pub async fn read_all(&self, digest: &Digest) -> io::Result<Bytes> {
        let size = self
            .stat(digest)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "blob not in the store"))?;
        let chunks: Vec<Bytes> = self.read(digest, 0..size).await?.try_collect().await?;
        let mut out = Vec::with_capacity(size as usize);
        for c in chunks {
            out.extend_from_slice(&c);
        }
        Ok(Bytes::from(out))
    }

    /// Reads a blob whole and hashes it (for `ecrl fsck`). Its link is read afresh.
    pub async fn hash_blob(&self, digest: &Digest) -> io::Result<(u64, Digest)> {
        use sha2::{Digest as _, Sha256};
        self.forget(digest);
        let size = self
            .stat(digest)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "blob not in the store"))?;
        let mut stream = self.read(digest, 0..size).await?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((len, Digest::from_bytes(hasher.finalize().into())))
    }

    /// Stores bytes in memory (manifests, configs): one PUT of the data object and one of
    /// the link, no upload session.
    pub async fn put(&self, data: Bytes, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let digest = {
            use sha2::{Digest as _, Sha256};
            Digest::from_bytes(Sha256::digest(&data).into())
        };
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: *expected,
                    actual: digest,
                });
            }
        }
        if self.link_exists(&digest).await? {
            return Ok(digest);
        }
        let sealer = match &self.keys {
            Some(keys) => Some(keys.sealer()?),
            None => None,
        };
        let (body, header) = match &sealer {
            None => (data.clone(), None),
            Some(sealer) => {
                let sealer_data = data.clone();
                let (body, header) = {
                    let mut out =
                        vec![0u8; (crypt::sealed_len(sealer_data.len() as u64) as usize) - HEADER];
                    sealer.seal(0, &sealer_data, true, &mut out)?;
                    (Bytes::from(out), sealer.header(sealer_data.len() as u64))
                };
                (body, Some(header))
            }
        };
        let name = uuid::Uuid::new_v4().to_string();
        self.client
            .put(&self.data_key(&name), PutPayload::from(body))
            .await
            .map_err(|e| StoreError::Unavailable(self.unavailable(e)))?;
        self.link_data(&digest, data.len() as u64, name, header.as_deref())
            .await?;
        Ok(digest)
    }

    /// Writes the link of a complete, checked data object (conditionally: a link already
    /// there wins, and this data object goes). Returns whether this link is the one stored.
    pub(super) async fn link_data(
        &self,
        digest: &Digest,
        size: u64,
        data: String,
        header: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let link = Link {
            v: 1,
            size,
            data: data.clone(),
            header: header.map(|h| hex(&h[..HEADER_USED])),
        };
        let text = serde_json::to_vec(&link).map_err(io::Error::other)?;
        let put = self
            .client
            .put_opts(
                &self.key(&Self::link_key(digest)),
                PutPayload::from(text),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => {
                self.remember(digest, Arc::new(link));
                self.stored_changed();
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Same digest, same bytes: the stored ones stay.
                let _ = self.client.delete(&self.data_key(&data)).await;
                Ok(false)
            }
            Err(e) => {
                let _ = self.client.delete(&self.data_key(&data)).await;
                Err(StoreError::Unavailable(self.unavailable(e)))
            }
        }
    }

    fn stored_changed(&self) {
        if let Ok(mut stored) = self.stored.lock() {
            *stored = None;
        }
    }

    /// Removes a blob: its link first (then nothing names the data), then its data.
    pub async fn delete(&self, digest: &Digest) -> io::Result<bool> {
        self.forget(digest);
        let Some((link, _)) = self.fetch_link(digest).await? else {
            return Ok(false);
        };
        self.forget(digest);
        match self.client.delete(&self.key(&Self::link_key(digest))).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.io_error(e)),
        }
        match self.client.delete(&self.data_key(&link.data)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(%digest, "cannot remove a blob's data object: {e}"),
        }
        self.stored_changed();
        Ok(true)
    }

    /// Every blob's link: digest and when it was written.
    async fn links(&self) -> io::Result<Vec<(Digest, SystemTime)>> {
        let prefix = self.key("blobs/sha256");
        let mut out = Vec::new();
        let mut listing = self.client.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.io_error(e))?;
            if let Some(digest) = meta
                .location
                .filename()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            {
                out.push((digest, meta.last_modified.into()));
            }
        }
        Ok(out)
    }

    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let links = self.handle.block_on(self.links())?;
        Ok(links.into_iter().map(|(d, _)| d).collect())
    }

    /// At start-up: removes the blobs `released` names, and unheld ones whose link is older
    /// than [`UNHELD_AGE`] (with the same "most are unheld: leave them" rule as the data
    /// dir's). Other instances share the store: a blob another one committed a moment ago is
    /// unheld here until its metadata says otherwise.
    pub fn remove_unlisted(
        &self,
        keep: &HashSet<Digest>,
        released: &HashSet<Digest>,
    ) -> io::Result<Sweep> {
        self.handle.block_on(async {
            let links = self.links().await?;
            let mut sweep = Sweep {
                blobs: links.len(),
                ..Default::default()
            };
            let now = SystemTime::now();
            let unheld: Vec<(Digest, SystemTime)> = links
                .into_iter()
                .filter(|(d, _)| !keep.contains(d))
                .collect();
            sweep.unheld = unheld.len();
            let all = unheld.len() * 2 <= sweep.blobs;
            for (digest, written) in unheld {
                let old = now
                    .duration_since(written)
                    .is_ok_and(|age| age >= UNHELD_AGE);
                if !(released.contains(&digest) || (all && old)) {
                    sweep.left += 1;
                    continue;
                }
                let size = self.stat(&digest).await.ok().flatten().unwrap_or(0);
                if self.delete(&digest).await? {
                    sweep.removed += 1;
                    sweep.bytes += size;
                }
            }
            if all {
                // Left for their age, not because the metadata looks foreign.
                sweep.left = 0;
            }
            Ok(sweep)
        })
    }

    /// A blob's content length and when its link was written.
    pub fn file_info(&self, digest: &Digest) -> io::Result<Option<(u64, SystemTime)>> {
        self.handle.block_on(async {
            Ok(self
                .fetch_link(digest)
                .await?
                .map(|(link, written)| (link.size, written)))
        })
    }

    pub async fn modified(&self, digest: &Digest) -> io::Result<Option<SystemTime>> {
        Ok(self.fetch_link(digest).await?.map(|(_, written)| written))
    }

    /// Moves a blob's link under `quarantine/` (its data stays, for inspection).
    pub async fn quarantine(&self, digest: &Digest) -> io::Result<std::path::PathBuf> {
        self.forget(digest);
        let from = self.key(&Self::link_key(digest));
        let name = format!("quarantine/sha256-{}", digest.hex());
        let to = self.key(&name);
        self.client
            .copy(&from, &to)
            .await
            .map_err(|e| self.io_error(e))?;
        self.client
            .delete(&from)
            .await
            .map_err(|e| self.io_error(e))?;
        self.stored_changed();
        Ok(format!("s3://{}/{to}", self.config.bucket).into())
    }

    /// Bytes of blob content stored (from a listing of the data objects, reused a while).
    pub async fn bytes_stored(&self) -> io::Result<u64> {
        if let Some((at, n)) = self.stored.lock().ok().and_then(|s| *s) {
            if at.elapsed() < STORED_TTL {
                return Ok(n);
            }
        }
        let sealed = self.keys.is_some();
        let prefix = self.key("data");
        let mut total = 0u64;
        let mut listing = self.client.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.io_error(e))?;
            total += if sealed {
                crypt::plain_len(meta.size + HEADER as u64).unwrap_or(0)
            } else {
                meta.size
            };
        }
        if let Ok(mut stored) = self.stored.lock() {
            *stored = Some((Instant::now(), total));
        }
        Ok(total)
    }
}

/// Why a data object's body stopped.
enum BodyError {
    Store(object_store::Error),
    /// It ended before the span asked for.
    Short,
}

/// A GET's body that must be exactly `left` bytes long.
struct Sized<S> {
    body: S,
    left: u64,
}

impl<S> Sized<S>
where
    S: futures_util::Stream<Item = Result<Bytes, object_store::Error>> + Send + Unpin + 'static,
{
    fn stream(self) -> impl futures_util::Stream<Item = Result<Bytes, BodyError>> + Send {
        futures_util::stream::try_unfold(self, |mut this| async move {
            match this.body.next().await {
                Some(Ok(chunk)) => {
                    if chunk.len() as u64 > this.left {
                        return Err(BodyError::Short);
                    }
                    this.left -= chunk.len() as u64;
                    Ok(Some((chunk, this)))
                }
                Some(Err(e)) => Err(BodyError::Store(e)),
                None if this.left > 0 => Err(BodyError::Short),
                None => Ok(None),
            }
        })
    }
}

/// The sealed segments of a body in pooled buffers, [`BATCH_SEGMENTS`] at a time (the last
/// batch shorter), each with the index of its first segment.
fn segment_batches(
    body: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    first: u64,
) -> impl futures_util::Stream<Item = io::Result<(u64, Buf)>> + Send {
    const BATCH: usize = BATCH_SEGMENTS * SEGMENT;
    let body = Box::pin(body);
    futures_util::stream::try_unfold(
        (body, first, Bytes::new(), false),
        |(mut body, next, mut left, mut ended)| async move {
            let mut batch = Buf::get();
            loop {
                let took = batch.fill_upto(&left, BATCH);
                left = left.slice(took..);
                if batch.len() == BATCH || ended {
                    break;
                }
                match body.next().await {
                    Some(chunk) => left = chunk?,
                    None => ended = true,
                }
            }
            if batch.is_empty() {
                return Ok(None);
            }
            let count = batch.len().div_ceil(SEGMENT) as u64;
            Ok(Some(((next, batch), (body, next + count, left, ended))))
        },
    )
}

/// Opens a batch of sealed segments (from segment `first` on) in place and keeps the part of
/// their plaintext in `range`.
fn open_batch(
    opener: &Opener,
    first: u64,
    mut batch: Buf,
    range: &Range<u64>,
) -> io::Result<Bytes> {
    let len = batch.len();
    let n = opener.open_in_place(first, &mut batch[..len])?;
    let base = first * PLAIN as u64;
    let from = (range.start.max(base) - base) as usize;
    let to = (range.end.min(base + n as u64) - base) as usize;
    Ok(Bytes::from_owner(batch).slice(from..to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_checked_when_read() {
        let keys = Keys::new(&crypt::MasterKey::generate().unwrap(), &[]).unwrap();
        let sealer = keys.sealer().unwrap();
        let header = sealer.header(70_000);
        let link = Link {
            v: 1,
            size: 70_000,
            data: uuid::Uuid::new_v4().to_string(),
            header: Some(hex(&header[..HEADER_USED])),
        };
        let text = serde_json::to_vec(&link).unwrap();
        let back = Link::parse(&text).unwrap();
        assert_eq!(back, link);
        assert_eq!(back.data_len(), crypt::sealed_len(70_000) - HEADER as u64);
        assert!(back.opener(&keys).is_ok());
        // The JSON holds no plaintext length that disagrees, no unknown field, a UUID.
        let text = String::from_utf8(text).unwrap();
        for bad in [
            text.replace("70000", "70001"),
            text.replace("\"v\":1", "\"v\":2"),
            text.replace(&link.data, "../../etc"),
            text.replace("{\"v\"", "{\"extra\":1,\"v\""),
            "not json".to_string(),
        ] {
            assert!(Link::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let plain = Link {
            v: 1,
            size: 5,
            data: uuid::Uuid::new_v4().to_string(),
            header: None,
        };
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("header"), "{text}");
        assert_eq!(Link::parse(text.as_bytes()).unwrap().data_len(), 5);
        // Another store's key cannot open it.
        let stranger = Keys::new(&crypt::MasterKey::generate().unwrap(), &[]).unwrap();
        assert!(back.opener(&stranger).is_err());
    }

    #[test]
    fn batches_open_in_place_and_trim() {
        let keys = Keys::new(&crypt::MasterKey::generate().unwrap(), &[]).unwrap();
        let sealer = keys.sealer().unwrap();
        let plain: Vec<u8> = (0..3 * PLAIN + 10).map(|i| (i % 251) as u8).collect();
        let mut sealed = vec![0u8; crypt::sealed_len(plain.len() as u64) as usize - HEADER];
        sealer.seal(0, &plain, true, &mut sealed).unwrap();
        let opener = keys.opener(&sealer.header(plain.len() as u64)).unwrap();
        let range = (PLAIN as u64 + 5)..(3 * PLAIN as u64 + 3);
        let batch = |sealed: &[u8]| {
            let mut buf = Buf::get();
            assert_eq!(buf.fill_upto(sealed, BUF_SIZE), sealed.len());
            buf
        };
        let got = open_batch(&opener, 1, batch(&sealed[SEGMENT..]), &range).unwrap();
        assert_eq!(&got[..], &plain[range.start as usize..range.end as usize]);
        let mut tampered = sealed.clone();
        tampered[SEGMENT + 7] ^= 1;
        assert!(open_batch(&opener, 1, batch(&tampered[SEGMENT..]), &range).is_err());
    }
}
