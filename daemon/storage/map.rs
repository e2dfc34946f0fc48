//! Read-only memory maps of blob files, for reads served from the page cache.
//!
//! A hot blob's pages are already in memory: mapping them and handing the mapping to hyper
//! lets the kernel copy straight from the page cache into the socket, where a `read` would
//! first copy every byte into a buffer of ours. Blob files are immutable once committed
//! (written under a temporary name, renamed into place, only ever unlinked), and a mapping
//! keeps an unlinked file's pages alive, so a mapped range stays valid for as long as it is
//! held. Ranges are checked against the file's length before mapping: the bytes past the
//! end of a file cannot be touched through a map.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::ptr::NonNull;

/// A mapped range of a file. Unmapped when dropped.
pub struct Mapped {
    base: NonNull<u8>,
    map_len: usize,
    /// The wanted bytes start this far into the mapping (file offsets must be page aligned).
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; it has no thread affinity.
unsafe impl Send for Mapped {}
// SAFETY: shared access only reads.
unsafe impl Sync for Mapped {}

/// A fresh read-only shared mapping of `len` bytes of `file` from the page-aligned `at`,
/// nothing faulted in; the caller unmaps it.
pub(super) fn map_shared(file: &File, at: u64, len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a new mapping of a file we hold open; the kernel picks the address. Failure is
    // reported as MAP_FAILED and checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            at as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr)
}

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf with a constant argument.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

impl Mapped {
    /// Maps `len` bytes of `file` from `offset`, its pages faulted in at once (without
    /// readahead). `file_len` is
    /// the file's length, which the range must not pass.
    pub fn new(file: &File, file_len: u64, offset: u64, len: usize) -> io::Result<Mapped> {
        if offset + len as u64 > file_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shorter than the range read",
            ));
        }
        if len == 0 {
            return Ok(Mapped {
                base: NonNull::dangling(),
                map_len: 0,
                skip: 0,
                len: 0,
            });
        }
        let page = page_size() as u64;
        let at = offset - offset % page;
        let skip = (offset - at) as usize;
        let map_len = skip + len;
        let ptr = map_shared(file, at, map_len)?;
        let base =
            NonNull::new(ptr as *mut u8).ok_or_else(|| io::Error::other("mmap gave null"))?;
        let mapped = Mapped {
            base,
            map_len,
            skip,
            len,
        };
        // No readahead from faults on this mapping: the reader maps what is in the page cache,
        // and a fault on a page the kernel marked for readahead would start filling the cache
        // past it, in memory the read cache did not make room for (see `super::cache`). Then
        // the pages are faulted in at once (MADV_POPULATE_READ, Linux 5.14; before it, by a
        // read of each page).
        // SAFETY: advice on the mapping made above, which `mapped` owns.
        unsafe {
            libc::madvise(ptr, map_len, libc::MADV_RANDOM);
            if libc::madvise(ptr, map_len, libc::MADV_POPULATE_READ) != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err);
                }
                let page = page_size();
                let mut at = 0;
                while at < map_len {
                    std::ptr::read_volatile((ptr as *const u8).add(at));
                    at += page;
                }
            }
        }
        Ok(mapped)
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `skip + len == map_len` bytes are mapped readable for as long as self
        // lives, and they lie within the file (checked at `new`).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.skip), self.len) }
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.map_len > 0 {
            // SAFETY: unmapping exactly the mapping made in `new`, once.
            unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.map_len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_unaligned_ranges_and_refuses_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let file = File::open(&path).unwrap();
        let len = data.len() as u64;
        for (offset, n) in [
            (0, 20_000),
            (1, 5),
            (4095, 2),
            (4096, 4096),
            (12_345, 7_655),
        ] {
            let m = Mapped::new(&file, len, offset, n).unwrap();
            assert_eq!(&m[..], &data[offset as usize..offset as usize + n]);
        }
        assert!(Mapped::new(&file, len, 0, 0).unwrap().is_empty());
        let err = Mapped::new(&file, len, 19_999, 2).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // An unlinked file's mapping stays readable.
        let m = Mapped::new(&file, len, 100, 50).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(file);
        assert_eq!(&m[..], &data[100..150]);
    }
}
