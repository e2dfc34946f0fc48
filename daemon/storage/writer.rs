//! The one way blob bytes reach the disk: an upload written while hashing, committed by
//! fsync, digest check, rename and directory fsync.
//!
//! How an upload moves (why it is fast on 2 cores):
//! - Small uploads (up to [`SMALL`] bytes) stay in the session's memory, hashed inline as
//!   they arrive; the commit writes and syncs them as an unnamed file in their directory,
//!   links it under its name and syncs the directory, in one blocking call (see
//!   [`write_unnamed`]).
//! - Bigger ones are copied into pooled 4096-aligned buffers (non-temporal stores: see
//!   [`super::buf`]); each full buffer goes at once
//!   to a hasher worker and to a writer worker (O_DIRECT `pwrite`), which run concurrently on
//!   two threads over the same bytes. The workers outlive the request: a PATCH is answered
//!   as soon as its bytes are handed over, and the next PATCH feeds the same pipeline, so a
//!   chunked upload never waits for the disk or the hash between chunks; the final PUT
//!   drains the pipeline before the digest is checked. Only the store's warmest sessions
//!   (see `WARM_SESSIONS`) keep their file and workers between requests; a colder one is
//!   [`Upload::cool`]ed: its workers finish and close the file, and its next request joins
//!   them once it has filled its first buffer. An idle session thus holds no descriptor,
//!   however many a client opens. The pump takes a new buffer only when the workers have
//!   room for it, so an upload holds at most four (the bytes that arrive meanwhile wait in
//!   the socket's buffers). Between requests the session keeps
//!   the aligned file offset queued so far and the unaligned remainder (< 4096 bytes); the
//!   buffers return to the pool as the workers finish them, so an idle session holds no big
//!   memory.
//! - At the commit the remainder is written without O_DIRECT, the file is fdatasync'ed, the
//!   digest checked, the file renamed to its real name and that directory fsynced (shared
//!   with concurrent commits to the same directory: see [`DirSync`]).
//! - When the filesystem refuses O_DIRECT (EINVAL), plain buffered writes are used.
//!
//! Encrypted uploads ([`Sealer`]) keep the same shape with one more stage: each buffer holds
//! 64 whole segments of plaintext (64 × 65520 bytes), each at the start of its 64 KiB with
//! room for its tag after it, and goes down a line of three workers: the hasher, then a
//! sealer, which encrypts each segment where it lies and puts its tag after it (nothing
//! moves), then the writer. Hashing, sealing and writing thus run
//! on three threads at once, the plaintext is hashed once, as it arrives, and no buffer is
//! needed for the ciphertext. The file starts with room for the header, which is written at
//! the commit, when the length is known. A buffer is handed on only once more bytes follow
//! it, and a request hands on only the segments before its last one: the last segment of a
//! blob is sealed as the last (see [`super::crypt`]), so it waits for the commit. Between
//! requests a session therefore keeps up to one segment of plaintext.

use super::buf::{clear_direct, Buf, ALIGN, BUF_SIZE};
use super::crypt::{self, Sealer, HEADER, PLAIN, SEGMENT};
use super::StoreError;
use bytes::Bytes;
use ecrl::names::Digest;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc;

/// Uploads up to this size are kept in memory until their commit.
pub const SMALL: usize = 64 * 1024;
/// Buffers queued to each worker beyond the one it is working on.
const QUEUE: usize = 2;

pub struct Upload {
    path: PathBuf,
    /// Try O_DIRECT for this upload's file.
    direct: bool,
    /// False while the upload is small and held in `tail`; then its file exists.
    on_disk: bool,
    /// The file, open between requests with its workers running while the session is one of
    /// the store's few warm ones ([`Upload::cool`] closes both); `None` otherwise.
    file: Option<Arc<File>>,
    hasher: Sha256,
    size: u64,
    /// Bytes of the file written: a multiple of ALIGN while O_DIRECT is on; when sealing,
    /// the header's room and whole segments.
    flushed: u64,
    /// Bytes received and hashed but not yet written (after `flushed`).
    tail: Vec<u8>,
    /// The hash and write workers, kept across requests; while they run, `hasher` is theirs.
    workers: Option<Workers>,
    /// Encrypts the content (`None`: stored plain).
    sealer: Option<Arc<Sealer>>,
    /// The bytes all sessions hold in memory between requests, and this one's part of it.
    held: Arc<AtomicUsize>,
    accounted: usize,
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.held.fetch_sub(self.accounted, Ordering::Relaxed);
    }
}

/// One filled buffer on its way to both workers.
struct Job {
    buf: Buf,
    /// Plaintext bytes in the buffer (laid out as [`pieces`] says).
    plain_len: usize,
    /// Plaintext bytes before this were hashed already (carried over from an earlier
    /// request).
    hash_from: usize,
    /// Plaintext bytes from the start of the buffer to write at `offset` (whole segments
    /// when sealing; the sealer turns them into the bytes of the sealed segments).
    write_len: usize,
    offset: u64,
}

impl Job {
    /// The plaintext not hashed yet, in pieces.
    fn unhashed(&self, sealed: bool) -> impl Iterator<Item = &[u8]> {
        pieces(&self.buf, sealed, self.hash_from..self.plain_len)
    }
}

/// Plaintext bytes `range` of a buffer, in pieces. A buffer being sealed keeps each
/// segment's plaintext at the start of its [`SEGMENT`], with room for its tag after it,
/// so that the sealer encrypts it where it lies and nothing moves.
fn pieces(buf: &[u8], sealed: bool, range: std::ops::Range<usize>) -> impl Iterator<Item = &[u8]> {
    let mut at = range.start;
    std::iter::from_fn(move || {
        if at >= range.end {
            return None;
        }
        let (n, place) = if sealed {
            let n = (PLAIN - at % PLAIN).min(range.end - at);
            (n, at / PLAIN * SEGMENT + at % PLAIN)
        } else {
            (range.end - at, at)
        };
        at += n;
        Some(&buf[place..place + n])
    })
}

struct Workers {
    /// `None` once the request that fed them ended: they finish what they were given, then
    /// stop and close their file.
    hash_tx: Option<mpsc::Sender<Arc<Job>>>,
    /// To the writer, beside the hasher; `None` when sealing, where the hasher hands each
    /// buffer on to the sealer once it is hashed.
    write_tx: Option<mpsc::Sender<Arc<Job>>>,
    hasher: tokio::task::JoinHandle<Sha256>,
    sealer: Option<tokio::task::JoinHandle<io::Result<()>>>,
    writer: tokio::task::JoinHandle<io::Result<()>>,
}

impl Workers {
    fn start(hasher: Sha256, file: Arc<File>, sealer: Option<Arc<Sealer>>) -> Workers {
        let write = move |mut next: Box<dyn FnMut() -> Option<Arc<Job>> + Send>| {
            tokio::task::spawn_blocking(move || {
                while let Some(job) = next() {
                    write_at(&file, &job.buf[..job.write_len], job.offset)?;
                }
                Ok(())
            })
        };
        let Some(sealer) = sealer else {
            // Plain: the hasher and the writer work on the same buffers at once.
            let (hash_tx, mut hash_rx) = mpsc::channel::<Arc<Job>>(QUEUE);
            let hasher = tokio::task::spawn_blocking(move || {
                let mut hasher = hasher;
                while let Some(job) = hash_rx.blocking_recv() {
                    job.unhashed(false).for_each(|piece| hasher.update(piece));
                }
                hasher
            });
            let (write_tx, mut write_rx) = mpsc::channel::<Arc<Job>>(QUEUE);
            return Workers {
                hash_tx: Some(hash_tx),
                write_tx: Some(write_tx),
                hasher,
                sealer: None,
                writer: write(Box::new(move || write_rx.blocking_recv())),
            };
        };
        // Sealed: a line of three threads, each buffer hashed, then sealed where it lies,
        // then written. Sealing in place needs no second buffer, and the hand-overs are
        // rendezvous, so a buffer exists only where a stage works on it (or the one queued
        // for the hasher, the slowest stage).
        let (hash_tx, mut hash_rx) = mpsc::channel::<Arc<Job>>(1);
        let (seal_tx, seal_rx) = std::sync::mpsc::sync_channel::<Job>(0);
        let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel::<Job>(0);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(job) = hash_rx.blocking_recv() {
                job.unhashed(true).for_each(|piece| hasher.update(piece));
                // Nobody else holds a sealed upload's buffer.
                let Ok(job) = Arc::try_unwrap(job) else { break };
                if seal_tx.send(job).is_err() {
                    // The sealer stopped: its error comes from `join`.
                    break;
                }
            }
            hasher
        });
        let handle = tokio::task::spawn_blocking(move || {
            while let Ok(mut job) = seal_rx.recv() {
                seal_job(&sealer, &mut job)?;
                if sealed_tx.send(job).is_err() {
                    // The writer stopped: its error comes from `join`.
                    break;
                }
            }
            Ok(())
        });
        Workers {
            hash_tx: Some(hash_tx),
            write_tx: None,
            hasher,
            sealer: Some(handle),
            writer: write(Box::new(move || sealed_rx.recv().ok().map(Arc::new))),
        }
    }

    /// False when a worker stopped (its error comes from `join`).
    async fn send(&self, job: Job) -> bool {
        let job = Arc::new(job);
        let Some(hash_tx) = &self.hash_tx else {
            return false;
        };
        match &self.write_tx {
            Some(write_tx) => {
                hash_tx.send(job.clone()).await.is_ok() && write_tx.send(job).await.is_ok()
            }
            None => hash_tx.send(job).await.is_ok(),
        }
    }

    /// Waits until the workers have room for another buffer (false when one stopped). The
    /// pump takes its next buffer only then: a buffer filled meanwhile would only wait in a
    /// queue, and the bytes can wait as well in the socket's buffers.
    async fn ready(&self) -> bool {
        let Some(hash_tx) = &self.hash_tx else {
            return false;
        };
        if hash_tx.reserve().await.is_err() {
            return false;
        }
        match &self.write_tx {
            Some(write_tx) => write_tx.reserve().await.is_ok(),
            None => true,
        }
    }

    /// False once [`Workers::close`]d.
    fn is_open(&self) -> bool {
        self.hash_tx.is_some()
    }

    /// Lets the workers finish what they were given and stop, without waiting for them.
    fn close(mut self) -> Workers {
        self.hash_tx = None;
        self.write_tx = None;
        self
    }

    async fn join(self) -> Result<Sha256, StoreError> {
        drop(self.hash_tx);
        drop(self.write_tx);
        let sealed = match self.sealer {
            Some(sealer) => sealer.await.map_err(io::Error::other)?,
            None => Ok(()),
        };
        let written = self.writer.await.map_err(io::Error::other)?;
        let hasher = self.hasher.await.map_err(io::Error::other)?;
        written?;
        sealed?;
        Ok(hasher)
    }
}

/// Seals, in its own buffer, the plaintext a job writes (whole segments, none of them the
/// blob's last); the job then writes the segments at the same offset.
fn seal_job(sealer: &Sealer, job: &mut Job) -> io::Result<()> {
    if !job.write_len.is_multiple_of(PLAIN) {
        return Err(io::Error::other("a segment before the last is not whole"));
    }
    let first = (job.offset - HEADER as u64) / SEGMENT as u64;
    let n = sealer.seal_segments(first, job.buf.spare_all(), job.write_len / PLAIN)?;
    job.buf.set_len(n);
    job.write_len = n;
    job.hash_from = 0;
    Ok(())
}

/// `pwrite` of all of `data`. O_DIRECT refused at write time (EINVAL) turns the flag off for
/// the file and writes through the page cache instead.
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    match file.write_all_at(data, offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && clear_direct(file)? => {
            file.write_all_at(data, offset)
        }
        other => other,
    }
}

/// Creates the upload file (`create`) or opens it again, with O_DIRECT when asked and the
/// filesystem takes it.
fn open_file(path: &Path, direct: bool, create: bool) -> io::Result<File> {
    let mut options = File::options();
    options.write(true).create_new(create);
    if direct {
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    options.open(path)
}

fn body_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Body(e.to_string())
}

impl Upload {
    /// A new, empty upload, sealed by `sealer` when there is one. Its file is created only
    /// once it outgrows [`SMALL`].
    pub fn create(
        path: PathBuf,
        direct: bool,
        sealer: Option<Sealer>,
        held: Arc<AtomicUsize>,
    ) -> Self {
        Upload {
            path,
            direct,
            on_disk: false,
            file: None,
            hasher: Sha256::new(),
            size: 0,
            flushed: if sealer.is_some() { HEADER as u64 } else { 0 },
            tail: Vec::new(),
            workers: None,
            sealer: sealer.map(Arc::new),
            held,
            accounted: 0,
        }
    }

    /// Counts what the session holds now in the store's total, after giving back what a
    /// request's bursts left unused.
    fn account(&mut self) {
        if self.tail.capacity() > self.tail.len() + self.tail.len() / 4 {
            self.tail.shrink_to_fit();
        }
        let now = self.tail.capacity();
        if now >= self.accounted {
            self.held.fetch_add(now - self.accounted, Ordering::Relaxed);
        } else {
            self.held.fetch_sub(self.accounted - now, Ordering::Relaxed);
        }
        self.accounted = now;
    }

    /// Closes what the session holds open between requests: its file, and its workers once
    /// they finish what they were given (the next request joins them, once it has filled its
    /// first buffer, so even then a chunk arrives while the last one is still written).
    pub fn cool(&mut self) {
        self.file = None;
        self.workers = self.workers.take().map(Workers::close);
    }

    /// Plaintext bytes a buffer takes: 4 MiB, or 64 whole segments when sealing (which
    /// seal into exactly 4 MiB).
    fn capacity(&self) -> usize {
        match self.sealer {
            None => BUF_SIZE,
            Some(_) => BUF_SIZE / SEGMENT * PLAIN,
        }
    }

    /// Appends as much of `data` as fits below `capacity` plaintext bytes to `buf`, which
    /// holds `plain` of them, laid out as [`pieces`] says; returns how many were taken.
    fn fill(&self, buf: &mut Buf, plain: usize, data: &[u8], capacity: usize) -> usize {
        if self.sealer.is_none() {
            return buf.fill_upto(data, capacity);
        }
        let mut taken = 0;
        while taken < data.len() && plain + taken < capacity {
            let at = plain + taken;
            let n = (PLAIN - at % PLAIN)
                .min(data.len() - taken)
                .min(capacity - at);
            // Past the room for the tag of the segment before.
            buf.set_len(at / PLAIN * SEGMENT + at % PLAIN);
            buf.fill_upto(&data[taken..taken + n], BUF_SIZE);
            taken += n;
        }
        taken
    }

    /// Of `len` bytes at the end of a request, how many to write now (the rest waits for
    /// the next request or the commit): whole blocks for O_DIRECT; whole segments but the
    /// last when sealing.
    fn writable(&self, len: usize) -> usize {
        match self.sealer {
            None if self.direct => len - len % ALIGN,
            None => len,
            Some(_) => len.saturating_sub(1) / PLAIN * PLAIN,
        }
    }

    /// File bytes that `plain` bytes written by a job take.
    fn file_len(&self, plain: usize) -> u64 {
        match self.sealer {
            None => plain as u64,
            Some(_) => (plain / PLAIN * SEGMENT) as u64,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Waits for the workers to finish what they were given and takes the hash state back.
    async fn settle(&mut self) -> Result<(), StoreError> {
        if let Some(workers) = self.workers.take() {
            self.hasher = workers.join().await?;
        }
        Ok(())
    }

    /// The digest of everything appended, once the workers are done with it.
    pub async fn digest(&mut self) -> Result<Digest, StoreError> {
        self.settle().await?;
        Ok(Digest::from_bytes(self.hasher.clone().finalize().into()))
    }

    /// Appends a request body. On an error the upload is unusable: the caller discards it.
    pub async fn append<S, E>(&mut self, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let result = self.append_body(body).await;
        self.account();
        result
    }

    async fn append_body<S, E>(&mut self, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        let mut first = None;
        let mut file = None;
        if !self.on_disk {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_error)?;
                if self.tail.len() + chunk.len() > SMALL {
                    first = Some(chunk);
                    break;
                }
                self.hasher.update(&chunk);
                self.tail.extend_from_slice(&chunk);
                self.size += chunk.len() as u64;
            }
            if first.is_none() {
                return Ok(self.size);
            }
            let path = self.path.clone();
            let direct = self.direct;
            let created = tokio::task::spawn_blocking(move || open_file(&path, direct, true))
                .await
                .map_err(io::Error::other)??;
            self.on_disk = true;
            file = Some(Arc::new(created));
        }
        let file = match file.or_else(|| self.file.clone()) {
            Some(file) => file,
            None => {
                let path = self.path.clone();
                let direct = self.direct;
                let opened = tokio::task::spawn_blocking(move || open_file(&path, direct, false))
                    .await
                    .map_err(io::Error::other)??;
                Arc::new(opened)
            }
        };
        self.pump(file, first, body).await
    }

    /// Streams the body through aligned buffers to the hasher and writer workers.
    ///
    /// The workers of the request before may still be finishing its last buffers: they are
    /// joined (for the hash state) only once this request has filled its first buffer, so
    /// a chunked upload's next chunk arrives while the last one is still hashed and written.
    async fn pump<S, E>(
        &mut self,
        file: Arc<File>,
        mut first: Option<Bytes>,
        mut body: Pin<&mut S>,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let capacity = self.capacity();
        // Open workers (a warm session's) go on; closed ones are draining.
        let (mut workers, mut draining) = match self.workers.take() {
            Some(w) if w.is_open() => (Some(w), None),
            other => (None, other),
        };
        if let Some(w) = &workers {
            // The pipeline runs on from the request before: as below, a buffer only once
            // there is room for it.
            if !w.ready().await {
                self.workers = workers;
                let e = match self.settle().await {
                    Err(e) => e,
                    Ok(()) => io::Error::other("upload writer stopped").into(),
                };
                return Err(e);
            }
        }
        let mut buf = Buf::get();
        let mut plain = self.fill(&mut buf, 0, &self.tail, capacity);
        let mut hash_from = plain;
        self.tail.clear();
        let mut offset = self.flushed;
        let mut failed: Option<StoreError> = None;
        let mut broken = false;

        'body: loop {
            let chunk = match first.take() {
                Some(chunk) => chunk,
                None => match body.next().await {
                    None => break,
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => {
                        failed = Some(body_error(e));
                        break;
                    }
                },
            };
            self.size += chunk.len() as u64;
            let mut data = &chunk[..];
            while !data.is_empty() {
                if plain == capacity {
                    // More bytes follow, so this buffer holds no last segment: hand it on.
                    let job = Job {
                        // The next buffer is taken only once this one is handed over, so a
                        // full pipeline holds one buffer less.
                        buf: std::mem::replace(&mut buf, Buf::empty()),
                        plain_len: plain,
                        hash_from,
                        write_len: capacity,
                        offset,
                    };
                    if let Some(old) = draining.take() {
                        match old.join().await {
                            Ok(hasher) => self.hasher = hasher,
                            Err(e) => {
                                failed = Some(e);
                                break 'body;
                            }
                        }
                    }
                    let w = workers.get_or_insert_with(|| {
                        Workers::start(
                            std::mem::take(&mut self.hasher),
                            file.clone(),
                            self.sealer.clone(),
                        )
                    });
                    if !w.send(job).await || !w.ready().await {
                        broken = true;
                        break 'body;
                    }
                    buf = Buf::get();
                    // A full buffer is 4 MiB of file, plain or sealed.
                    offset += BUF_SIZE as u64;
                    hash_from = 0;
                    plain = 0;
                }
                let n = self.fill(&mut buf, plain, data, capacity);
                plain += n;
                data = &data[n..];
            }
        }

        if let Some(old) = draining.take() {
            match old.join().await {
                Ok(hasher) => self.hasher = hasher,
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        // What is left in `buf`: write what can be written now, keep the rest for later.
        let write_len = self.writable(plain);
        if failed.is_none() && !broken {
            let sealed = self.sealer.is_some();
            for piece in pieces(&buf, sealed, write_len..plain) {
                self.tail.extend_from_slice(piece);
            }
        }
        let last = Job {
            buf,
            plain_len: plain,
            hash_from,
            write_len,
            offset,
        };
        match workers {
            Some(w) => {
                if failed.is_none() && !broken && !w.send(last).await {
                    broken = true;
                }
                if failed.is_none() && !broken {
                    // Keep the pipeline and its file for the next request or the commit,
                    // until the store cools the session.
                    self.workers = Some(w);
                    self.file = Some(file.clone());
                } else {
                    // Joining surfaces a worker's own error.
                    match w.join().await {
                        Ok(hasher) => self.hasher = hasher,
                        Err(e) => failed = failed.or(Some(e)),
                    }
                    if broken && failed.is_none() {
                        failed = Some(io::Error::other("upload writer stopped").into());
                    }
                }
            }
            None if failed.is_none() => {
                let mut hasher = std::mem::take(&mut self.hasher);
                let sealer = self.sealer.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let mut last = last;
                    let sealed = sealer.is_some();
                    last.unhashed(sealed).for_each(|piece| hasher.update(piece));
                    if last.write_len > 0 {
                        if let Some(sealer) = sealer {
                            seal_job(&sealer, &mut last)?;
                        }
                        write_at(&file, &last.buf[..last.write_len], last.offset)?;
                    }
                    Ok::<_, io::Error>(hasher)
                })
                .await
                .map_err(io::Error::other)?;
                self.hasher = result?;
            }
            None => {}
        }
        match failed {
            Some(e) => Err(e),
            None => {
                self.flushed = offset + self.file_len(write_len);
                Ok(self.size)
            }
        }
    }

    /// Checks the digest and makes the blob durable under `target`. On a mismatch nothing
    /// remains.
    pub async fn commit(
        mut self,
        expected: Option<&Digest>,
        target: &Path,
        dirs: &Arc<DirSync>,
    ) -> Result<(), StoreError> {
        let actual = match self.digest().await {
            Ok(digest) => digest,
            Err(e) => {
                self.discard().await;
                return Err(e);
            }
        };
        if let Some(expected) = expected {
            if *expected != actual {
                self.discard().await;
                return Err(StoreError::DigestMismatch {
                    expected: *expected,
                    actual,
                });
            }
        }
        let target = target.to_path_buf();
        let dirs = dirs.clone();
        tokio::task::spawn_blocking(move || self.commit_blocking(&target, &dirs))
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }

    fn commit_blocking(mut self, target: &Path, dirs: &DirSync) -> io::Result<()> {
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        if target.exists() {
            // Same digest, same bytes: keep the one there. Its writer may not have synced
            // the directory yet, so sync it before saying the blob is durable.
            if std::mem::take(&mut self.on_disk) {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(e);
                    }
                }
            }
            return dirs.sync(dir);
        }
        let result = self.write_out(target, dir, dirs);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }

    fn write_out(&self, target: &Path, dir: &Path, dirs: &DirSync) -> io::Result<()> {
        // The commit writes the last bytes without O_DIRECT: the file is opened plain.
        let file = match self.on_disk {
            true => Some(open_file(&self.path, false, false)?),
            false => None,
        };
        match (&file, &self.sealer) {
            (None, sealer) => {
                // A small blob is written in one go: header and segments when sealing (one or
                // two segments).
                let sealed;
                let bytes = match sealer {
                    None => &self.tail[..],
                    Some(sealer) => {
                        let mut out = sealer.header(self.size);
                        out.resize(crypt::sealed_len(self.size) as usize, 0);
                        sealer.seal(0, &self.tail, true, &mut out[HEADER..])?;
                        sealed = out;
                        &sealed[..]
                    }
                };
                if write_unnamed(bytes, target, dir, dirs)? {
                    return Ok(());
                }
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&self.path)?;
                file.write_all(bytes)?;
                file.sync_data()?;
            }
            (Some(file), None) => {
                if !self.tail.is_empty() {
                    clear_direct(file)?;
                    file.write_all_at(&self.tail, self.flushed)?;
                }
                file.sync_data()?;
            }
            (Some(file), Some(sealer)) => {
                // The last segment (the tail), then the header now that the length is known.
                clear_direct(file)?;
                let first = (self.flushed - HEADER as u64) / SEGMENT as u64;
                let mut out = vec![0u8; self.tail.len() + SEGMENT];
                let n = sealer.seal(first, &self.tail, true, &mut out)?;
                file.write_all_at(&out[..n], self.flushed)?;
                file.write_all_at(&sealer.header(self.size), 0)?;
                file.sync_data()?;
            }
        }
        if let Err(e) = std::fs::rename(&self.path, target) {
            if e.kind() != io::ErrorKind::NotFound || !self.path.exists() {
                return Err(e);
            }
            // The fan-out directory is gone (made at open; someone removed it): make it again.
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                File::open(parent)?.sync_all()?;
            }
            std::fs::rename(&self.path, target)?;
        }
        dirs.sync(dir)
    }

    pub async fn discard(mut self) {
        // Stopping the workers first: no write may land after the file is removed.
        let _ = self.settle().await;
        self.file = None;
        if std::mem::take(&mut self.on_disk) {
            let path = self.path.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
    }
}

/// Writes a small blob durably under `target` without a temporary name: an unnamed file
/// (`O_TMPFILE`) in the blob's own directory, written and synced, then linked under its
/// name, then the directory synced. Compared with a file created under `uploads/` and
/// renamed, no directory but the blob's is written (on ext4 without a journal, syncing a
/// newly created file also syncs the directory it was created in). A crash before the link
/// leaves no file: the kernel frees an unnamed file with its last descriptor (after a power
/// cut, the filesystem's recovery or fsck reclaims its inode). False (nothing done) when the
/// filesystem or platform cannot make unnamed files, or the directory is gone: the caller
/// then takes the named way.
fn write_unnamed(bytes: &[u8], target: &Path, dir: &Path, dirs: &DirSync) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let mut file = match File::options()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
            ) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    file.write_all(bytes)?;
    file.sync_data()?;
    // linkat through /proc needs no privilege (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
    use std::os::fd::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(io::Error::other)?;
    let to = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked != 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // Same digest, same bytes: a concurrent commit put them there first.
            Some(libc::EEXIST) => {}
            // No /proc: the named way instead (the unnamed file goes with its descriptor).
            Some(libc::ENOENT) if !Path::new("/proc/self/fd").exists() => return Ok(false),
            _ => return Err(e),
        }
    }
    dirs.sync(dir)?;
    Ok(true)
}

/// Directory fsyncs shared between concurrent commits (group commit): a commit that renamed
/// its file into a directory waits for an fsync of that directory that *started after* its
/// rename. When one is already running, the commits arriving meanwhile share the next one
/// instead of each issuing their own. Every caller still returns only after an fsync that
/// covers its rename has completed.
#[derive(Default)]
pub struct DirSync {
    dirs: Mutex<HashMap<PathBuf, Arc<DirState>>>,
}

#[derive(Default)]
struct DirState {
    state: Mutex<Generations>,
    done: Condvar,
}

#[derive(Default)]
struct Generations {
    /// Requests made so far (each caller takes the next number).
    requested: u64,
    /// Every request numbered up to this is covered by a completed fsync.
    synced: u64,
    running: bool,
    /// The error of the latest fsync, reported to the requests it covered.
    failed: Option<(u64, io::ErrorKind, String)>,
}

impl DirSync {
    pub fn sync(&self, dir: &Path) -> io::Result<()> {
        let entry = {
            let mut dirs = self
                .dirs
                .lock()
                .map_err(|_| io::Error::other("dir sync lock poisoned"))?;
            dirs.entry(dir.to_path_buf()).or_default().clone()
        };
        let poisoned = |_| io::Error::other("dir sync lock poisoned");
        let mut g = entry.state.lock().map_err(poisoned)?;
        g.requested += 1;
        let mine = g.requested;
        loop {
            if g.synced >= mine {
                return match &g.failed {
                    Some((upto, kind, msg)) if *upto >= mine => {
                        Err(io::Error::new(*kind, msg.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if !g.running {
                g.running = true;
                let upto = g.requested;
                drop(g);
                let result = File::open(dir).and_then(|d| d.sync_all());
                g = entry.state.lock().map_err(poisoned)?;
                g.running = false;
                g.synced = upto;
                g.failed = match &result {
                    Ok(()) => None,
                    Err(e) => Some((upto, e.kind(), e.to_string())),
                };
                entry.done.notify_all();
                result?;
                // Our own request was covered (mine <= upto).
                return Ok(());
            }
            g = entry.done.wait(g).map_err(poisoned)?;
        }
    }
}
