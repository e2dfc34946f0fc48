//! Copying one image between two ends, each a repository here or on a remote registry: the
//! manifest tree (an index and its platforms' manifests, byte for byte), the blobs the
//! destination does not have (HEAD first, a mount where the destination holds the blob in
//! another repository, else sent: whole for small blobs, streamed for big ones, resumed from
//! what the destination already has), then the images that refer to it (signatures, SBOMs).
//!
//! Every byte fetched from a remote is checked against its digest before it is stored or
//! passed on (the store checks what it commits; [`Verified`] checks what goes on to a remote).

use crate::app::AppState;
use crate::images::{self, ImageError};
use crate::storage::StoreError;
use crate::transfer::remote::{
    ByteStream, ManifestHead, Remote, RemoteError, RemoteManifest, UploadStart, Verified,
};
use bytes::Bytes;
use ecrl::api::mirror::SyncEvent;
use ecrl::api::transfer::BlobStatus;
use ecrl::manifest::{Descriptor, Kind};
use ecrl::names::{Digest, Reference, RepoName};
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Blobs up to this size go in one request (`PUT` with the body); bigger ones are streamed.
const MONOLITHIC: u64 = 8 << 20;
/// Bigger blobs are sent in `PATCH`es of this size: a stopped copy ends after the one it is
/// sending, which the remote keeps (one broken off midway spoils the whole session on most
/// registries).
const CHUNK: u64 = 32 << 20;
/// How often a blob's progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Tries of one blob within one copy (a broken connection resumes where it broke).
const BLOB_TRIES: u32 = 3;
/// How deep referrers of referrers are followed.
const MAX_REFERRER_DEPTH: u32 = 3;

/// One end of a copy.
#[derive(Debug, Clone)]
pub enum End {
    Local(RepoName),
    Remote { remote: Arc<Remote>, repo: RepoName },
}

impl End {
    /// As users read it: `team/app` here, `host/team/app` there.
    pub fn label(&self) -> String {
        match self {
            End::Local(repo) => repo.to_string(),
            End::Remote { remote, repo } => format!("{}/{repo}", remote.registry),
        }
    }

    fn registry(&self) -> Option<&str> {
        match self {
            End::Local(_) => None,
            End::Remote { remote, .. } => Some(&remote.registry),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stopped before it finished")]
    Cancelled,
}

impl From<StoreError> for CopyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DigestMismatch { .. } => CopyError::Remote(RemoteError::Mismatch(format!(
                "{e}: the source sent other bytes than its digest names; nothing was stored"
            ))),
            e => CopyError::Store(e.to_string()),
        }
    }
}

impl CopyError {
    /// Whether the same copy may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            CopyError::Remote(e) => e.is_transient(),
            CopyError::Store(_) => true,
            CopyError::Image(ImageError::Meta(crate::metadata::MetaError::Db(_))) => true,
            _ => false,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            CopyError::Remote(e) => e.code(),
            CopyError::Image(_) | CopyError::Invalid(_) => "INVALID_IMAGE",
            CopyError::Store(_) => "STORAGE",
            CopyError::NotFound(_) => "IMAGE_NOT_FOUND",
            CopyError::Cancelled => "CANCELLED",
        }
    }
}

/// `os/arch[/variant]`, as `--platform` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for PlatformFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformFilter {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(PlatformFilter {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "platform {text:?}: expected os/arch or os/arch/variant"
            )),
        }
    }
}

impl PlatformFilter {
    fn matches(&self, d: &Descriptor) -> bool {
        d.platform.as_ref().is_some_and(|p| {
            p.os == self.os
                && p.architecture == self.architecture
                && (self.variant.is_none() || p.variant == self.variant)
        })
    }
}

/// A blob in a repository of a registry.
type BlobAt = (String, RepoName, Digest);

/// Uploads to remotes that broke off, kept so the next try continues them.
#[derive(Default)]
pub struct Partials {
    sessions: Mutex<HashMap<BlobAt, String>>,
    /// Where on each remote a blob was last seen, for mounts into other repositories.
    seen: Mutex<HashMap<(String, Digest), RepoName>>,
    /// One upload of a blob to a repository at a time (a sync run again while the stopped
    /// one finishes its piece waits for it, then continues its session).
    sending: super::keyed::KeyedLocks<BlobAt>,
}

impl Partials {
    async fn sending(
        &self,
        registry: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        self.sending
            .lock((registry.to_string(), repo.clone(), *digest))
            .await
    }

    fn take(&self, registry: &str, repo: &RepoName, digest: &Digest) -> Option<String> {
        self.sessions
            .lock()
            .ok()?
            .remove(&(registry.to_string(), repo.clone(), *digest))
    }

    fn keep(&self, registry: &str, repo: &RepoName, digest: &Digest, location: String) {
        if let Ok(mut s) = self.sessions.lock() {
            // Bounded: the oldest sessions are long expired at the remote anyway.
            if s.len() >= 4096 {
                s.clear();
            }
            s.insert((registry.to_string(), repo.clone(), *digest), location);
        }
    }

    fn saw(&self, registry: &str, digest: &Digest, repo: &RepoName) {
        if let Ok(mut s) = self.seen.lock() {
            if s.len() >= 65_536 {
                s.clear();
            }
            s.insert((registry.to_string(), *digest), repo.clone());
        }
    }

    fn where_seen(&self, registry: &str, digest: &Digest) -> Option<RepoName> {
        self.seen
            .lock()
            .ok()?
            .get(&(registry.to_string(), *digest))
            .cloned()
    }
}

/// How one image's copy went.
#[derive(Debug, Default)]
pub struct Outcome {
    pub digest: Option<Digest>,
    pub unchanged: bool,
    pub blobs_copied: u64,
    pub blobs_existing: u64,
    pub bytes_copied: u64,
    pub referrers_copied: u64,
}

#[derive(Default)]
struct Stats {
    blobs_copied: AtomicU64,
    blobs_existing: AtomicU64,
    bytes_copied: AtomicU64,
    referrers_copied: AtomicU64,
}

/// What a copy needs: the daemon, where progress goes, and how to choose.
pub struct Copier {
    pub state: Arc<AppState>,
    pub partials: Arc<Partials>,
    pub events: Option<mpsc::Sender<SyncEvent>>,
    pub platforms: Vec<PlatformFilter>,
    pub referrers: bool,
    /// Blobs of one image moved at once.
    pub blob_jobs: usize,
    pub cancel: CancellationToken,
}

/// A manifest in hand.
struct Doc {
    bytes: Bytes,
    media_type: String,
    digest: Digest,
}

impl Copier {
    fn event(&self, event: SyncEvent) {
        if let Some(events) = &self.events {
            // Progress never waits for a slow reader; it is dropped instead.
            let _ = events.try_send(event);
        }
    }

    async fn event_sure(&self, event: SyncEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event).await;
        }
    }

    /// What `reference` names at `end`: its digest, media type and size; `None` when absent.
    pub async fn resolve(
        &self,
        end: &End,
        reference: &str,
    ) -> Result<Option<ManifestHead>, CopyError> {
        match end {
            End::Local(repo) => {
                let reference: Reference = reference
                    .parse()
                    .map_err(|e: ecrl::names::NameError| CopyError::Invalid(e.to_string()))?;
                let index = self.state.meta.read();
                Ok(index
                    .repos
                    .get(repo)
                    .and_then(|r| r.manifest(&reference))
                    .map(|m| ManifestHead {
                        digest: m.digest,
                        media_type: m.media_type.clone(),
                        size: m.size,
                    }))
            }
            End::Remote { remote, repo } => Ok(remote.manifest_head(repo, reference).await?),
        }
    }

    async fn manifest(&self, end: &End, reference: &str) -> Result<Doc, CopyError> {
        match end {
            End::Local(repo) => {
                let parsed: Reference = reference
                    .parse()
                    .map_err(|e: ecrl::names::NameError| CopyError::Invalid(e.to_string()))?;
                let index = self.state.meta.read();
                let m = index
                    .repos
                    .get(repo)
                    .and_then(|r| r.manifest(&parsed))
                    .ok_or_else(|| {
                        CopyError::NotFound(format!("{repo} has no image {reference}"))
                    })?;
                Ok(Doc {
                    bytes: m.bytes.clone(),
                    media_type: m.media_type.clone(),
                    digest: m.digest,
                })
            }
            End::Remote { remote, repo } => {
                let RemoteManifest {
                    bytes,
                    media_type,
                    digest,
                } = remote.manifest(repo, reference).await?;
                Ok(Doc {
                    bytes,
                    media_type,
                    digest,
                })
            }
        }
    }

    async fn has_manifest(&self, end: &End, digest: &Digest) -> Result<bool, CopyError> {
        Ok(self.resolve(end, &digest.to_string()).await?.is_some())
    }

    async fn put_manifest(&self, end: &End, reference: &str, doc: &Doc) -> Result<(), CopyError> {
        match end {
            End::Local(repo) => {
                let reference: Reference = reference
                    .parse()
                    .map_err(|e: ecrl::names::NameError| CopyError::Invalid(e.to_string()))?;
                images::put_manifest(
                    &self.state,
                    repo,
                    reference,
                    Some(doc.media_type.clone()),
                    doc.bytes.clone(),
                )
                .await?;
                Ok(())
            }
            End::Remote { remote, repo } => Ok(remote
                .put_manifest(repo, reference, &doc.media_type, doc.bytes.clone())
                .await?),
        }
    }

    async fn referrers(&self, end: &End, digest: &Digest) -> Result<Vec<Digest>, CopyError> {
        match end {
            End::Local(repo) => {
                let index = self.state.meta.read();
                let mut found: Vec<Digest> = index
                    .repos
                    .get(repo)
                    .map(|r| {
                        r.manifests
                            .values()
                            .filter(|m| m.subject.as_ref() == Some(digest))
                            .map(|m| m.digest)
                            .collect()
                    })
                    .unwrap_or_default();
                found.sort();
                Ok(found)
            }
            End::Remote { remote, repo } => Ok(remote
                .referrers(repo, digest)
                .await?
                .iter()
                .filter_map(|d| d.digest.parse().ok())
                .collect()),
        }
    }

    /// Copies the image `src_ref` names at `src` to `dst`, under `dst_ref` (a tag, or the
    /// digest). With `dry_run` only looks.
    pub async fn image(
        &self,
        src: &End,
        src_ref: &str,
        dst: &End,
        dst_ref: Option<&str>,
        dry_run: bool,
    ) -> Result<Outcome, CopyError> {
        let head = self.resolve(src, src_ref).await?.ok_or_else(|| {
            CopyError::NotFound(format!("{} has no image {src_ref}", src.label()))
        })?;
        // `--platform` narrows an index to its platforms' manifests: one platform is copied
        // as that manifest (its digest unchanged), several as an index of just them.
        let narrowed = if self.platforms.is_empty()
            || ecrl::manifest::kind_of(&head.media_type) != Some(Kind::Index)
        {
            None
        } else {
            Some(self.narrow(src, &head.digest).await?)
        };
        let target = match &narrowed {
            Some(Narrowed::One(child)) => *child,
            Some(Narrowed::Index(doc)) => doc.digest,
            None => head.digest,
        };
        let dst_ref = dst_ref
            .map(str::to_string)
            .unwrap_or_else(|| target.to_string());
        let stats = Stats::default();
        let at_dest = self.resolve(dst, &dst_ref).await?;
        let unchanged = at_dest.as_ref().is_some_and(|d| d.digest == target);
        if dry_run {
            return Ok(Outcome {
                digest: Some(target),
                unchanged,
                ..Default::default()
            });
        }
        if !unchanged {
            let doc = match narrowed {
                Some(Narrowed::Index(doc)) => doc,
                Some(Narrowed::One(child)) => self.manifest(src, &child.to_string()).await?,
                None => self.manifest(src, &head.digest.to_string()).await?,
            };
            self.tree(src, dst, &doc, &dst_ref, &stats).await?;
        }
        // An unchanged image costs one manifest lookup on each side: its referrers are looked
        // for again only where that is free (this registry's own index)
        // (or when the source is named by digest: asked for that image, referrers and all).
        let look = !unchanged || matches!(src, End::Local(_)) || src_ref.parse::<Digest>().is_ok();
        if self.referrers && look {
            self.copy_referrers(src, dst, &target, &stats, 0).await?;
            if target != head.digest {
                // Signatures of the whole index come along with the platform taken from it.
                self.copy_referrers(src, dst, &head.digest, &stats, 0)
                    .await?;
            }
        }
        Ok(Outcome {
            digest: Some(target),
            unchanged,
            blobs_copied: stats.blobs_copied.load(Ordering::Relaxed),
            blobs_existing: stats.blobs_existing.load(Ordering::Relaxed),
            bytes_copied: stats.bytes_copied.load(Ordering::Relaxed),
            referrers_copied: stats.referrers_copied.load(Ordering::Relaxed),
        })
    }

    /// The index at `digest` narrowed to the wanted platforms.
    async fn narrow(&self, src: &End, digest: &Digest) -> Result<Narrowed, CopyError> {
        let doc = self.manifest(src, &digest.to_string()).await?;
        let (parsed, _, _) = ecrl::manifest::parse(Some(&doc.media_type), &doc.bytes)
            .map_err(|e| CopyError::Invalid(e.0))?;
        let children = parsed.manifests.unwrap_or_default();
        let mut chosen = Vec::new();
        for p in &self.platforms {
            match children.iter().position(|d| p.matches(d)) {
                Some(i) if !chosen.contains(&i) => chosen.push(i),
                Some(_) => {}
                None => {
                    return Err(CopyError::NotFound(format!(
                        "{} has no {}/{}{} image in {digest}",
                        src.label(),
                        p.os,
                        p.architecture,
                        p.variant
                            .as_ref()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    )))
                }
            }
        }
        if let [one] = chosen.as_slice() {
            let child = children[*one]
                .parsed_digest("manifests")
                .map_err(|e| CopyError::Invalid(e.0))?;
            return Ok(Narrowed::One(child));
        }
        // Several platforms: the same index with only their entries.
        let mut value: serde_json::Value =
            serde_json::from_slice(&doc.bytes).map_err(|e| CopyError::Invalid(e.to_string()))?;
        if let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
            let kept: Vec<serde_json::Value> = list
                .iter()
                .enumerate()
                .filter(|(i, _)| chosen.contains(i))
                .map(|(_, v)| v.clone())
                .collect();
            *list = kept;
        }
        let bytes =
            Bytes::from(serde_json::to_vec(&value).map_err(|e| CopyError::Invalid(e.to_string()))?);
        let digest = Digest::from_bytes(sha2::Sha256::digest(&bytes).into());
        Ok(Narrowed::Index(Doc {
            bytes,
            media_type: doc.media_type,
            digest,
        }))
    }

    /// Copies a manifest and everything under it, then puts it at `reference`.
    async fn tree(
        &self,
        src: &End,
        dst: &End,
        doc: &Doc,
        reference: &str,
        stats: &Stats,
    ) -> Result<(), CopyError> {
        if self.cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        let (parsed, _, kind) = ecrl::manifest::parse(Some(&doc.media_type), &doc.bytes)
            .map_err(|e| CopyError::Invalid(format!("{}: {}", src.label(), e.0)))?;
        match kind {
            Kind::Index => {
                for (i, child) in parsed.manifests.unwrap_or_default().iter().enumerate() {
                    let digest = child
                        .parsed_digest(&format!("manifests[{i}]"))
                        .map_err(|e| CopyError::Invalid(e.0))?;
                    if self.has_manifest(dst, &digest).await? {
                        continue;
                    }
                    let child_doc = self.manifest(src, &digest.to_string()).await?;
                    Box::pin(self.tree(src, dst, &child_doc, &digest.to_string(), stats)).await?;
                }
            }
            Kind::Image => {
                let mut blobs = Vec::new();
                for (what, d) in parsed
                    .config
                    .iter()
                    .map(|c| ("config".to_string(), c))
                    .chain(
                        parsed
                            .layers
                            .iter()
                            .flatten()
                            .enumerate()
                            .map(|(i, l)| (format!("layers[{i}]"), l)),
                    )
                {
                    // Non-distributable layers live elsewhere (their urls).
                    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    let digest = d
                        .parsed_digest(&what)
                        .map_err(|e| CopyError::Invalid(e.0))?;
                    let size = d
                        .size
                        .filter(|s| *s >= 0)
                        .ok_or_else(|| CopyError::Invalid(format!("{what} has no size")))?
                        as u64;
                    if !blobs.contains(&(digest, size)) {
                        blobs.push((digest, size));
                    }
                }
                futures_util::stream::iter(blobs)
                    .map(|(digest, size)| self.blob(src, dst, digest, size, stats))
                    .buffer_unordered(self.blob_jobs.max(1))
                    .try_collect::<Vec<()>>()
                    .await?;
            }
        }
        self.put_manifest(dst, reference, doc).await
    }

    async fn copy_referrers(
        &self,
        src: &End,
        dst: &End,
        subject: &Digest,
        stats: &Stats,
        depth: u32,
    ) -> Result<(), CopyError> {
        if depth >= MAX_REFERRER_DEPTH {
            return Ok(());
        }
        for digest in self.referrers(src, subject).await? {
            if !self.has_manifest(dst, &digest).await? {
                let doc = self.manifest(src, &digest.to_string()).await?;
                Box::pin(self.tree(src, dst, &doc, &digest.to_string(), stats)).await?;
                stats.referrers_copied.fetch_add(1, Ordering::Relaxed);
            }
            Box::pin(self.copy_referrers(src, dst, &digest, stats, depth + 1)).await?;
        }
        Ok(())
    }

    /// One blob: nothing when the destination has it, a mount or a link when it has it
    /// elsewhere, else its bytes (retried, resuming, when the connection breaks).
    async fn blob(
        &self,
        src: &End,
        dst: &End,
        digest: Digest,
        size: u64,
        stats: &Stats,
    ) -> Result<(), CopyError> {
        let name = digest.to_string();
        let done = |status: BlobStatus| SyncEvent::BlobDone {
            name: name.clone(),
            digest: name.clone(),
            size,
            status,
        };
        // One upload of a blob to a remote repository at a time: whoever waited here then
        // finds it there (or continues the session a stopped copy left).
        let _sending = match dst {
            End::Remote { remote, repo } => {
                Some(self.partials.sending(&remote.registry, repo, &digest).await)
            }
            End::Local(_) => None,
        };
        if self.dest_has(src, dst, &digest, size).await? {
            stats.blobs_existing.fetch_add(1, Ordering::Relaxed);
            self.event_sure(done(BlobStatus::Exists)).await;
            return Ok(());
        }
        self.event(SyncEvent::BlobStarted {
            name: name.clone(),
            size: Some(size),
        });
        let mut tries = 0;
        loop {
            tries += 1;
            if self.cancel.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            // Stopping ends the blob's stream (see `source`), so every session is closed or
            // kept for later, never dropped midway.
            let result = self.send_blob(src, dst, &digest, size).await;
            match result {
                Ok(mounted) => {
                    if let End::Remote { remote, repo } = dst {
                        self.partials.saw(&remote.registry, &digest, repo);
                    }
                    if mounted {
                        stats.blobs_existing.fetch_add(1, Ordering::Relaxed);
                        self.event_sure(done(BlobStatus::Exists)).await;
                    } else {
                        stats.blobs_copied.fetch_add(1, Ordering::Relaxed);
                        stats.bytes_copied.fetch_add(size, Ordering::Relaxed);
                        self.event_sure(done(BlobStatus::Pushed)).await;
                    }
                    return Ok(());
                }
                Err(e) if e.is_transient() && tries < BLOB_TRIES && !self.cancel.is_cancelled() => {
                    tracing::info!(%digest, to = %dst.label(), "a blob copy broke off, trying again: {e}");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Links a blob the store holds into a repository here (made if need be); the caller
    /// holds the digest's lock.
    async fn link(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<(), CopyError> {
        let meta = &self.state.meta;
        meta.ensure_repo(repo, true)
            .await
            .map_err(ImageError::Meta)?;
        meta.link_blob(repo, *digest, size)
            .await
            .map_err(ImageError::Meta)?;
        Ok(())
    }

    /// Whether the destination has the blob, linking it when this registry holds it in
    /// another repository (the daemon's owner may read them all).
    async fn dest_has(
        &self,
        src: &End,
        dst: &End,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, CopyError> {
        match dst {
            End::Local(repo) => {
                let linked = self
                    .state
                    .meta
                    .read()
                    .repos
                    .get(repo)
                    .is_some_and(|r| r.blobs.contains_key(digest));
                if linked {
                    return Ok(true);
                }
                let _guard = self.state.lock_blob(digest).await;
                match self.state.store.stat(digest).await {
                    Ok(Some(stored)) if stored == size => {
                        self.link(repo, digest, size).await?;
                        Ok(true)
                    }
                    Ok(_) => Ok(false),
                    Err(e) => Err(CopyError::Store(e.to_string())),
                }
            }
            End::Remote { remote, repo } => {
                if remote.blob_size(repo, digest).await?.is_some() {
                    return Ok(true);
                }
                let _ = src;
                Ok(false)
            }
        }
    }

    /// Moves a blob's bytes. True when the destination mounted it instead.
    async fn send_blob(
        &self,
        src: &End,
        dst: &End,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, CopyError> {
        match dst {
            End::Local(repo) => {
                // The store checks the digest of what it commits: only the length is
                // checked on the way, so a remote cannot fill the disk.
                let stream = self.source(src, digest, size, 0, Check::Length).await?;
                // Stopped midway, the session ends: the store keeps no partial blob.
                let stream = self.stoppable(stream);
                let id = self.state.store.upload_start().await?;
                let failure = Arc::new(Mutex::new(None::<RemoteError>));
                let seen = failure.clone();
                let body = stream.map_err(move |e| {
                    let text = e.to_string();
                    if let Ok(mut f) = seen.lock() {
                        *f = Some(e);
                    }
                    text
                });
                if let Err(e) = self.state.store.upload_write(&id, None, body).await {
                    let _ = self.state.store.upload_cancel(&id).await;
                    let cause = failure.lock().ok().and_then(|mut f| f.take());
                    return Err(match (e, cause) {
                        (_, Some(cause)) => CopyError::Remote(cause),
                        (StoreError::Body(why), None) => {
                            CopyError::Remote(RemoteError::Unreachable {
                                registry: src.registry().unwrap_or("ecrld").to_string(),
                                reason: why,
                            })
                        }
                        (e, None) => e.into(),
                    });
                }
                let _guard = self.state.lock_blob(digest).await;
                self.state.store.upload_finish(&id, digest).await?;
                self.link(repo, digest, size).await?;
                Ok(false)
            }
            End::Remote { remote, repo } => {
                // A session that broke off earlier continues from what the remote holds.
                let resumed = match self.partials.take(&remote.registry, repo, digest) {
                    Some(location) => match remote.upload_status(repo, &location).await {
                        Ok(Some(have)) if have < size => Some((location, have)),
                        other => {
                            tracing::info!(
                                %digest,
                                to = %dst.label(),
                                "the remote no longer holds the earlier upload ({}): sending \
                                 the blob from its start",
                                match other {
                                    Ok(Some(have)) => format!("it says {have} bytes"),
                                    Ok(None) => "the session is gone".into(),
                                    Err(e) => e.to_string(),
                                }
                            );
                            None
                        }
                    },
                    None => None,
                };
                let (location, offset) = match resumed {
                    Some(r) => r,
                    None => {
                        // Mount from the source's repository on the same registry, or from
                        // where ecrl last put the blob there.
                        let from = match src {
                            End::Remote {
                                remote: s,
                                repo: from,
                            } if s.registry == remote.registry && from != repo => {
                                Some(from.clone())
                            }
                            _ => self
                                .partials
                                .where_seen(&remote.registry, digest)
                                .filter(|r| r != repo),
                        };
                        match remote
                            .upload_start(repo, from.as_ref().map(|f| (digest, f)))
                            .await?
                        {
                            UploadStart::Mounted => return Ok(true),
                            UploadStart::Session(location) => (location, 0),
                        }
                    }
                };
                if offset > 0 {
                    tracing::info!(
                        %digest,
                        to = %dst.label(),
                        offset,
                        "resuming an upload the remote already holds part of"
                    );
                }
                // Kept until it is done: a sync stopped midway (Ctrl-C, a broken connection)
                // continues this session the next time.
                self.partials
                    .keep(&remote.registry, repo, digest, location.clone());
                let sent = self
                    .send_remote(src, remote, repo, digest, size, &location, offset)
                    .await;
                if sent.is_ok() || matches!(sent, Err(CopyError::Remote(RemoteError::Mismatch(_))))
                {
                    // Done, or holding bytes that are not the blob's: never continued.
                    self.partials.take(&remote.registry, repo, digest);
                }
                sent.map(|()| false)
            }
        }
    }

    /// Sends a blob's bytes from `offset` on into an upload session and completes it.
    #[allow(clippy::too_many_arguments)]
    async fn send_remote(
        &self,
        src: &End,
        remote: &Remote,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        location: &str,
        offset: u64,
    ) -> Result<(), CopyError> {
        // A resumed upload is checked by the destination, which hashes it whole.
        let check = if offset == 0 {
            Check::Digest
        } else {
            Check::Length
        };
        let stream = self.source(src, digest, size, offset, check).await?;
        if size - offset <= MONOLITHIC {
            let chunks: Vec<Bytes> = stream.try_collect().await?;
            let body = Bytes::from(chunks.concat());
            remote
                .upload_finish(repo, location, digest, Some((body, offset)))
                .await?;
            return Ok(());
        }
        // In pieces: each one the remote has taken is kept, and a session can be continued
        // from the end of its last complete piece.
        let shared = Arc::new(tokio::sync::Mutex::new(Pieces {
            stream,
            left: Bytes::new(),
        }));
        let mut location = location.to_string();
        let mut at = offset;
        while at < size {
            // Stopped, it stops between pieces, so the remote keeps a session that the next
            // run continues.
            if self.cancel.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            let n = CHUNK.min(size - at);
            let body = reqwest::Body::wrap_stream(Pieces::take(shared.clone(), n));
            location = remote
                .upload_chunk(repo, &location, at, Some(n), body)
                .await?;
            at += n;
            self.partials
                .keep(&remote.registry, repo, digest, location.clone());
        }
        // The source's end, where a remote's bytes are checked against the digest: only then
        // does the remote commit them.
        let mut pieces = shared.lock().await;
        if !pieces.left.is_empty() {
            return Err(RemoteError::Mismatch(format!(
                "{} sent more than the {size} bytes of blob {digest}",
                src.label()
            ))
            .into());
        }
        match pieces.stream.next().await {
            None => {}
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => {
                return Err(RemoteError::Mismatch(format!(
                    "{} sent more than the {size} bytes of blob {digest}",
                    src.label()
                ))
                .into())
            }
        }
        drop(pieces);
        remote.upload_finish(repo, &location, digest, None).await?;
        Ok(())
    }

    /// The source's bytes of a blob from `offset` on, reporting progress; a remote's checked
    /// as `check` says (this registry's own blobs were checked when they were stored).
    async fn source(
        &self,
        src: &End,
        digest: &Digest,
        size: u64,
        offset: u64,
        check: Check,
    ) -> Result<ByteStream, CopyError> {
        let stream: ByteStream = match src {
            End::Local(repo) => {
                let linked = self
                    .state
                    .meta
                    .read()
                    .repos
                    .get(repo)
                    .is_some_and(|r| r.blobs.contains_key(digest));
                if !linked {
                    return Err(CopyError::NotFound(format!(
                        "{repo} does not hold blob {digest}"
                    )));
                }
                let stream = self
                    .state
                    .store
                    .read(digest, offset..size)
                    .await
                    .map_err(|e| CopyError::Store(format!("reading blob {digest}: {e}")))?;
                let digest = *digest;
                Box::pin(stream.map_err(move |e| RemoteError::Protocol {
                    registry: "ecrld".into(),
                    detail: format!("reading blob {digest}: {e}"),
                }))
            }
            End::Remote { remote, repo } => {
                let stream = remote.blob(repo, digest, offset).await?;
                let what = format!("{}/{repo}", remote.registry);
                match check {
                    Check::Digest => Box::pin(Verified::new(stream, *digest, size, what)),
                    Check::Length => {
                        Box::pin(Verified::length(stream, *digest, size - offset, what))
                    }
                }
            }
        };
        Ok(self.progress(stream, digest, offset))
    }

    /// `stream`, ending in an error as soon as the copy is stopped.
    fn stoppable(&self, stream: ByteStream) -> ByteStream {
        let cancel = self.cancel.clone();
        let stopped = self.cancel.clone();
        let end = futures_util::stream::once(async move {
            stopped
                .is_cancelled()
                .then_some(Err(RemoteError::Cancelled))
        })
        .filter_map(std::future::ready);
        Box::pin(stream.take_until(cancel.cancelled_owned()).chain(end))
    }

    fn progress(&self, stream: ByteStream, digest: &Digest, offset: u64) -> ByteStream {
        let Some(events) = self.events.clone() else {
            return stream;
        };
        let name = digest.to_string();
        let mut moved = offset;
        let mut last = Instant::now();
        Box::pin(stream.inspect_ok(move |chunk| {
            moved += chunk.len() as u64;
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                let _ = events.try_send(SyncEvent::BlobProgress {
                    name: name.clone(),
                    bytes: moved,
                });
            }
        }))
    }
}

/// A stream cut into consecutive pieces of given lengths, one request body each.
struct Pieces {
    stream: ByteStream,
    /// What the last piece read beyond its end.
    left: Bytes,
}

impl Pieces {
    /// The next `n` bytes, as a stream; it fails if the source ends before them.
    fn take(
        shared: Arc<tokio::sync::Mutex<Pieces>>,
        n: u64,
    ) -> impl futures_util::Stream<Item = Result<Bytes, RemoteError>> + Send + 'static {
        futures_util::stream::unfold((shared, n), |(shared, want)| async move {
            if want == 0 {
                return None;
            }
            let mut pieces = shared.lock().await;
            let mut chunk = if pieces.left.is_empty() {
                match pieces.stream.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return Some((Err(e), (shared.clone(), 0))),
                    None => {
                        return Some((
                            Err(RemoteError::Protocol {
                                registry: "ecrld".into(),
                                detail: "the blob's source ended early".into(),
                            }),
                            (shared.clone(), 0),
                        ))
                    }
                }
            } else {
                std::mem::take(&mut pieces.left)
            };
            if chunk.len() as u64 > want {
                pieces.left = chunk.split_off(want as usize);
            }
            let rest = want - chunk.len() as u64;
            drop(pieces);
            Some((Ok(chunk), (shared, rest)))
        })
    }
}

/// How much of a remote's blob is checked on the way.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Its digest and length: it goes on to another remote.
    Digest,
    /// Its length: the destination checks the digest.
    Length,
}

enum Narrowed {
    One(Digest),
    Index(Doc),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p: PlatformFilter = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert!("linux".parse::<PlatformFilter>().is_err());
        assert!("linux/amd64/x/y".parse::<PlatformFilter>().is_err());
        let amd: PlatformFilter = "linux/amd64".parse().unwrap();
        let d: Descriptor = serde_json::from_str(
            r#"{"digest":"sha256:x","size":1,"platform":{"os":"linux","architecture":"amd64"}}"#,
        )
        .unwrap();
        assert!(amd.matches(&d));
        assert!(!p.matches(&d));
    }
}
