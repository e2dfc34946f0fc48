//! The one way blob bytes leave the disk: a range of a blob as a stream of chunks.
//!
//! Big ranges are read on a blocking thread into pooled 4 MiB buffers, one chunk ahead of
//! the consumer (a bounded queue), and handed out as `Bytes` that return their buffer to the
//! pool when hyper has sent them. Two modes:
//! - [`Mode::Cold`]: O_DIRECT reads. Blobs we wrote with O_DIRECT are not in the page cache,
//!   and filling the cache on these VMs is slow (touching memory the guest freed costs about
//!   2.5 s of CPU per GiB); direct reads into hot buffers run at the disk's speed.
//! - [`Mode::Cached`]: plain reads, which fill the page cache so later reads are served from
//!   memory.

use super::buf::{clear_direct, Buf, ALIGN, BUF_SIZE};
use bytes::Bytes;
use futures_util::Stream;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::sync::mpsc;

/// A blob's bytes, in order.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Ranges up to this size are read in one go into an exact-size allocation.
const SMALL: u64 = 256 * 1024;
/// Chunks read ahead of the consumer.
const AHEAD: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cold,
    Cached,
}

pub async fn open(path: PathBuf, range: Range<u64>, mode: Mode) -> io::Result<BlobStream> {
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
        let chunks = if bytes.is_empty() {
            vec![]
        } else {
            vec![Ok(bytes)]
        };
        return Ok(Box::pin(futures_util::stream::iter(chunks)));
    }
    let (file, direct) = tokio::task::spawn_blocking(move || open_file(&path, mode == Mode::Cold))
        .await
        .map_err(io::Error::other)??;
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || produce(file, direct, range, tx));
    Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// A whole small blob.
pub async fn read_all(path: PathBuf) -> io::Result<Bytes> {
    tokio::fs::read(path).await.map(Bytes::from)
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
