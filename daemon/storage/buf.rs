//! Big I/O buffers, aligned for O_DIRECT and backed by transparent huge pages, reused
//! through a small pool.
//!
//! Why a pool: on these VMs memory the guest freed a while ago is slow to touch again (about
//! 2.5 s of kernel CPU per GiB), so allocating fresh buffers per request caps throughput far
//! below the disk. A few hot buffers, kept mapped and reused, avoid that. The alignment is what
//! O_DIRECT needs. The pool keeps at most [`KEEP`] free buffers; an operation holds only a few
//! at a time (bounded queues), so memory does not grow with blob size. Enough are kept for
//! several transfers at once (four parallel layer uploads hold about sixteen): a pool smaller
//! than what is in use churns, unmapping buffers only to map fresh ones a moment later. Past
//! [`KEEP_IDLE`], buffers unused for [`IDLE`] go back (see [`trim`]), so an idle daemon
//! holds little.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The alignment O_DIRECT asks for (logical block size; 4096 covers every device here).
pub const ALIGN: usize = 4096;
/// The size of each pooled buffer.
pub const BUF_SIZE: usize = 4 << 20;
/// Free buffers kept for reuse; more than that are returned to the allocator.
const KEEP: usize = 16;
/// Free buffers kept however long they go unused.
const KEEP_IDLE: usize = 4;
/// How long a free buffer past [`KEEP_IDLE`] is kept unused.
const IDLE: Duration = Duration::from_secs(30);

/// Free buffers, by when they were freed (the last freed last, and reused first).
static FREE: Mutex<Vec<(Block, Instant)>> = Mutex::new(Vec::new());

/// Blocks allocated now and at most (tests and the benchmark report them).
#[cfg(test)]
pub static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[cfg(test)]
pub static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One aligned allocation of `BUF_SIZE` bytes.
struct Block(NonNull<u8>);

// SAFETY: a Block is a uniquely owned heap allocation with no thread affinity.
unsafe impl Send for Block {}
// SAFETY: shared access only reads through `&[u8]`.
unsafe impl Sync for Block {}

/// Huge-page size: blocks are aligned to it and asked to be backed by transparent huge
/// pages, so that the kernel pins a block for O_DIRECT in two steps instead of 1024, and
/// the hash, cipher and copies over it miss the TLB 512 times less.
const HUGE: usize = 2 << 20;

impl Block {
    fn new() -> Block {
        // A private anonymous mapping (zero-filled by the kernel, so every byte is
        // initialized) one huge page longer than needed, trimmed to a huge-page boundary.
        let len = BUF_SIZE + HUGE;
        // SAFETY: a fresh anonymous mapping; no memory of ours is touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            alloc::handle_alloc_error(layout());
        }
        let start = raw as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let end = aligned + BUF_SIZE;
        // SAFETY: both ranges lie in the mapping made above and outside the block kept;
        // a failed madvise only leaves the block on small pages.
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            if start + len > end {
                libc::munmap(end as *mut libc::c_void, start + len - end);
            }
            libc::madvise(aligned as *mut libc::c_void, BUF_SIZE, libc::MADV_HUGEPAGE);
        }
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::Relaxed;
            let live = LIVE.fetch_add(1, Relaxed) + 1;
            PEAK.fetch_max(live, Relaxed);
        }
        match NonNull::new(aligned as *mut u8) {
            Some(ptr) => Block(ptr),
            None => alloc::handle_alloc_error(layout()),
        }
    }
}

fn layout() -> Layout {
    // BUF_SIZE and HUGE are non-zero powers of two: this cannot fail.
    Layout::from_size_align(BUF_SIZE, HUGE).expect("valid buffer layout")
}

impl Drop for Block {
    fn drop(&mut self) {
        #[cfg(test)]
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the block is the BUF_SIZE bytes `Block::new` kept of its mapping,
        // unmapped once.
        unsafe { libc::munmap(self.0.as_ptr().cast(), BUF_SIZE) };
    }
}

/// A pooled buffer: `BUF_SIZE` bytes of capacity, `len` of them meaningful. Goes back to
/// the pool when dropped.
pub struct Buf {
    block: Option<Block>,
    len: usize,
}

impl Buf {
    /// A buffer from the pool (or a new one), empty.
    pub fn get() -> Buf {
        let block = FREE
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .map_or_else(Block::new, |(block, _)| block);
        Buf {
            block: Some(block),
            len: 0,
        }
    }

    /// A buffer with no memory, to stand in while none is needed: it holds nothing and
    /// takes nothing (`fill_upto` takes no bytes).
    pub fn empty() -> Buf {
        Buf {
            block: None,
            len: 0,
        }
    }

    /// Bytes the buffer can hold.
    fn capacity(&self) -> usize {
        if self.block.is_some() {
            BUF_SIZE
        } else {
            0
        }
    }

    fn ptr(&self) -> *mut u8 {
        match &self.block {
            Some(block) => block.0.as_ptr(),
            None => NonNull::dangling().as_ptr(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity());
        self.len = len;
    }

    /// The whole capacity, for reading into (then `set_len`).
    pub fn spare_all(&mut self) -> &mut [u8] {
        // SAFETY: the block is BUF_SIZE initialized bytes (zeroed at allocation), owned by
        // self; an empty Buf has a capacity of 0 (a dangling pointer is valid for that).
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.capacity()) }
    }

    /// Appends as much of `data` as fits below `limit` bytes (at most `BUF_SIZE`); returns
    /// how many bytes were taken.
    pub fn fill_upto(&mut self, data: &[u8], limit: usize) -> usize {
        let n = data
            .len()
            .min(limit.min(self.capacity()).saturating_sub(self.len));
        let at = self.len;
        copy_streaming(&mut self.spare_all()[at..at + n], &data[..n]);
        self.len += n;
        n
    }
}

/// Copies below this size go through the cache as usual. Sealed uploads copy a segment's
/// plaintext (65520 bytes) at a time, or less where a request's pieces end.
const STREAM_MIN: usize = 16 * 1024;

/// Copies `src` into `dst` (same length). Big copies on x86-64 with AVX2 use non-temporal
/// stores: a buffer being filled is read next by the hash thread on the other core and by
/// the disk's DMA, never by this core, and ordinary stores would first read every line of
/// it into this core's cache (where the other core's last pass over the buffer may still
/// hold it).
fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if src.len() >= STREAM_MIN && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above); the slices have the same length.
            unsafe { copy_streaming_avx2(dst, src) };
            return;
        }
    }
    dst.copy_from_slice(src);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_streaming_avx2(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_sfence};
    assert_eq!(dst.len(), src.len());
    let n = dst.len();
    // Up to the first 32-byte boundary of the destination the ordinary way.
    let head = (dst.as_ptr() as usize).wrapping_neg() % 32;
    let head = head.min(n);
    dst[..head].copy_from_slice(&src[..head]);
    let mut i = head;
    while i + 128 <= n {
        // SAFETY: i + 128 <= n: every load and store is within the slices; dst + i is
        // 32-byte aligned (head brought it there; i advances by 128), as the stream needs.
        unsafe {
            let s = src.as_ptr().add(i) as *const __m256i;
            let d = dst.as_mut_ptr().add(i) as *mut __m256i;
            let a = _mm256_loadu_si256(s);
            let b = _mm256_loadu_si256(s.add(1));
            let c = _mm256_loadu_si256(s.add(2));
            let e = _mm256_loadu_si256(s.add(3));
            _mm256_stream_si256(d, a);
            _mm256_stream_si256(d.add(1), b);
            _mm256_stream_si256(d.add(2), c);
            _mm256_stream_si256(d.add(3), e);
        }
        i += 128;
    }
    // Non-temporal stores are weakly ordered: fence them before the buffer is handed to
    // another thread.
    _mm_sfence();
    dst[i..].copy_from_slice(&src[i..]);
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= BUF_SIZE initialized bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.spare_all()[..len]
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            if let Ok(mut free) = FREE.lock() {
                if free.len() < KEEP {
                    free.push((block, Instant::now()));
                }
            }
        }
    }
}

/// Returns to the allocator the free buffers past [`KEEP_IDLE`] unused for [`IDLE`] (the
/// daemon calls it every few seconds).
pub fn trim() {
    let idle: Vec<(Block, Instant)> = match FREE.lock() {
        Ok(mut free) => {
            let now = Instant::now();
            let old = idle_past_keep(free.iter().map(|(_, freed)| *freed), now);
            free.drain(..old).collect()
        }
        Err(_) => return,
    };
    // Unmapped outside the lock.
    drop(idle);
}

/// How many of the free buffers (freed at these times, oldest first) go at `now`.
fn idle_past_keep(freed: impl ExactSizeIterator<Item = Instant>, now: Instant) -> usize {
    let past_keep = freed.len().saturating_sub(KEEP_IDLE);
    freed
        .take(past_keep)
        .take_while(|t| now.saturating_duration_since(*t) >= IDLE)
        .count()
}

/// Turns O_DIRECT off on `file`. True when it was on.
pub fn clear_direct(file: &File) -> io::Result<bool> {
    set_direct(file, false)
}

/// Turns O_DIRECT on or off on `file`. True when it was on before.
pub fn set_direct(file: &File, on: bool) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let was = flags & libc::O_DIRECT != 0;
    if was == on {
        return Ok(was);
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let a = Buf::get();
        assert_eq!(a.ptr() as usize % ALIGN, 0);
        let p = a.ptr();
        drop(a);
        let b = Buf::get();
        // Other tests use the pool concurrently, so reuse of this exact block is likely but
        // not certain; alignment is, to the huge page.
        assert_eq!(b.ptr() as usize % HUGE, 0);
        let _ = p;
    }

    #[test]
    fn only_buffers_past_the_idle_keep_and_unused_for_long_go() {
        let now = Instant::now() + IDLE * 10;
        let at = |ago: Duration| now - ago;
        let long = IDLE * 2;
        let short = IDLE / 2;
        // Six free, the oldest first: two long unused go; the last four stay however old.
        let free = [long, long, short, long, long, long].map(at);
        assert_eq!(idle_past_keep(free.into_iter(), now), 2);
        let all_old = [long; KEEP].map(at);
        assert_eq!(idle_past_keep(all_old.into_iter(), now), KEEP - KEEP_IDLE);
        let all_recent = [short; KEEP].map(at);
        assert_eq!(idle_past_keep(all_recent.into_iter(), now), 0);
        assert_eq!(idle_past_keep([long; 3].map(at).into_iter(), now), 0);
        // trim() itself runs against the shared pool: it never drops below the idle keep.
        trim();
    }

    #[test]
    fn an_empty_buffer_takes_nothing() {
        let mut b = Buf::empty();
        assert_eq!(b.fill_upto(&[1, 2, 3], BUF_SIZE), 0);
        assert!(b.spare_all().is_empty());
        assert!(b.is_empty());
    }

    #[test]
    fn big_copies_land_exactly_at_any_alignment() {
        // Streaming copies handle an unaligned head, 128-byte blocks and a tail: every
        // start offset within a block and lengths around each boundary.
        let data: Vec<u8> = (0..STREAM_MIN + 300)
            .map(|i| (i * 31 + i / 251) as u8)
            .collect();
        for start in [0, 1, 31, 32, 33, 63, 64, 100, 127, 4095] {
            for len in [
                STREAM_MIN - 1,
                STREAM_MIN,
                STREAM_MIN + 1,
                STREAM_MIN + 127,
                STREAM_MIN + 128,
                STREAM_MIN + 300,
            ] {
                let mut b = Buf::get();
                b.set_len(start);
                b.spare_all()[..start].fill(0xEE);
                b.spare_all()[start + len..start + len + 64].fill(0xDD);
                assert_eq!(b.fill_upto(&data[..len], BUF_SIZE), len);
                assert_eq!(b.len(), start + len);
                assert!(b[..start].iter().all(|&x| x == 0xEE), "{start} {len}: head");
                assert!(b[start..] == data[..len], "{start} {len}: copy");
                assert!(
                    b.spare_all()[start + len..start + len + 64]
                        .iter()
                        .all(|&x| x == 0xDD),
                    "{start} {len}: past the end"
                );
            }
        }
    }

    #[test]
    fn fill_stops_at_the_limit_and_capacity() {
        let mut b = Buf::get();
        let data = vec![7u8; BUF_SIZE + 10];
        assert_eq!(b.fill_upto(&data[..100], BUF_SIZE), 100);
        assert_eq!(b.fill_upto(&data, 1000), 900);
        assert_eq!(b.fill_upto(&data, 1000), 0);
        assert_eq!(b.fill_upto(&data, usize::MAX), BUF_SIZE - 1000);
        assert_eq!(b.len(), BUF_SIZE);
        assert_eq!(b.fill_upto(&data, BUF_SIZE), 0);
        assert!(b.iter().all(|&x| x == 7));
    }
}
