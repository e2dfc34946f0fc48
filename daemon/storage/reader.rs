//! The one way blob bytes leave the disk: a range of a blob as a stream of chunks.
//!
//! Big ranges are read on a blocking thread into pooled 4 MiB buffers, one chunk ahead of
//! the consumer (a bounded queue), and handed out as `Bytes` that return their buffer to the
//! pool when hyper has sent them. Two modes:
//! - [`Mode::Cold`]: O_DIRECT reads. Blobs we wrote with O_DIRECT are not in the page cache,
//!   and filling the cache on these VMs is slow (touching memory the guest freed costs about
//!   2.5 s of CPU per GiB); direct reads into hot buffers run at the disk's speed.
//! - [`Mode::Cached`]: through the page cache, which later reads are served from: the file is
//!   memory-mapped chunk by chunk and the mapping handed out as it is (see [`super::map`]),
//!   so a hot blob goes from the page cache to the socket without a copy of ours. Encrypted
//!   blobs are decrypted straight from the mapping.
//!
//! Encrypted blobs are read the same way, in whole segments: a range reads and decrypts only
//! the segments it touches (at most 64 at a time, 4 MiB of file), then hands out the wanted
//! part of the plaintext. A segment that fails authentication ends the stream with an error,
//! so a damaged blob is never served as wrong bytes.

use super::buf::{clear_direct, Buf, ALIGN, BUF_SIZE};
use super::crypt::{segment_offset, Keys, Opener, HEADER, PLAIN, SEGMENT};
use super::map::Mapped;
use bytes::Bytes;
use futures_util::Stream;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A blob's bytes, in order.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Ranges up to this size are read in one go into an exact-size allocation.
const SMALL: u64 = 256 * 1024;
/// Chunks read ahead of the consumer.
const AHEAD: usize = 1;
/// Bytes mapped at a time from the page cache, and how many such chunks wait ahead of the
/// consumer: small enough that little of the page cache is mapped (and counted in our RSS)
/// at once, big enough that mapping costs little next to sending.
const MAP_CHUNK: usize = 1 << 20;
const MAP_AHEAD: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cold,
    Cached,
}

/// A range of a blob's content; `keys` when the blob is encrypted.
pub async fn open(
    path: PathBuf,
    range: Range<u64>,
    mode: Mode,
    keys: Option<Arc<Keys>>,
) -> io::Result<BlobStream> {
    match keys {
        None => open_plain(path, range, mode).await,
        Some(keys) => open_sealed(path, range, mode, keys).await,
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

async fn open_plain(path: PathBuf, range: Range<u64>, mode: Mode) -> io::Result<BlobStream> {
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
    let (file, direct) = tokio::task::spawn_blocking(move || open_file(&path, mode == Mode::Cold))
        .await
        .map_err(io::Error::other)??;
    if direct {
        let (tx, rx) = mpsc::channel(AHEAD);
        tokio::task::spawn_blocking(move || produce(file, direct, range, tx));
        Ok(stream_from(rx))
    } else {
        let (tx, rx) = mpsc::channel(MAP_AHEAD);
        tokio::task::spawn_blocking(move || produce_mapped(file, range, tx));
        Ok(stream_from(rx))
    }
}

/// The file's length (what a mapping must stay within), or `None` once the error that
/// stopped us finding it was sent to the consumer.
fn length_or_send(file: &File, tx: &mpsc::Sender<io::Result<Bytes>>) -> Option<u64> {
    match file.metadata() {
        Ok(meta) => Some(meta.len()),
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            None
        }
    }
}

/// Maps `range` chunk by chunk and sends the mappings, until the end, an error, or the
/// consumer goes away.
fn produce_mapped(file: File, range: Range<u64>, tx: mpsc::Sender<io::Result<Bytes>>) {
    let Some(file_len) = length_or_send(&file, &tx) else {
        return;
    };
    let mut pos = range.start;
    while pos < range.end {
        let n = ((range.end - pos) as usize).min(MAP_CHUNK);
        let item = Mapped::new(&file, file_len, pos, n).map(Bytes::from_owner);
        pos += n as u64;
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

async fn open_sealed(
    path: PathBuf,
    range: Range<u64>,
    mode: Mode,
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
    let (file, direct, opener) = tokio::task::spawn_blocking(move || {
        let (file, mut direct) = open_file(&path, mode == Mode::Cold)?;
        // Read into an aligned buffer: the file may be open with O_DIRECT.
        let mut header = Buf::get();
        read_direct(&file, &mut direct, &mut header.spare_all()[..HEADER], 0)?;
        let opener = opener(&file, &keys, &header.spare_all()[..HEADER], &checked)?;
        Ok::<_, io::Error>((file, direct, opener))
    })
    .await
    .map_err(io::Error::other)??;
    let (tx, rx) = mpsc::channel(AHEAD);
    if direct {
        // From the disk, reading and decrypting run on two threads, so that the disk never
        // waits for the cipher. The hand-over is a rendezvous: the cipher is several times
        // faster than the disk, so the reader seldom waits for it, and a queue between them
        // would hold one more 4 MiB buffer.
        let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel(0);
        let lengths = opener.clone();
        let span = range.clone();
        tokio::task::spawn_blocking(move || read_segments(file, direct, &lengths, span, sealed_tx));
        tokio::task::spawn_blocking(move || open_segments(&opener, range, sealed_rx, tx));
    } else {
        // From the page cache a read costs little next to the cipher: one thread does both,
        // and holds fewer 4 MiB buffers.
        tokio::task::spawn_blocking(move || produce_sealed(file, &opener, range, tx));
    }
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

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "blob shorter than the range read",
    )
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

fn open_file(path: &std::path::Path, direct: bool) -> io::Result<(File, bool)> {
    if direct {
        match File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let file = File::open(path)?;
    // Sequential: let the kernel read ahead generously.
    // SAFETY: fadvise on an fd we own, with integer arguments.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    Ok((file, false))
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

/// `read_full`, where O_DIRECT refused for this read (EINVAL) turns it off for the file and
/// reads through the page cache instead. The offset and buffer must suit O_DIRECT.
fn read_direct(file: &File, direct: &mut bool, buf: &mut [u8], at: u64) -> io::Result<usize> {
    match read_full(file, buf, at) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            *direct = false;
            clear_direct(file)?;
            read_full(file, buf, at)
        }
        other => other,
    }
}

/// Segments read from the file, on their way to be decrypted.
struct Sealed {
    first: u64,
    buf: Buf,
}

/// Reads the first segments (up to 64, 4 MiB) under the non-empty `range`.
fn read_chunk(
    file: &File,
    direct: &mut bool,
    opener: &Opener,
    range: &Range<u64>,
) -> io::Result<Sealed> {
    let (first, _, at, want) = span(opener, range, (BUF_SIZE / SEGMENT) as u64);
    let mut buf = Buf::get();
    // Segments start 4096-aligned; only the last one's end may need rounding up.
    let read_len = if *direct {
        want.div_ceil(ALIGN) * ALIGN
    } else {
        want
    };
    let n = read_direct(file, direct, &mut buf.spare_all()[..read_len], at)?;
    if n < want {
        return Err(short());
    }
    buf.set_len(want);
    Ok(Sealed { first, buf })
}

/// Where the plaintext of the chunk after `sealed` starts.
fn after(sealed: &Sealed) -> u64 {
    (sealed.first + (sealed.buf.len() as u64).div_ceil(SEGMENT as u64)) * PLAIN as u64
}

/// Decrypts a chunk read by [`read_chunk`] where it lies; returns the part of its plaintext
/// in `range`.
fn open_chunk(opener: &Opener, sealed: Sealed, range: &Range<u64>) -> io::Result<Bytes> {
    let Sealed { first, mut buf } = sealed;
    let n = opener.open_in_place(first, &mut buf)?;
    buf.set_len(n);
    Ok(wanted(buf, first, range))
}

/// The part in `range` of the plaintext in `plain`, which starts at segment `first`.
fn wanted(plain: Buf, first: u64, range: &Range<u64>) -> Bytes {
    let n = plain.len();
    let base = first * PLAIN as u64;
    let from = (range.start.max(base) - base) as usize;
    let to = (range.end.min(base + n as u64) - base) as usize;
    Bytes::from_owner(plain).slice(from..to)
}

/// Segments mapped from the page cache at a time: a quarter of a chunk, so that a hot
/// read holds 1 MiB of the page cache mapped (and counted in ecrld's RSS), not 4.
const MAP_SEGMENTS: u64 = (MAP_CHUNK / SEGMENT) as u64;

/// [`read_chunk`] and [`open_chunk`] from the page cache: the first segments (up to 64)
/// under the non-empty `range` are mapped a megabyte at a time and decrypted straight from
/// the mapping into a buffer; returns the wanted plaintext and where the next chunk's
/// starts. `file_len` is the file's length.
fn open_mapped(
    file: &File,
    file_len: u64,
    opener: &Opener,
    range: &Range<u64>,
) -> io::Result<(Bytes, u64)> {
    let (first, count, _, _) = span(opener, range, (BUF_SIZE / SEGMENT) as u64);
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
        let map = Mapped::new(file, file_len, offset, len)?;
        n += opener.open(at, &map, &mut plain.spare_all()[n..])?;
        done += pieces;
    }
    plain.set_len(n);
    Ok((wanted(plain, first, range), (first + count) * PLAIN as u64))
}

/// Reads and decrypts the segments under `range` and sends the wanted plaintext, until the
/// end, an error, or the consumer goes away.
fn produce_sealed(
    file: File,
    opener: &Opener,
    range: Range<u64>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let Some(file_len) = length_or_send(&file, &tx) else {
        return;
    };
    let mut pos = range.start;
    while pos < range.end {
        let item = open_mapped(&file, file_len, opener, &(pos..range.end)).map(|(bytes, next)| {
            pos = next;
            bytes
        });
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

/// Reads the segments under `range` chunk by chunk and sends them on to be decrypted,
/// until the end, an error, or the decrypting side goes away.
fn read_segments(
    file: File,
    mut direct: bool,
    opener: &Opener,
    range: Range<u64>,
    tx: std::sync::mpsc::SyncSender<io::Result<Sealed>>,
) {
    let mut pos = range.start;
    while pos < range.end {
        let item = read_chunk(&file, &mut direct, opener, &(pos..range.end));
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
    range: Range<u64>,
    rx: std::sync::mpsc::Receiver<io::Result<Sealed>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    while let Ok(sealed) = rx.recv() {
        let item = sealed.and_then(|sealed| open_chunk(opener, sealed, &range));
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

/// Reads `range` chunk by chunk and sends it, until the end, an error, or the consumer
/// goes away.
fn produce(file: File, mut direct: bool, range: Range<u64>, tx: mpsc::Sender<io::Result<Bytes>>) {
    let mut pos = range.start;
    while pos < range.end {
        let mut buf = Buf::get();
        // O_DIRECT needs an aligned file offset and length: read the aligned block around
        // what we want and hand out only the wanted part.
        let (at, skip, want) = if direct {
            let at = pos - pos % ALIGN as u64;
            let skip = (pos - at) as usize;
            let want = ((range.end - at) as usize).min(BUF_SIZE);
            let rounded = want.div_ceil(ALIGN) * ALIGN;
            (at, skip, rounded.min(BUF_SIZE))
        } else {
            (pos, 0, ((range.end - pos) as usize).min(BUF_SIZE))
        };
        let result = match read_full(&file, &mut buf.spare_all()[..want], at) {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // The filesystem took O_DIRECT at open but not for this read: go buffered.
                direct = false;
                match clear_direct(&file) {
                    Ok(_) => continue,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        let item = match result {
            Ok(n) if n <= skip => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shorter than the range read",
            )),
            Ok(n) => {
                let end = n.min(skip + (range.end - pos) as usize);
                buf.set_len(end);
                pos += (end - skip) as u64;
                Ok(Bytes::from_owner(buf).slice(skip..))
            }
            Err(e) => Err(e),
        };
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}
