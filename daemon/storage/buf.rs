//! Big, 4096-aligned I/O buffers, reused through a small pool.
//!
//! Why a pool: on these VMs memory the guest freed a while ago is slow to touch again (about
//! 2.5 s of kernel CPU per GiB), so allocating fresh buffers per request caps throughput far
//! below the disk. A few hot buffers, kept mapped and reused, avoid that. The alignment is what
//! O_DIRECT needs. The pool keeps at most [`KEEP`] free buffers; an operation holds only a few
//! at a time (bounded queues), so memory does not grow with blob size.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::ptr::NonNull;
use std::sync::Mutex;

/// The alignment O_DIRECT asks for (logical block size; 4096 covers every device here).
pub const ALIGN: usize = 4096;
/// The size of each pooled buffer.
pub const BUF_SIZE: usize = 4 << 20;
/// Free buffers kept for reuse; more than that are returned to the allocator.
const KEEP: usize = 4;

static FREE: Mutex<Vec<Block>> = Mutex::new(Vec::new());

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

fn layout() -> Layout {
    // BUF_SIZE and ALIGN are non-zero powers of two: this cannot fail.
    Layout::from_size_align(BUF_SIZE, ALIGN).expect("valid buffer layout")
}

impl Block {
    fn new() -> Block {
        // Zeroed, so every byte is initialized (fresh pages from the kernel are zero anyway).
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout()) };
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::Relaxed;
            let live = LIVE.fetch_add(1, Relaxed) + 1;
            PEAK.fetch_max(live, Relaxed);
        }
        match NonNull::new(ptr) {
            Some(ptr) => Block(ptr),
            None => alloc::handle_alloc_error(layout()),
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        #[cfg(test)]
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: allocated in `Block::new` with the same layout, freed once.
        unsafe { alloc::dealloc(self.0.as_ptr(), layout()) }
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
            .unwrap_or_else(Block::new);
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
        self.spare_all()[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }
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
                    free.push(block);
                }
            }
        }
    }
}

/// Turns O_DIRECT off on `file`. True when it was on.
pub fn clear_direct(file: &File) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_DIRECT == 0 {
        return Ok(false);
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
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
        // not certain; alignment is.
        assert_eq!(b.ptr() as usize % ALIGN, 0);
        let _ = p;
    }

    #[test]
    fn an_empty_buffer_takes_nothing() {
        let mut b = Buf::empty();
        assert_eq!(b.fill_upto(&[1, 2, 3], BUF_SIZE), 0);
        assert!(b.spare_all().is_empty());
        assert!(b.is_empty());
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
