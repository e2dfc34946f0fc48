//! The one way blob bytes leave the disk: a range of a blob as a stream of chunks.
//!
//! Big ranges are read on blocking threads, a window (up to 4 MiB of file) at a time, one
//! window ahead of the consumer (a bounded queue). Before each window the reader asks the
//! kernel whether it is in the page cache:
//! - **in memory**: the window is memory-mapped a megabyte at a time and the mapping handed
//!   out as it is (see [`super::map`]), so a hot blob goes from the page cache to the socket
//!   without a copy of ours; encrypted blobs are decrypted straight from the mapping;
//! - **not in memory, and the read cache admits the blob and makes room** ([`Cold::Fill`]):
//!   read through the page cache into a pooled 4 MiB buffer, the kernel reading ahead in large
//!   pages into memory the cache just freed, so the blob's next read comes from memory;
//! - **otherwise** (a blob read for the first time, too big for the cache, or a fill that
//!   found only fresh memory, which is slow on VMs: see [`super::cache`]): O_DIRECT into a
//!   pooled buffer, which runs at the disk's speed and leaves the page cache alone.
//!
//! Windows are decided one by one, so a blob partly in memory is read partly from each.
//! Encrypted blobs are read in whole segments: a range reads and decrypts only the segments
//! it touches (at most 64 at a time, 4 MiB of file), on a second thread, so that the disk
//! never waits for the cipher; a segment that fails authentication ends the stream with an
//! error, so a damaged blob is never served as wrong bytes.

use super::buf::{set_direct, Buf, ALIGN, BUF_SIZE};
use super::cache::{self, ReadCache};
use super::crypt::{segment_offset, Keys, Opener, HEADER, PLAIN, SEGMENT};
use super::map::Mapped;
use bytes::Bytes;
use ecrl::names::Digest;
use futures_util::Stream;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A blob's bytes, in order.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Ranges up to this size are read in one go into an exact-size allocation.
const SMALL: u64 = 256 * 1024;
/// Chunks waiting ahead of the consumer.
const AHEAD: usize = 1;
/// Bytes mapped at a time from the page cache: small enough that little of the page cache
/// is mapped (and counted in our RSS) at once, big enough that mapping costs little next to
/// sending.
const MAP_CHUNK: usize = 1 << 20;
/// Segments mapped at a time: a quarter of a window.
const MAP_SEGMENTS: u64 = (MAP_CHUNK / SEGMENT) as u64;

/// What a read does with the parts of a blob that are not in the page cache.
#[derive(Clone)]
pub enum Cold {
    /// Reads them with O_DIRECT, leaving the page cache as it is.
    Direct,
    /// Reads them into the page cache when the read cache admits the blob and makes room.
    Fill {
        cache: Arc<ReadCache>,
        digest: Digest,
    },
}

/// A range of a blob's content; `keys` when the blob is encrypted. `direct` false reads
/// what is not in memory through the page cache instead of with O_DIRECT (for filesystems
/// that refuse it).
pub async fn open(
    path: PathBuf,
    range: Range<u64>,
    cold: Cold,
    direct: bool,
    keys: Option<Arc<Keys>>,
) -> io::Result<BlobStream> {
    match keys {
        None => open_plain(path, range, cold, direct).await,
        Some(keys) => open_sealed(path, range, cold, direct, keys).await,
    }
}

fn one_chunk(bytes: Bytes) -> BlobStream {
    let chunks = if bytes.is_empty() {
        vec![]
    } else {
        vec![Ok(bytes)]
    };
    Box::pin(futures_util::stream::iter(chunks))
}

fn stream_from(rx: mpsc::Receiver<io::Result<Bytes>>) -> BlobStream {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// An open blob file and how its windows are read.
struct Source {
    /// For mappings, residency, fills and reads; O_DIRECT is switched on for direct reads
    /// (one descriptor per read, as many as before the read cache).
    file: Arc<File>,
    /// Whether direct reads use O_DIRECT (the store asks for it and the filesystem takes it).
    direct: bool,
    file_len: u64,
    /// `Cold::Fill` until the cache refuses or a fill turns out slow.
    cold: Cold,
    /// This read has started filling the page cache.
    filling: bool,
    /// The CPU time this read's fills took, and the bytes they filled.
    fill_cpu: std::time::Duration,
    fill_bytes: u64,
}

impl Source {
    fn open(path: &Path, cold: Cold, direct: bool) -> io::Result<Source> {
        let file = Arc::new(File::open(path)?);
        let file_len = file.metadata()?.len();
        let cold = match cold {
            Cold::Fill { cache, digest } if cache.admit(&digest, path, file_len) => {
                // Let the kernel read ahead generously, in large pages.
                // SAFETY: fadvise on an fd we own, with integer arguments.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
                Cold::Fill { cache, digest }
            }
            _ => Cold::Direct,
        };
        Ok(Source {
            file,
            direct,
            file_len,
            cold,
            filling: false,
            fill_cpu: std::time::Duration::ZERO,
            fill_bytes: 0,
        })
    }

    /// Whether the window `at..at + len` is to be mapped: all of it is in the page cache,
    /// and this read is not filling it. (Once a read fills, the kernel reads ahead of it into
    /// memory the cache must free as it goes: the windows read ahead go through
    /// `read_window` too, so that each one makes its room.)
    fn in_memory(&self, at: u64, len: u64) -> io::Result<bool> {
        if self.filling {
            return Ok(false);
        }
        let end = (at + len).min(self.file_len);
        if at >= end {
            return Ok(true);
        }
        cache::resident(&self.file, at, end - at)
    }

    /// Reads `buf.len()` bytes (or to the end of the file) from the aligned offset `at`:
    /// through the page cache when this read fills it and the cache made room, else with
    /// O_DIRECT when the file has it. Returns the bytes read.
    fn read_window(&mut self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        if let Cold::Fill { cache, digest } = &self.cold {
            let n = (buf.len() as u64).min(self.file_len.saturating_sub(at));
            if cache.take(digest, n) {
                self.filling = true;
                let before = cache::thread_cpu();
                let read = self.buffered(buf, at);
                let cpu = cache::thread_cpu().saturating_sub(before);
                self.fill_cpu += cpu;
                self.fill_bytes += n;
                if read.is_err() {
                    cache.untake(digest, n);
                } else if cache::fresh_memory(cpu, n, self.fill_cpu, self.fill_bytes) {
                    // The kernel took the reserve back, or another process took the pages
                    // just freed: the rest of the read goes direct.
                    tracing::debug!(
                        cpu_us = self.fill_cpu.as_micros() as u64,
                        bytes = self.fill_bytes,
                        "the page cache fills slowly: reading on with O_DIRECT"
                    );
                    self.cold = Cold::Direct;
                    self.filling = false;
                }
                return read;
            }
            self.cold = Cold::Direct;
            self.filling = false;
        }
        if self.direct {
            let read = match set_direct(&self.file, true) {
                Ok(_) => read_full(&self.file, buf, at),
                Err(e) => Err(e),
            };
            match read {
                // The filesystem does not take O_DIRECT (at all, or for this read).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = false,
                other => return other,
            }
        }
        self.buffered(buf, at)
    }

    /// Reads through the page cache.
    fn buffered(&self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        set_direct(&self.file, false)?;
        read_full(&self.file, buf, at)
    }

    /// Reads the first `buf.len()` bytes (an encrypted blob's header): from the page cache
    /// when they are there, else with O_DIRECT. Fills nothing: whether the read fills is
    /// decided window by window.
    fn read_head(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if cache::resident(&self.file, 0, buf.len() as u64)? {
            return self.buffered(buf, 0);
        }
        let cold = std::mem::replace(&mut self.cold, Cold::Direct);
        let read = self.read_window(buf, 0);
        self.cold = cold;
        read
    }

    fn map(&self, at: u64, len: usize) -> io::Result<Mapped> {
        Mapped::new(&self.file, self.file_len, at, len)
    }
}

async fn open_plain(
    path: PathBuf,
    range: Range<u64>,
    cold: Cold,
    direct: bool,
) -> io::Result<BlobStream> {
    let len = range.end.saturating_sub(range.start);
    if len <= SMALL {
        let bytes = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
            let file = File::open(&path)?;
            let mut data = vec![0u8; len as usize];
            let n = read_full(&file, &mut data, range.start)?;
            data.truncate(n);
            Ok(Bytes::from(data))
        })
        .await
        .map_err(io::Error::other)??;
        return Ok(one_chunk(bytes));
    }
    let source = tokio::task::spawn_blocking(move || Source::open(&path, cold, direct))
        .await
        .map_err(io::Error::other)??;
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || produce(source, range, tx));
    Ok(stream_from(rx))
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "blob shorter than the range read",
    )
}

/// Sends `range` of a plain blob window by window, until the end, an error, or the consumer
/// goes away.
fn produce(mut source: Source, range: Range<u64>, tx: mpsc::Sender<io::Result<Bytes>>) {
    if range.end > source.file_len {
        let _ = tx.blocking_send(Err(short()));
        return;
    }
    let mut pos = range.start;
    while pos < range.end {
        // The window around `pos`, aligned as O_DIRECT needs.
        let at = pos - pos % ALIGN as u64;
        let want = ((range.end - at) as usize).min(BUF_SIZE);
        match source.in_memory(at, want as u64) {
            Ok(true) => {
                let end = at + want as u64;
                while pos < end {
                    let n = ((end - pos) as usize).min(MAP_CHUNK);
                    let item = source.map(pos, n).map(Bytes::from_owner);
                    pos += n as u64;
                    if !send(&tx, item) {
                        return;
                    }
                }
            }
            Ok(false) => {
                if !send(&tx, read_plain(&mut source, at, &mut pos, range.end)) {
                    return;
                }
            }
            Err(e) => {
                send(&tx, Err(e));
                return;
            }
        }
    }
}

/// Sends one item; false when the stream is to end (the consumer is gone, or it was an error).
fn send(tx: &mpsc::Sender<io::Result<Bytes>>, item: io::Result<Bytes>) -> bool {
    let stop = item.is_err();
    tx.blocking_send(item).is_ok() && !stop
}

/// Reads the window at the aligned offset `at` into a buffer; hands out the part from `pos`
/// on, and moves `pos` past it.
fn read_plain(source: &mut Source, at: u64, pos: &mut u64, end: u64) -> io::Result<Bytes> {
    let skip = (*pos - at) as usize;
    let want = ((end - at) as usize).min(BUF_SIZE);
    let rounded = (want.div_ceil(ALIGN) * ALIGN).min(BUF_SIZE);
    let mut buf = Buf::get();
    let n = source.read_window(&mut buf.spare_all()[..rounded], at)?;
    if n <= skip {
        return Err(short());
    }
    let to = n.min(want);
    buf.set_len(to);
    *pos = at + to as u64;
    Ok(Bytes::from_owner(buf).slice(skip..))
}

async fn open_sealed(
    path: PathBuf,
    range: Range<u64>,
    cold: Cold,
    direct: bool,
    keys: Arc<Keys>,
) -> io::Result<BlobStream> {
    let len = range.end.saturating_sub(range.start);
    if len <= SMALL {
        let bytes = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
            let file = File::open(&path)?;
            let mut header = vec![0u8; HEADER];
            read_full(&file, &mut header, 0)?;
            let opener = opener(&file, &keys, &header, &range)?;
            if len == 0 {
                return Ok(Bytes::new());
            }
            let (first, count, at, want) = span(&opener, &range, u64::MAX);
            let mut sealed = vec![0u8; want];
            if read_full(&file, &mut sealed, at)? < want {
                return Err(short());
            }
            let mut plain = vec![0u8; count as usize * PLAIN];
            let n = opener.open(first, &sealed, &mut plain)?;
            plain.truncate(n);
            let skip = (range.start - first * PLAIN as u64) as usize;
            Ok(Bytes::from(plain).slice(skip..skip + len as usize))
        })
        .await
        .map_err(io::Error::other)??;
        return Ok(one_chunk(bytes));
    }
    let checked = range.clone();
    let (source, opener) = tokio::task::spawn_blocking(move || {
        let mut source = Source::open(&path, cold, direct)?;
        // Into an aligned buffer: the read may be O_DIRECT.
        let mut header = Buf::get();
        source.read_head(&mut header.spare_all()[..HEADER])?;
        let opener = opener(&source.file, &keys, &header.spare_all()[..HEADER], &checked)?;
        Ok::<_, io::Error>((source, opener))
    })
    .await
    .map_err(io::Error::other)??;
    let (tx, rx) = mpsc::channel(AHEAD);
    // Reading and decrypting run on two threads. The hand-over is a rendezvous: the cipher
    // is several times faster than the disk, so the reader seldom waits for it, and a queue
    // between them would hold one more buffer.
    let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel(0);
    let lengths = opener.clone();
    let span = range.clone();
    let mapper = Mapper {
        file: source.file.clone(),
        file_len: source.file_len,
    };
    tokio::task::spawn_blocking(move || read_segments(source, &lengths, span, sealed_tx));
    tokio::task::spawn_blocking(move || open_segments(&opener, mapper, range, sealed_rx, tx));
    Ok(stream_from(rx))
}

/// The opener for an encrypted blob, its file's length checked against the header, and the
/// range against the content.
fn opener(file: &File, keys: &Keys, header: &[u8], range: &Range<u64>) -> io::Result<Opener> {
    let opener = keys.opener(header)?;
    opener.check_file_len(file.metadata()?.len())?;
    if range.end > opener.plain_len() {
        return Err(short());
    }
    Ok(opener)
}

/// The segments that hold the non-empty `range`, at most `max` of them: the first one, how
/// many, where they start in the file and how many bytes of file they take.
fn span(opener: &Opener, range: &Range<u64>, max: u64) -> (u64, u64, u64, usize) {
    let first = range.start / PLAIN as u64;
    let last = (range.end - 1) / PLAIN as u64;
    let count = (last - first + 1).min(max);
    let bytes = (count - 1) * SEGMENT as u64 + opener.segment_len(first + count - 1);
    (first, count, segment_offset(first), bytes as usize)
}

/// A whole small blob.
pub async fn read_all(path: PathBuf, keys: Option<Arc<Keys>>) -> io::Result<Bytes> {
    let Some(keys) = keys else {
        return tokio::fs::read(path).await.map(Bytes::from);
    };
    tokio::task::spawn_blocking(move || {
        let data = std::fs::read(&path)?;
        let opener = keys.opener(&data[..HEADER.min(data.len())])?;
        opener.check_file_len(data.len() as u64)?;
        let mut plain = vec![0u8; opener.plain_len() as usize];
        opener.open(0, &data[HEADER..], &mut plain)?;
        Ok(Bytes::from(plain))
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads a whole blob on the calling thread and hashes its content (decrypted when `keys`):
/// its length and digest. For `ecrl fsck`: one pass with no hand-over between threads, each
/// segment decrypted into a small buffer and hashed while it is still in the CPU's cache.
/// Windows in the page cache are mapped (no copy); the rest is read with O_DIRECT (when
/// `direct`), so that checking a whole store does not evict what pulls are served from.
pub fn hash_blob(path: &Path, direct: bool, keys: Option<&Keys>) -> io::Result<(u64, Digest)> {
    use sha2::{Digest as _, Sha256};
    let mut source = Source::open(path, Cold::Direct, direct)?;
    let file_len = source.file_len;
    let mut buf = Buf::empty();
    let (opener, mut at) = match keys {
        Some(keys) => {
            if file_len < HEADER as u64 {
                return Err(short());
            }
            let opener = with_window(&mut source, &mut buf, 0, HEADER, |header| {
                keys.opener(header)
            })?;
            opener.check_file_len(file_len)?;
            (Some(opener), HEADER as u64)
        }
        None => (None, 0),
    };
    let mut hasher = Sha256::new();
    let mut plain = vec![0u8; PLAIN];
    let mut content = 0u64;
    let mut index = 0u64;
    while at < file_len {
        // Windows start on a segment and hold whole ones (a window is 64 segments).
        let want = (file_len - at).min(BUF_SIZE as u64) as usize;
        with_window(&mut source, &mut buf, at, want, |data| {
            let Some(opener) = &opener else {
                hasher.update(data);
                content += want as u64;
                return Ok(());
            };
            let mut off = 0;
            while off < want {
                let len = (opener.segment_len(index) as usize).min(want - off);
                let n = opener.open(index, &data[off..off + len], &mut plain)?;
                hasher.update(&plain[..n]);
                content += n as u64;
                off += len;
                index += 1;
            }
            Ok(())
        })?;
        at += want as u64;
    }
    if opener.as_ref().is_some_and(|o| content != o.plain_len()) {
        return Err(short());
    }
    Ok((content, Digest::from_bytes(hasher.finalize().into())))
}

/// Hands `work` the window `at..at + want` of a file: mapped when it is in the page cache (no
/// copy), read into `buf` otherwise (taken from the pool on first use).
fn with_window<T>(
    source: &mut Source,
    buf: &mut Buf,
    at: u64,
    want: usize,
    work: impl FnOnce(&[u8]) -> io::Result<T>,
) -> io::Result<T> {
    if source.in_memory(at, want as u64)? {
        return work(&source.map(at, want)?);
    }
    if buf.spare_all().len() < BUF_SIZE {
        *buf = Buf::get();
    }
    let read_len = (want.div_ceil(ALIGN) * ALIGN).min(BUF_SIZE);
    if source.read_window(&mut buf.spare_all()[..read_len], at)? < want {
        return Err(short());
    }
    work(&buf.spare_all()[..want])
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Segments on their way to be decrypted, from segment `first` on.
struct Sealed {
    first: u64,
    data: SealedData,
}

enum SealedData {
    /// Read into a buffer: decrypted where they lie.
    Read(Buf),
    /// `count` segments in the page cache: mapped a megabyte at a time and decrypted from
    /// the mapping into a buffer, on the decrypting thread.
    InMemory { count: u64 },
}

/// The window that starts the non-empty `range` (up to 64 segments, 4 MiB of file): in
/// memory, or read into a buffer.
fn fetch_window(source: &mut Source, opener: &Opener, range: &Range<u64>) -> io::Result<Sealed> {
    let (first, count, at, want) = span(opener, range, (BUF_SIZE / SEGMENT) as u64);
    if source.in_memory(at, want as u64)? {
        return Ok(Sealed {
            first,
            data: SealedData::InMemory { count },
        });
    }
    let mut buf = Buf::get();
    // Segments start 4096-aligned; only the last one's end may need rounding up.
    let read_len = (want.div_ceil(ALIGN) * ALIGN).min(BUF_SIZE);
    let n = source.read_window(&mut buf.spare_all()[..read_len], at)?;
    if n < want {
        return Err(short());
    }
    buf.set_len(want);
    Ok(Sealed {
        first,
        data: SealedData::Read(buf),
    })
}

/// Where the plaintext after the segments of `sealed` starts.
fn after(sealed: &Sealed) -> u64 {
    let count = match &sealed.data {
        SealedData::Read(buf) => (buf.len() as u64).div_ceil(SEGMENT as u64),
        SealedData::InMemory { count } => *count,
    };
    (sealed.first + count) * PLAIN as u64
}

/// The blob file, for the decrypting thread to map windows that are in memory.
struct Mapper {
    file: Arc<File>,
    file_len: u64,
}

/// Decrypts segments [`fetch_window`] fetched; returns the part of their plaintext in `range`.
fn open_chunk(
    opener: &Opener,
    mapper: &Mapper,
    sealed: Sealed,
    range: &Range<u64>,
) -> io::Result<Bytes> {
    let Sealed { first, data } = sealed;
    let plain = match data {
        SealedData::Read(mut buf) => {
            let n = opener.open_in_place(first, &mut buf)?;
            buf.set_len(n);
            buf
        }
        SealedData::InMemory { count } => {
            let mut plain = Buf::get();
            let mut n = 0;
            let mut done = 0;
            while done < count {
                let at = first + done;
                let (_, pieces, offset, len) = span(
                    opener,
                    &(at * PLAIN as u64..range.end),
                    MAP_SEGMENTS.min(count - done),
                );
                let map = Mapped::new(&mapper.file, mapper.file_len, offset, len)?;
                n += opener.open(at, &map, &mut plain.spare_all()[n..])?;
                done += pieces;
            }
            plain.set_len(n);
            plain
        }
    };
    Ok(wanted(plain, first, range))
}

/// The part in `range` of the plaintext in `plain`, which starts at segment `first`.
fn wanted(plain: Buf, first: u64, range: &Range<u64>) -> Bytes {
    let n = plain.len();
    let base = first * PLAIN as u64;
    let from = (range.start.max(base) - base) as usize;
    let to = (range.end.min(base + n as u64) - base) as usize;
    Bytes::from_owner(plain).slice(from..to)
}

/// Fetches the segments under `range` window by window and sends them on to be decrypted,
/// until the end, an error, or the decrypting side goes away.
fn read_segments(
    mut source: Source,
    opener: &Opener,
    range: Range<u64>,
    tx: std::sync::mpsc::SyncSender<io::Result<Sealed>>,
) {
    let mut pos = range.start;
    while pos < range.end {
        let item = fetch_window(&mut source, opener, &(pos..range.end));
        if let Ok(sealed) = &item {
            pos = after(sealed);
        }
        let stop = item.is_err();
        if tx.send(item).is_err() || stop {
            return;
        }
    }
}

/// Decrypts what [`read_segments`] sends and sends the wanted part of the plaintext on.
fn open_segments(
    opener: &Opener,
    mapper: Mapper,
    range: Range<u64>,
    rx: std::sync::mpsc::Receiver<io::Result<Sealed>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    while let Ok(sealed) = rx.recv() {
        let item = sealed.and_then(|sealed| open_chunk(opener, &mapper, sealed, &range));
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}
