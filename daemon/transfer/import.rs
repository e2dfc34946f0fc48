//! Reading an archive into the store: docker-archive (`docker save`, plain or gzip) and OCI
//! image layouts (as a tar). The format is recognised from the archive's own files.
//!
//! Everything runs on one blocking thread that reads the tar in order. Blobs are streamed
//! into the store as they come: OCI blobs as they are (their names are their digests, which
//! the store verifies), docker-archive layers compressed with gzip on the way (in parallel
//! chunks, written as a multi-member gzip stream, which every gzip reader accepts), their
//! uncompressed digest checked against the image config's `diff_ids` at the end. Only after
//! every blob is in place are they linked into the repository and the manifest recorded, so
//! a failure tags nothing; blobs this import stored that nothing uses are removed again.

use super::{Events, TransferError};
use crate::app::AppState;
use crate::images::{self, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::storage::UploadId;
use bytes::Bytes;
use ecrl::api::transfer::{BlobStatus, TransferEvent, TransferResult};
use ecrl::names::{Digest, Reference, RepoName, Tag};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use tokio::runtime::Handle;

/// JSON files of an archive larger than this are not what they claim to be.
const MAX_JSON: u64 = 4 * 1024 * 1024;
/// Layers are compressed in chunks of this size, several at once.
const CHUNK: usize = 2 * 1024 * 1024;
/// A progress event at most every this many bytes.
const PROGRESS_EVERY: u64 = 8 * 1024 * 1024;

pub struct PushOptions {
    pub repo: RepoName,
    pub tag: Option<Tag>,
    pub gzip: bool,
    /// The source as the user named it (`app.tar`, `stdin`), for messages.
    pub source: String,
}

/// One image of a docker-archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The part of an image config that ties layers to their content.
#[derive(serde::Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(serde::Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// A blob this import put in place (or found there).
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    /// The digest of the uncompressed content, when the import compressed it or it was
    /// stored uncompressed.
    diff_id: Option<Digest>,
    /// Stored compressed by this import.
    compressed: bool,
}

struct Importer {
    state: Arc<AppState>,
    handle: Handle,
    events: Events,
    gzip: bool,
    /// Small JSON files by path.
    files: HashMap<String, Bytes>,
    /// Blobs by the path they had in the archive.
    blobs: HashMap<String, Blob>,
    /// Symbolic links in the archive (docker deduplicates identical layers with them).
    links: HashMap<String, String>,
    /// Digests this import stored that were not in the store before.
    new_blobs: Vec<Digest>,
    /// Blobs this import linked into a repository that did not link them before.
    new_links: Vec<(RepoName, Digest)>,
    pushed: u64,
    existing: u64,
}

/// Reads an archive and pushes the image it holds into `options.repo`. Runs on a blocking
/// thread.
pub fn import(
    state: Arc<AppState>,
    reader: impl Read,
    options: PushOptions,
    events: Events,
) -> Result<TransferResult, TransferError> {
    let mut importer = Importer {
        state,
        handle: Handle::current(),
        events,
        gzip: options.gzip,
        files: HashMap::new(),
        blobs: HashMap::new(),
        links: HashMap::new(),
        new_blobs: Vec::new(),
        new_links: Vec::new(),
        pushed: 0,
        existing: 0,
    };
    let result = importer
        .read_archive(reader, &options.source)
        .and_then(|()| importer.finish(&options));
    if result.is_err() {
        importer.clean_up();
    }
    result
}

/// Pushes an archive file the daemon opened itself. A docker-archive whose layers were all
/// pushed before (the same uncompressed content, compressed the same way) is recorded from its
/// small JSON files alone: its layers are skipped, not read. Anything else is read in full.
pub fn import_file(
    state: Arc<AppState>,
    mut file: std::fs::File,
    options: PushOptions,
    events: Events,
) -> Result<TransferResult, TransferError> {
    use std::io::{Seek, SeekFrom};
    let mut importer = Importer {
        state: state.clone(),
        handle: Handle::current(),
        events: events.clone(),
        gzip: options.gzip,
        files: HashMap::new(),
        blobs: HashMap::new(),
        links: HashMap::new(),
        new_blobs: Vec::new(),
        new_links: Vec::new(),
        pushed: 0,
        existing: 0,
    };
    let mut magic = [0u8; 2];
    let compressed_archive = read_full(&mut file, &mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0))?;
    if options.gzip && !compressed_archive {
        match importer.known_layers(&file, &options) {
            Ok(Some(result)) => return Ok(result),
            Ok(None) => {}
            Err(e) => {
                importer.clean_up();
                return Err(e);
            }
        }
        file.seek(SeekFrom::Start(0))?;
    }
    import(state, file, options, events)
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn is_json_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".json") || matches!(name, "oci-layout" | "repositories" | "VERSION" | "json")
}

/// `blobs/<algorithm>/<hex>` of an OCI layout.
fn oci_blob_digest(path: &str) -> Option<Result<Digest, TransferError>> {
    let rest = path.strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    Some(
        format!("{algorithm}:{hex}")
            .parse()
            .map_err(|e| TransferError::Format(format!("{path}: {e}"))),
    )
}

/// Whether `block` is a tar header: 512 bytes whose checksum field matches their sum (with
/// the field itself counted as spaces), as every tar writer (v7, ustar, GNU, pax) makes it.
/// An all-zero block is the end of an empty archive, which the reader handles itself.
fn is_tar_header(block: &[u8]) -> bool {
    let Some(block) = block.get(..512) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c| c == ' ' || c == '\0'))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

/// Reads until `buf` is full or the input ends.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One gzip member holding `data`. Content that does not shrink (already compressed or
/// random) is stored in deflate's uncompressed blocks, which costs no CPU and no space.
fn gzip_member(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    let sample = &data[..data.len().min(64 * 1024)];
    let mut probe = GzEncoder::new(Vec::with_capacity(sample.len()), Compression::fast());
    probe.write_all(sample)?;
    let probed = probe.finish()?;
    let level = if probed.len() * 100 > sample.len() * 95 {
        Compression::none()
    } else {
        Compression::fast()
    };
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 1024), level);
    encoder.write_all(data)?;
    encoder.finish()
}

impl Importer {
    fn send(&self, event: TransferEvent) -> Result<(), TransferError> {
        self.events
            .blocking_send(event)
            .map_err(|_| TransferError::Cancelled)
    }

    fn read_archive(&mut self, reader: impl Read, source: &str) -> Result<(), TransferError> {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let head = reader.fill_buf()?;
        if head.is_empty() {
            return Err(TransferError::Format(format!(
                "{source} is empty: expected a docker-archive or an OCI layout"
            )));
        }
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let mut input: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        // A tar starts with a header block whose checksum holds: anything else (a text file,
        // a zip, a gzip of something else) is named as what it is not, rather than reported
        // as a broken tar.
        let mut first = vec![0u8; 512];
        let read = read_full(&mut input, &mut first).map_err(|e| {
            TransferError::Format(format!("{source}: corrupt or truncated gzip: {e}"))
        })?;
        first.truncate(read);
        if !is_tar_header(&first) {
            return Err(TransferError::Format(format!(
                "unknown format: {source} is not a docker save / OCI archive (tar or tar.gz){}",
                if gzip {
                    " — it is gzip-compressed, but not a tar"
                } else {
                    ""
                }
            )));
        }
        let input = std::io::Cursor::new(first).chain(input);
        let mut archive = tar::Archive::new(input);
        let entries = archive
            .entries()
            .map_err(|e| TransferError::Format(format!("not a tar archive: {e}")))?;
        let mut any = false;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| TransferError::Format(format!("corrupt or truncated tar: {e}")))?;
            any = true;
            let path = normalize(&entry.path()?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name()? {
                    let target = target.to_string_lossy().into_owned();
                    let base = if kind.is_symlink() {
                        path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
                    } else {
                        ""
                    };
                    let resolved = normalize(&format!("{base}/{target}"));
                    self.links.insert(path, resolved);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.header().size()?;
            match oci_blob_digest(&path) {
                Some(digest) => self.oci_blob(&mut entry, &path, digest?, size)?,
                None if is_json_name(&path) => {
                    if size > MAX_JSON {
                        return Err(TransferError::Format(format!(
                            "{path} is {size} bytes: too large for the JSON file it should be"
                        )));
                    }
                    let mut data = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut data).map_err(|e| {
                        TransferError::Format(format!("corrupt or truncated tar at {path}: {e}"))
                    })?;
                    self.files.insert(path, Bytes::from(data));
                }
                None => self.layer(&mut entry, &path, size)?,
            }
        }
        if !any {
            return Err(TransferError::Format(
                "the archive holds no files: expected a docker-archive or an OCI layout".into(),
            ));
        }
        Ok(())
    }

    /// Lists a seekable archive's entries (reading only its JSON files) and, when it is a
    /// docker-archive whose every layer is already stored compressed, records the image
    /// without reading the layers. `None`: it is not, read it all.
    fn known_layers(
        &mut self,
        file: &std::fs::File,
        options: &PushOptions,
    ) -> Result<Option<TransferResult>, TransferError> {
        let mut archive = tar::Archive::new(file);
        let entries = match archive.entries_with_seek() {
            Ok(entries) => entries,
            Err(_) => return Ok(None),
        };
        let mut layers: HashMap<String, u64> = HashMap::new();
        for entry in entries {
            let Ok(mut entry) = entry else {
                return Ok(None);
            };
            let path = normalize(&entry.path()?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name()? {
                    let base = if kind.is_symlink() {
                        path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
                    } else {
                        ""
                    };
                    let resolved = normalize(&format!("{base}/{}", target.to_string_lossy()));
                    self.links.insert(path, resolved);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.header().size()?;
            if is_json_name(&path) && size <= MAX_JSON {
                let mut data = Vec::with_capacity(size as usize);
                if entry.read_to_end(&mut data).is_err() {
                    return Ok(None);
                }
                self.files.insert(path, Bytes::from(data));
            } else {
                layers.insert(path, size);
            }
        }
        let Some(manifest) = self.files.get("manifest.json").cloned() else {
            return Ok(None);
        };
        let mut entries: Vec<DockerEntry> = match serde_json::from_slice(&manifest) {
            Ok(entries) => entries,
            Err(_) => return Ok(None),
        };
        if entries.len() != 1 {
            return Ok(None);
        }
        let entry = entries.remove(0);
        let Some(config) = self.file_at(&entry.config).cloned() else {
            return Ok(None);
        };
        let Ok(config) = serde_json::from_slice::<ImageConfig>(&config) else {
            return Ok(None);
        };
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Ok(None);
        }
        let mut known = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let Ok(diff_id) = diff_id.parse::<Digest>() else {
                return Ok(None);
            };
            let cached = self
                .state
                .meta
                .read()
                .layers
                .get(&(diff_id, "gzip".to_string()))
                .copied();
            let Some((digest, size)) = cached else {
                return Ok(None);
            };
            if self.handle.block_on(self.state.store.stat(&digest))? != Some(size) {
                return Ok(None);
            }
            let mut resolved = normalize(path);
            for _ in 0..16 {
                match self.links.get(&resolved) {
                    Some(target) => resolved = target.clone(),
                    None => break,
                }
            }
            if !layers.contains_key(&resolved) {
                return Ok(None);
            }
            known.push((resolved, digest, size, diff_id));
        }
        for (path, digest, size, diff_id) in known {
            self.send(TransferEvent::BlobStarted {
                name: path.clone(),
                size: Some(size),
            })?;
            self.done(&path, digest, size, true)?;
            self.blobs.insert(
                path,
                Blob {
                    digest,
                    size,
                    diff_id: Some(diff_id),
                    compressed: true,
                },
            );
        }
        self.finish_docker(options).map(Some)
    }

    /// A blob of an OCI layout: stored as it is, under the digest its name says.
    fn oci_blob(
        &mut self,
        entry: &mut dyn Read,
        path: &str,
        digest: Digest,
        size: u64,
    ) -> Result<(), TransferError> {
        let known = self
            .handle
            .block_on(self.state.store.stat(&digest))?
            .is_some();
        if size <= MAX_JSON {
            // Small blobs are read whole: manifests and configs are among them.
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(|e| {
                TransferError::Format(format!("corrupt or truncated tar at {path}: {e}"))
            })?;
            let data = Bytes::from(data);
            if !known {
                self.send(TransferEvent::BlobStarted {
                    name: path.to_string(),
                    size: Some(size),
                })?;
                self.handle
                    .block_on(self.state.store.put(data.clone(), Some(&digest)))
                    .map_err(|e| mismatch(path, e))?;
                self.new_blobs.push(digest);
            }
            if data.first() == Some(&b'{') {
                self.files.insert(path.to_string(), data);
            }
        } else if known {
            std::io::copy(entry, &mut std::io::sink()).map_err(|e| {
                TransferError::Format(format!("corrupt or truncated tar at {path}: {e}"))
            })?;
        } else {
            let (stored, _) = self.stream_blob(entry, path, size, Some(digest), false)?;
            debug_assert_eq!(stored, digest);
        }
        self.done(path, digest, size, known)?;
        self.blobs.insert(
            path.to_string(),
            Blob {
                digest,
                size,
                diff_id: None,
                compressed: false,
            },
        );
        Ok(())
    }

    /// A docker-archive layer: compressed on the way in unless it already is.
    fn layer(&mut self, entry: &mut dyn Read, path: &str, size: u64) -> Result<(), TransferError> {
        let compress = self.gzip;
        let (digest, diff_id) = self.stream_blob(entry, path, size, None, compress)?;
        let stored = self
            .handle
            .block_on(self.state.store.stat(&digest))?
            .unwrap_or(size);
        self.blobs.insert(
            path.to_string(),
            Blob {
                digest,
                size: stored,
                diff_id: Some(diff_id),
                compressed: compress,
            },
        );
        Ok(())
    }

    fn done(
        &mut self,
        path: &str,
        digest: Digest,
        size: u64,
        existed: bool,
    ) -> Result<(), TransferError> {
        if existed {
            self.existing += 1;
        } else {
            self.pushed += 1;
        }
        self.send(TransferEvent::BlobDone {
            name: path.to_string(),
            digest: digest.to_string(),
            size,
            status: if existed {
                BlobStatus::Exists
            } else {
                BlobStatus::Pushed
            },
        })
    }

    /// Streams `size` bytes into the store (gzip-compressing them when asked); returns the
    /// stored digest and the digest of the bytes as they came.
    fn stream_blob(
        &mut self,
        entry: &mut dyn Read,
        path: &str,
        size: u64,
        expected: Option<Digest>,
        compress: bool,
    ) -> Result<(Digest, Digest), TransferError> {
        self.send(TransferEvent::BlobStarted {
            name: path.to_string(),
            size: Some(size),
        })?;
        let store = self.state.store.clone();
        let id: UploadId = self.handle.block_on(store.upload_start())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let writer = {
            let store = store.clone();
            self.handle.spawn(async move {
                let body = futures_util::stream::unfold(rx, |mut rx| async {
                    rx.recv().await.map(|item| (item, rx))
                });
                store.upload_write(&id, None, body).await
            })
        };
        let mut raw = Sha256::new();
        let mut sent_since = 0u64;
        let mut total = 0u64;
        let mut pending: VecDeque<std::thread::JoinHandle<std::io::Result<Vec<u8>>>> =
            VecDeque::new();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let read_result: Result<(), TransferError> = (|| {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let n = read_full(entry, &mut chunk).map_err(|e| {
                    TransferError::Format(format!("corrupt or truncated tar at {path}: {e}"))
                })?;
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                raw.update(&chunk);
                total += n as u64;
                sent_since += n as u64;
                if compress {
                    pending.push_back(std::thread::spawn(move || gzip_member(&chunk)));
                    while pending.len() >= parallel {
                        self.forward(&tx, &mut pending)?;
                    }
                } else if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                    return Err(TransferError::Io(std::io::Error::other(
                        "the store stopped",
                    )));
                }
                if sent_since >= PROGRESS_EVERY {
                    sent_since = 0;
                    self.send(TransferEvent::BlobProgress {
                        name: path.to_string(),
                        bytes: total,
                    })?;
                }
            }
            while !pending.is_empty() {
                self.forward(&tx, &mut pending)?;
            }
            Ok(())
        })();
        drop(tx);
        let written = self
            .handle
            .block_on(writer)
            .map_err(|e| TransferError::Io(std::io::Error::other(e)))?;
        if let Err(e) = read_result.and(written.map(|_| ()).map_err(TransferError::from)) {
            let _ = self.handle.block_on(store.upload_cancel(&id));
            return Err(e);
        }
        if total != size {
            let _ = self.handle.block_on(store.upload_cancel(&id));
            return Err(TransferError::Format(format!(
                "the archive is truncated: {path} should hold {size} bytes but has {total}"
            )));
        }
        let diff_id = Digest::from_bytes(raw.finalize().into());
        let digest = match expected {
            Some(expected) => {
                let existed = self.handle.block_on(store.stat(&expected))?.is_some();
                self.handle
                    .block_on(store.upload_finish(&id, &expected))
                    .map_err(|e| mismatch(path, e))?;
                if !existed {
                    self.new_blobs.push(expected);
                }
                self.done(path, expected, size, existed)?;
                expected
            }
            None => {
                let (digest, new) = self.handle.block_on(store.upload_finish_computed(&id))?;
                let existed = !new;
                if !existed {
                    self.new_blobs.push(digest);
                }
                let stored = self.handle.block_on(store.stat(&digest))?.unwrap_or(0);
                self.done(path, digest, stored, existed)?;
                digest
            }
        };
        Ok((digest, diff_id))
    }

    fn forward(
        &self,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        pending: &mut VecDeque<std::thread::JoinHandle<std::io::Result<Vec<u8>>>>,
    ) -> Result<(), TransferError> {
        let Some(job) = pending.pop_front() else {
            return Ok(());
        };
        let compressed = job
            .join()
            .map_err(|_| TransferError::Io(std::io::Error::other("compression failed")))??;
        tx.blocking_send(Ok(Bytes::from(compressed)))
            .map_err(|_| TransferError::Io(std::io::Error::other("the store stopped")))
    }

    /// Follows the archive's symbolic links to the blob a path means.
    fn blob_at(&self, path: &str) -> Option<&Blob> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(blob) = self.blobs.get(&path) {
                return Some(blob);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }

    fn file_at(&self, path: &str) -> Option<&Bytes> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(file) = self.files.get(&path) {
                return Some(file);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }

    fn finish(&mut self, options: &PushOptions) -> Result<TransferResult, TransferError> {
        if self.files.contains_key("manifest.json") {
            self.finish_docker(options)
        } else if self.files.contains_key("index.json") {
            self.finish_oci(options)
        } else {
            Err(TransferError::Format(
                "unknown archive format: no manifest.json (docker-archive) or index.json (OCI \
                 layout) in it"
                    .into(),
            ))
        }
    }

    /// Links the blobs an image needs into the repository.
    fn link(&mut self, repo: &RepoName, blobs: &[(Digest, u64)]) -> Result<(), TransferError> {
        for (digest, size) in blobs {
            let _guard = self.handle.block_on(self.state.lock_blob(digest));
            let new = self
                .handle
                .block_on(self.state.meta.link_blob(repo, *digest, *size))
                .map_err(|e| TransferError::Image(e.into()))?;
            if new {
                self.new_links.push((repo.clone(), *digest));
            }
        }
        Ok(())
    }

    fn finish_docker(&mut self, options: &PushOptions) -> Result<TransferResult, TransferError> {
        let manifest = self.files.get("manifest.json").cloned().unwrap_or_default();
        let entries: Vec<DockerEntry> = serde_json::from_slice(&manifest)
            .map_err(|e| TransferError::Format(format!("manifest.json: {e}")))?;
        let entry = match entries.as_slice() {
            [one] => one,
            [] => return Err(TransferError::Format("manifest.json lists no image".into())),
            many => {
                return Err(TransferError::Format(format!(
                    "the archive holds {} images; save and push them one at a time",
                    many.len()
                )))
            }
        };
        let tag = match &options.tag {
            Some(tag) => Some(tag.clone()),
            None => match entry.repo_tags.as_deref().unwrap_or_default() {
                [one] => Some(tag_of(one)?),
                [] => {
                    return Err(TransferError::Format(
                        "the archive's image has no tag: give one as REPO:TAG".into(),
                    ))
                }
                many => {
                    return Err(TransferError::Format(format!(
                        "the archive's image has {} tags ({}): choose one as REPO:TAG",
                        many.len(),
                        many.join(", ")
                    )))
                }
            },
        };
        let config_bytes = self.file_at(&entry.config).cloned().ok_or_else(|| {
            TransferError::Missing(format!(
                "manifest.json names the config {} which is not in the archive",
                entry.config
            ))
        })?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| TransferError::Format(format!("{}: {e}", entry.config)))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(TransferError::Mismatch(format!(
                "the config lists {} layers (rootfs.diff_ids) but manifest.json {}",
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let mut blob = self.blob_at(path).cloned().ok_or_else(|| {
                TransferError::Missing(format!(
                    "manifest.json names the layer {path} which is not in the archive"
                ))
            })?;
            let want: Digest = diff_id
                .parse()
                .map_err(|e| TransferError::Format(format!("config diff_id {diff_id}: {e}")))?;
            let actual = blob.diff_id.unwrap_or(blob.digest);
            if actual != want {
                return Err(TransferError::Mismatch(format!(
                    "layer {path} does not match the image config: its content is {actual}, \
                     the config says {want}"
                )));
            }
            if self.gzip && !blob.compressed && blob.diff_id.is_none() {
                // An OCI-style docker-archive (Docker 25+) keeps layers uncompressed in
                // blobs/: compress them from the store.
                blob = self.compress_stored(path, &blob)?;
            }
            layers.push(blob);
        }
        let config_digest = Digest::from_bytes(Sha256::digest(&config_bytes).into());
        if self
            .handle
            .block_on(self.state.store.stat(&config_digest))?
            .is_none()
        {
            self.handle.block_on(
                self.state
                    .store
                    .put(config_bytes.clone(), Some(&config_digest)),
            )?;
            // A failed push removes it again.
            self.new_blobs.push(config_digest);
        }
        let config_size = config_bytes.len() as u64;
        let layer_type = if self.gzip {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.docker.image.rootfs.diff.tar"
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config_size,
                "digest": config_digest.to_string(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": if l.compressed { layer_type } else { "application/vnd.docker.image.rootfs.diff.tar" },
                "size": l.size,
                "digest": l.digest.to_string(),
            })).collect::<Vec<_>>(),
        });
        for layer in layers.iter().filter(|l| l.compressed) {
            if let Some(diff_id) = layer.diff_id {
                let remembered = self.handle.block_on(self.state.meta.remember_layer(
                    diff_id,
                    "gzip",
                    layer.digest,
                    layer.size,
                ));
                if let Err(e) = remembered {
                    tracing::warn!("cannot remember layer {diff_id}: {e}");
                }
            }
        }
        let mut needed: Vec<(Digest, u64)> = vec![(config_digest, config_size)];
        needed.extend(layers.iter().map(|l| (l.digest, l.size)));
        self.record(
            options,
            tag,
            needed,
            DOCKER_MANIFEST,
            manifest.to_string().into(),
        )
    }

    /// Gzips a blob already in the store (uncompressed layers of newer docker-archives).
    fn compress_stored(&mut self, path: &str, blob: &Blob) -> Result<Blob, TransferError> {
        let store = self.state.store.clone();
        let stream = self
            .handle
            .block_on(store.read(&blob.digest, 0..blob.size))?;
        let mut reader = StreamReader::new(stream, self.handle.clone());
        let (digest, diff_id) = self.stream_blob(&mut reader, path, blob.size, None, true)?;
        Ok(Blob {
            digest,
            size: self.handle.block_on(store.stat(&digest))?.unwrap_or(0),
            diff_id: Some(diff_id),
            compressed: true,
        })
    }

    fn finish_oci(&mut self, options: &PushOptions) -> Result<TransferResult, TransferError> {
        let index_bytes = self.files.get("index.json").cloned().unwrap_or_default();
        let index: images::Doc = serde_json::from_slice(&index_bytes)
            .map_err(|e| TransferError::Format(format!("index.json: {e}")))?;
        let descriptors = index.manifests.unwrap_or_default();
        const REF_NAME: &str = "org.opencontainers.image.ref.name";
        let ref_name = |d: &images::Descriptor| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME).cloned())
        };
        let chosen = match descriptors.as_slice() {
            [] => return Err(TransferError::Format("index.json lists no image".into())),
            [one] => one.clone(),
            many => {
                let wanted = options.tag.as_ref().map(|t| t.to_string());
                let matching: Vec<&images::Descriptor> = many
                    .iter()
                    .filter(|d| wanted.is_some() && ref_name(d) == wanted)
                    .collect();
                match matching.as_slice() {
                    [one] => (*one).clone(),
                    _ => {
                        let names: Vec<String> = many.iter().filter_map(ref_name).collect();
                        return Err(TransferError::Format(format!(
                            "the layout holds {} images ({}); name the one to push as REPO:TAG",
                            many.len(),
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        let tag = match &options.tag {
            Some(tag) => Some(tag.clone()),
            None => match ref_name(&chosen) {
                Some(name) => Some(tag_of(&name)?),
                None => {
                    return Err(TransferError::Format(
                        "the layout's image has no ref.name: give a tag as REPO:TAG".into(),
                    ))
                }
            },
        };
        let digest = chosen
            .parsed_digest("index.json")
            .map_err(|e| TransferError::Format(e.to_string()))?;
        let result = self.push_oci_manifest(options, &digest, tag)?;
        Ok(result)
    }

    /// Pushes a manifest of the layout and, first, everything it references.
    fn push_oci_manifest(
        &mut self,
        options: &PushOptions,
        digest: &Digest,
        tag: Option<Tag>,
    ) -> Result<TransferResult, TransferError> {
        let path = format!("blobs/sha256/{}", digest.hex());
        let bytes = self.files.get(&path).cloned().ok_or_else(|| {
            TransferError::Missing(format!(
                "the layout names manifest {digest}, which it does not hold"
            ))
        })?;
        let (doc, media_type, kind) = images::parse(None, &bytes)
            .map_err(|e| TransferError::Format(format!("manifest {digest}: {e}")))?;
        let mut needed = Vec::new();
        match kind {
            images::Kind::Index => {
                for child in doc.manifests.unwrap_or_default() {
                    let child = child
                        .parsed_digest("manifests[]")
                        .map_err(|e| TransferError::Format(e.to_string()))?;
                    self.push_oci_manifest(options, &child, None)?;
                }
            }
            images::Kind::Image => {
                let config = doc.config.into_iter();
                for d in config.chain(doc.layers.unwrap_or_default()) {
                    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    let blob_digest = d
                        .parsed_digest("descriptor")
                        .map_err(|e| TransferError::Format(e.to_string()))?;
                    let blob = self
                        .blob_at(&format!("blobs/sha256/{}", blob_digest.hex()))
                        .cloned()
                        .ok_or_else(|| {
                            TransferError::Missing(format!(
                                "manifest {digest} names blob {blob_digest}, which the layout does not hold"
                            ))
                        })?;
                    needed.push((blob.digest, blob.size));
                }
            }
        }
        let media_type = if media_type == OCI_INDEX || media_type == OCI_MANIFEST {
            media_type
        } else {
            media_type.to_string()
        };
        self.record(options, tag, needed, &media_type, bytes)
    }

    fn record(
        &mut self,
        options: &PushOptions,
        tag: Option<Tag>,
        blobs: Vec<(Digest, u64)>,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<TransferResult, TransferError> {
        self.handle
            .block_on(
                self.state
                    .meta
                    .ensure_repo(&options.repo, self.state.config.create_on_push),
            )
            .map_err(|e| TransferError::Image(e.into()))?;
        self.link(&options.repo, &blobs)?;
        let reference = match &tag {
            Some(tag) => Reference::Tag(tag.clone()),
            None => Reference::Digest(Digest::from_bytes(Sha256::digest(&manifest).into())),
        };
        let stored = self.handle.block_on(images::put_manifest(
            &self.state,
            &options.repo,
            reference,
            Some(media_type.to_string()),
            manifest,
        ))?;
        Ok(TransferResult {
            repository_name: options.repo.to_string(),
            image_tag: tag.map(|t| t.to_string()),
            image_digest: stored.digest.to_string(),
            image_manifest_media_type: stored.media_type,
            image_size_in_bytes: stored.image_size,
            blobs_pushed: self.pushed,
            blobs_existing: self.existing,
            docker_reference: None,
        })
    }

    /// After a failure: unlink what this import linked that no image of the repository uses
    /// (a refused tag leaves the repository as it was), and remove the blobs it stored that
    /// nothing else uses.
    fn clean_up(&mut self) {
        let mut by_repo: HashMap<RepoName, Vec<Digest>> = HashMap::new();
        for (repo, digest) in std::mem::take(&mut self.new_links) {
            by_repo.entry(repo).or_default().push(digest);
        }
        for (repo, digests) in by_repo {
            match self
                .handle
                .block_on(self.state.meta.release_blobs(&repo, digests))
            {
                Ok(freed) => self
                    .handle
                    .block_on(async { self.state.release(&repo, freed) }),
                Err(e) => tracing::warn!(%repo, "cannot unlink a failed push's blobs: {e}"),
            }
        }
        for digest in std::mem::take(&mut self.new_blobs) {
            self.handle.block_on(self.state.collect_if_unused(&digest));
        }
    }
}

fn mismatch(path: &str, e: crate::storage::StoreError) -> TransferError {
    match e {
        crate::storage::StoreError::DigestMismatch { expected, actual } => TransferError::Mismatch(
            format!("{path}: its content is {actual}, not the {expected} its name says"),
        ),
        other => other.into(),
    }
}

/// The tag of `name:tag` / `host:port/repo:tag`.
fn tag_of(reference: &str) -> Result<Tag, TransferError> {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    let tag = match reference[slash..].rsplit_once(':') {
        Some((_, tag)) => tag,
        None => reference,
    };
    tag.parse()
        .map_err(|e| TransferError::Format(format!("the archive's tag {reference:?}: {e}")))
}

/// A blocking `Read` over the store's async chunk stream.
pub struct StreamReader {
    stream: crate::storage::BlobStream,
    handle: Handle,
    current: Bytes,
}

impl StreamReader {
    pub fn new(stream: crate::storage::BlobStream, handle: Handle) -> Self {
        StreamReader {
            stream,
            handle,
            current: Bytes::new(),
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use futures_util::StreamExt;
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_members_concatenate_into_one_stream() {
        use std::io::Read;
        let text = b"hello hello hello hello ".repeat(10_000);
        let random: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut joined = gzip_member(&text).unwrap();
        joined.extend(gzip_member(&random).unwrap());
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&joined[..])
            .read_to_end(&mut out)
            .unwrap();
        let mut want = text.clone();
        want.extend(&random);
        assert_eq!(out, want);
        assert!(gzip_member(&text).unwrap().len() < text.len() / 10);
    }

    #[test]
    fn tags_and_paths() {
        assert_eq!(tag_of("busybox:1").unwrap().as_str(), "1");
        assert_eq!(tag_of("localhost:5000/team/app:v2").unwrap().as_str(), "v2");
        assert_eq!(tag_of("latest").unwrap().as_str(), "latest");
        assert_eq!(normalize("./a/../b//c"), "b/c");
        assert!(is_json_name("abc/json"));
        assert!(is_json_name("manifest.json"));
        assert!(!is_json_name("abc/layer.tar"));
        assert!(oci_blob_digest("blobs/sha256/xyz").unwrap().is_err());
        assert!(oci_blob_digest("abc/layer.tar").is_none());
    }
}
