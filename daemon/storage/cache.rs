//! The read cache: which blobs ecrld keeps in the page cache, and the memory it keeps them in.
//!
//! A blob read that is not in the page cache either fills it as it goes (read through the
//! page cache, so that the next read of the blob comes from memory) or bypasses it (O_DIRECT
//! into reused buffers). Filling costs memory, and on VMs that hand memory back to their host
//! (free page reporting, as here) it costs far more than the read: memory the guest freed a
//! few seconds earlier takes about 3 s of CPU per GiB to touch again, so a pull that fills the
//! page cache with fresh memory runs at 0.3 GB/s where the disk gives 1.5–3 GB/s. Memory freed
//! just before it is used again costs nothing extra.
//!
//! So the cache fills only with memory it recycles, and never past its budget
//! (`storage.read_cache`):
//! - at start, a background thread at idle priority prepares the budget's worth of page cache
//!   (the *reserve*: pages of a sparse file in the data dir, which need no disk and which the
//!   kernel may take back at any time, like any clean page cache);
//! - a read that fills `n` bytes first releases `n` bytes of the reserve, or, once the reserve
//!   is used up, of the blobs read least recently, and fills at once into the pages just freed;
//! - a read the cache cannot make room for (a blob larger than the budget, or no recyclable
//!   memory) bypasses the page cache, and so does one whose fill turns out to be slow anyway
//!   (see [`fresh_memory`]);
//! - a blob known to be read again soon but not read through the store yet (one the
//!   pull-through cache fetched while streaming it to its first client) is *warmed*: the same
//!   background thread reads it in, the same way, before it prepares more reserve.
//!
//! The bookkeeping is by blob and approximate (the kernel may evict pages on its own); the
//! reader asks the kernel which ranges are actually in memory before each chunk.

use ecrl::names::Digest;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The reserve is prepared this many bytes at a time, holding the lock (at the worst rate,
/// 3 ms).
const PREPARE_STEP: u64 = 1 << 20;

/// How many blobs read once the cache remembers before it starts over.
const SEEN_MAX: usize = 4096;

/// Blobs waiting to be warmed; the oldest request goes when more come.
const WARM_MAX: usize = 64;

/// Bytes a warming reads at a time (whole large pages of the reserve are freed for each).
const WARM_STEP: u64 = 2 << 20;

/// How far past a step a warming read may read ahead: the kernel's readahead window grows
/// to the device's `read_ahead_kb` (8 MiB on these VMs' disks), and its next window is
/// started one window ahead of the reader.
const WARM_LOOKAHEAD: u64 = 16 << 20;

/// Pages are dropped from the reserve in multiples of this, whole large pages (the reserve is
/// read in with the kernel's large-page readahead, and fills reuse those pages as they are).
const RESERVE_GRAIN: u64 = 2 << 20;

/// Fills whose own CPU time passes this per MiB, over at least [`COLD_AFTER`] bytes, were
/// served with fresh memory (the reserve was taken back by the kernel, or another process
/// took the pages just freed). Recycled memory fills at about 0.25 ms/MiB, fresh memory here
/// at about 3. One window alone may take longer now and then (an interrupt, a page the
/// kernel had to find): only four times this is proof on its own.
const COLD_CPU_PER_MIB: Duration = Duration::from_micros(1000);
const COLD_AFTER: u64 = 32 << 20;

/// Whether fills are running on fresh memory: this window's `cpu` for `n` bytes, and the
/// read's fills so far, `total` for `bytes`.
pub fn fresh_memory(cpu: Duration, n: u64, total: Duration, bytes: u64) -> bool {
    let per_mib = |cpu: Duration, bytes: u64| cpu.as_secs_f64() / (bytes as f64 / (1 << 20) as f64);
    let limit = COLD_CPU_PER_MIB.as_secs_f64();
    (n >= 1 << 20 && per_mib(cpu, n) > 4.0 * limit)
        || (bytes >= COLD_AFTER && per_mib(total, bytes) > limit)
}

/// The page cache ecrld manages.
pub struct ReadCache {
    shared: Arc<Shared>,
    preparer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The sparse file whose page cache is the reserve; `None` without a budget.
    reserve: Option<(PathBuf, File)>,
    budget: u64,
}

#[derive(Default)]
struct State {
    blobs: HashMap<Digest, Kept>,
    /// Blobs read once and not (yet) admitted.
    seen: HashSet<Digest>,
    tick: u64,
    /// Bytes of blobs the cache filled and still counts as held.
    kept: u64,
    /// The reserve's prepared bytes: `[0, top)` of its file.
    top: u64,
    /// Blobs to read into the page cache (see [`ReadCache::warm`]).
    warm: VecDeque<(Digest, PathBuf)>,
    stop: bool,
}

struct Kept {
    path: PathBuf,
    /// The blob file's length: what it can hold at most.
    len: u64,
    bytes: u64,
    used: u64,
}

impl ReadCache {
    /// A cache of `budget` bytes whose reserve lives at `dir/reserve` (replaced if a previous
    /// run left one); preparing it starts at once, in the background. A budget of 0 keeps
    /// nothing: every read not already in the page cache goes O_DIRECT (and a reserve a
    /// previous run left, which a process that ended without dropping its cache does, goes).
    pub fn new(dir: &Path, budget: u64) -> io::Result<ReadCache> {
        let path = dir.join("reserve");
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let reserve = if budget > 0 {
            std::fs::create_dir_all(dir)?;
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.set_len(budget)?;
            Some((path, file))
        } else {
            None
        };
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            reserve,
            budget,
        });
        let preparer = if budget > 0 {
            let shared = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("ecrld-read-cache".into())
                    .spawn(move || shared.prepare())?,
            )
        } else {
            None
        };
        Ok(ReadCache { shared, preparer })
    }

    /// Whether a read of this blob (its file `file_len` bytes) may fill the page cache; marks
    /// it as just used. A blob is admitted on its second read: one read once (a single pull,
    /// a copy to another registry) never pushes out the blobs that are read again and again.
    pub fn admit(&self, digest: &Digest, path: &Path, file_len: u64) -> bool {
        if file_len > self.shared.budget {
            return false;
        }
        let Ok(mut state) = self.shared.state.lock() else {
            return false;
        };
        if !state.blobs.contains_key(digest) && !state.seen.remove(digest) {
            if state.seen.len() >= SEEN_MAX {
                state.seen.clear();
            }
            state.seen.insert(*digest);
            return false;
        }
        state.keep(digest, path, file_len);
        true
    }

    /// Reads a blob into the page cache in the background, as a fill would (admitted at once,
    /// into memory the cache frees for it, stopping where memory turns out fresh), so that
    /// its next read comes from memory. For a blob that is about to be read again but whose
    /// first read did not go through the store: the pull-through cache streams a fetched blob
    /// to its first client while it stores it, and the next pull of it is the one to serve
    /// as fast as a hot blob. Nothing without a budget or for a blob larger than it.
    pub fn warm(&self, digest: &Digest, path: &Path) {
        if self.shared.reserve.is_none() {
            return;
        }
        if let Ok(mut state) = self.shared.state.lock() {
            if state.warm.len() >= WARM_MAX {
                state.warm.pop_front();
            }
            state.warm.push_back((*digest, path.to_path_buf()));
        }
        self.shared.wake.notify_all();
    }

    /// Frees `n` bytes of memory the cache holds (reserve first, then the blobs used least
    /// recently, never `digest` itself), for a fill of `digest` to use at once. False, and
    /// nothing freed, when the cache holds less than that to give.
    pub fn take(&self, digest: &Digest, n: u64) -> bool {
        self.shared.take(digest, n)
    }

    /// A fill of `n` bytes that `take` made room for did not happen after all: the memory
    /// freed for it goes back to being the reserve's to prepare again.
    pub fn untake(&self, digest: &Digest, n: u64) {
        self.shared.untake(digest, n)
    }

    /// A blob is gone (deleted): its pages went with its file.
    pub fn forget(&self, digest: &Digest) {
        if let Ok(mut state) = self.shared.state.lock() {
            if let Some(kept) = state.blobs.remove(digest) {
                state.kept -= kept.bytes;
            }
        }
        self.shared.wake.notify_one();
    }

    /// The budget, what the cache holds (bytes, blobs) and the reserve prepared.
    pub fn status(&self) -> ecrl::api::system::ReadCacheInfo {
        let (held, blobs, prepared) = self
            .shared
            .state
            .lock()
            .map(|s| {
                let blobs = s.blobs.values().filter(|k| k.bytes > 0).count() as u64;
                (s.kept, blobs, s.top)
            })
            .unwrap_or_default();
        ecrl::api::system::ReadCacheInfo {
            budget_bytes: self.shared.budget,
            held_bytes: held,
            blobs,
            prepared_bytes: prepared,
        }
    }

    /// Bytes of a blob the cache counts as held.
    #[cfg(test)]
    pub fn held(&self, digest: &Digest) -> u64 {
        let state = self.shared.state.lock().unwrap();
        state.blobs.get(digest).map_or(0, |k| k.bytes)
    }

    /// Bytes of the reserve prepared and held.
    #[cfg(test)]
    pub fn reserve_ready(&self) -> u64 {
        self.shared.state.lock().map(|s| s.top).unwrap_or(0)
    }
}

impl State {
    /// Counts a blob as admitted and just used.
    fn keep(&mut self, digest: &Digest, path: &Path, file_len: u64) {
        self.tick += 1;
        let tick = self.tick;
        if self.blobs.len() >= SEEN_MAX && !self.blobs.contains_key(digest) {
            // Admitted blobs whose reads found them in memory anyway hold nothing of ours.
            self.blobs.retain(|_, k| k.bytes > 0);
        }
        self.seen.remove(digest);
        self.blobs
            .entry(*digest)
            .or_insert_with(|| Kept {
                path: path.to_path_buf(),
                len: file_len,
                bytes: 0,
                used: tick,
            })
            .used = tick;
    }
}

impl Shared {
    /// See [`ReadCache::take`].
    fn take(&self, digest: &Digest, n: u64) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let state = &mut *state;
        // Readers of one blob at once may fill the same pages: it never holds more than its
        // file.
        let n = match state.blobs.get(digest) {
            Some(kept) => n.min(kept.len - kept.bytes),
            None => n,
        };
        if n == 0 {
            return true;
        }
        let own = state.blobs.get(digest).map_or(0, |k| k.bytes);
        let others = state.kept - own;
        if state.top + others < n {
            return false;
        }
        let mut need = n;
        if let Some((_, file)) = &self.reserve {
            let k = need.min(state.top);
            if k > 0 {
                // Whole large pages go: a part of one could not be freed.
                let whole = k.div_ceil(RESERVE_GRAIN).saturating_mul(RESERVE_GRAIN);
                let drop = whole.min(state.top);
                drop_pages(file, state.top - drop, drop);
                state.top -= drop;
                need -= k;
            }
        }
        while need > 0 {
            let Some((&oldest, _)) = state
                .blobs
                .iter()
                .filter(|(d, k)| *d != digest && k.bytes > 0)
                .min_by_key(|(_, k)| k.used)
            else {
                break;
            };
            let kept = state.blobs.get_mut(&oldest).expect("found above");
            let k = need.min(kept.bytes);
            // Its tail goes: the bookkeeping treats what a blob holds as a prefix.
            if let Ok(file) = File::open(&kept.path) {
                drop_pages(&file, kept.bytes - k, k);
            }
            kept.bytes -= k;
            if kept.bytes == 0 {
                // Out of the cache: its next read is a first one again.
                state.blobs.remove(&oldest);
            }
            state.kept -= k;
            need -= k;
        }
        if let Some(kept) = state.blobs.get_mut(digest) {
            kept.bytes += n;
        }
        state.kept += n;
        true
    }

    /// See [`ReadCache::untake`].
    fn untake(&self, digest: &Digest, n: u64) {
        if let Ok(mut state) = self.state.lock() {
            if let Some(kept) = state.blobs.get_mut(digest) {
                kept.bytes = kept.bytes.saturating_sub(n);
            }
            state.kept = state.kept.saturating_sub(n);
        }
        self.wake.notify_one();
    }

    /// Warms one blob (see [`ReadCache::warm`]): a step at a time, each read into memory freed
    /// for it just before; the steps already in memory are counted, not read. Stops when the
    /// blob is gone, the cache has no more to give, or memory turns out fresh (slow to fill).
    ///
    /// The steps are read (into `scratch`, thrown away), not read ahead: `readahead(2)` fills
    /// the page cache with 4 KiB pages, where a read fills it with large ones as a pull's own
    /// fill does, and a pull of 4 KiB pages costs ecrld 13 % more CPU (each page marked
    /// accessed on its own). A read also reads ahead, up to [`WARM_LOOKAHEAD`] past the step:
    /// room is made for that too before it happens, so the cache never holds more than it
    /// counts.
    fn warm_blob(&self, digest: &Digest, path: &Path, scratch: &mut [u8]) {
        let Ok(file) = File::open(path) else { return };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        if len > self.budget {
            return;
        }
        match self.state.lock() {
            Ok(mut state) if !state.stop => state.keep(digest, path, len),
            _ => return,
        }
        let (mut cpu_total, mut filled) = (Duration::ZERO, 0u64);
        // Bytes from the start of the blob that room was made for.
        let mut taken = 0u64;
        let mut at = 0;
        while at < len {
            let n = WARM_STEP.min(len - at);
            if self.state.lock().map_or(true, |s| s.stop) {
                return;
            }
            if resident(&file, at, n).unwrap_or(false) {
                // In memory already (read ahead by the step before, or by a reader): counted.
                if at + n > taken {
                    if !self.take(digest, at + n - taken) {
                        return;
                    }
                    taken = at + n;
                }
                at += n;
                continue;
            }
            let upto = (at + n + WARM_LOOKAHEAD).min(len);
            let room = upto.saturating_sub(taken);
            if room > 0 && !self.take(digest, room) {
                return;
            }
            taken = taken.max(upto);
            let before = thread_cpu();
            // The kernel reads the step (and ahead) into the page cache, the pages allocated
            // here, in this thread.
            if !read_through(&file, at, n, scratch) {
                self.untake(digest, room);
                return;
            }
            // The pages read ahead were allocated in this read too: its CPU is for all the
            // room it took.
            let grown = room.max(n);
            let cpu = thread_cpu().saturating_sub(before);
            cpu_total += cpu;
            filled += grown;
            if fresh_memory(cpu, grown, cpu_total, filled) {
                tracing::debug!(%digest, filled, "warming a blob found only fresh memory: stopped");
                return;
            }
            at += n;
        }
    }

    /// Prepares the reserve until it and the blobs held fill the budget, then waits for room;
    /// warms the blobs asked for first.
    fn prepare(&self) {
        let Some((_, file)) = &self.reserve else {
            return;
        };
        idle_priority();
        let mut step = vec![0u8; PREPARE_STEP as usize];
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        loop {
            if state.stop {
                return;
            }
            if let Some((digest, path)) = state.warm.pop_front() {
                drop(state);
                self.warm_blob(&digest, &path, &mut step);
                state = match self.state.lock() {
                    Ok(state) => state,
                    Err(_) => return,
                };
                continue;
            }
            if state.top + state.kept + PREPARE_STEP > self.budget {
                state = match self.wake.wait(state) {
                    Ok(state) => state,
                    Err(_) => return,
                };
                continue;
            }
            // The reserve file is a hole: reading it puts zeroed pages in the page cache (large
            // ones, as the kernel reads ahead) without touching the disk.
            if file.read_exact_at(&mut step, state.top).is_err() {
                return;
            }
            state.top += PREPARE_STEP;
            // Let fills in: they wait for this lock.
            drop(state);
            std::thread::yield_now();
            state = match self.state.lock() {
                Ok(state) => state,
                Err(_) => return,
            };
        }
    }
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(preparer) = self.preparer.take() {
            let _ = preparer.join();
        }
        if let Some((path, _)) = &self.shared.reserve {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The page cache of `len` bytes of `file` from `at` goes (clean pages only; blob files and
/// the reserve have no others).
fn drop_pages(file: &File, at: u64, len: u64) {
    // SAFETY: fadvise on an fd we own, with integer arguments.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            at as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
}

/// Reads `n` bytes of `file` from `at` through the page cache, `scratch` at a time; false
/// when the file ends before or cannot be read.
fn read_through(file: &File, mut at: u64, n: u64, scratch: &mut [u8]) -> bool {
    let end = at + n;
    while at < end {
        let want = scratch.len().min((end - at) as usize);
        match file.read_at(&mut scratch[..want], at) {
            Ok(0) => return false,
            Ok(got) => at += got as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// This thread runs only when a core would otherwise idle.
pub fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets this thread's (tid 0) policy from a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// The CPU time this thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Whether all of `len` bytes of `file` from `at` are in the page cache.
pub fn resident(file: &File, at: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    match cachestat(file, at, len) {
        Ok(cached) => {
            let page = page_size();
            let first = at / page;
            let last = (at + len - 1) / page;
            let pages = last - first + 1;
            Ok(cached >= pages)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => mincore(file, at, len),
        Err(e) => Err(e),
    }
}

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat(2)` (Linux 6.5): pages of the range in the page cache.
fn cachestat(file: &File, at: u64, len: u64) -> io::Result<u64> {
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = CachestatRange { off: at, len };
    let mut stat = Cachestat::default();
    // SAFETY: the syscall reads `range` and writes `stat`, both ours and of the kernel's
    // layout; flags must be 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.nr_cache)
}

/// `resident` for kernels before `cachestat`: maps the range (populating nothing) and asks
/// `mincore`.
fn mincore(file: &File, at: u64, len: u64) -> io::Result<bool> {
    let page = page_size();
    let start = at - at % page;
    let map_len = (at + len - start) as usize;
    // Nothing reads through this mapping; it is unmapped below.
    let ptr = super::map::map_shared(file, start, map_len)?;
    let pages = map_len.div_ceil(page as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping made above.
    let rc = unsafe { libc::mincore(ptr, map_len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(ptr, map_len) };
    if rc != 0 {
        return Err(err);
    }
    Ok(vec.iter().all(|b| b & 1 == 1))
}

fn page_size() -> u64 {
    super::map::page_size() as u64
}

/// The default budget: an eighth of the machine's memory, at most 2 GiB.
pub fn default_budget() -> u64 {
    // SAFETY: sysconf with constant arguments.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let total = if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        0
    };
    (total / 8).min(2 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn digest(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    fn wait_ready(cache: &ReadCache, want: u64) {
        for _ in 0..500 {
            if cache.reserve_ready() >= want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("reserve stuck at {}", cache.reserve_ready());
    }

    #[test]
    fn fills_take_the_reserve_then_the_least_recently_used_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(&dir.path().join("cache"), 8 << 20).unwrap();
        wait_ready(&cache, 8 << 20);
        let blob = |n: u8| {
            let path = dir.path().join(format!("b{n}"));
            File::create(&path)
                .unwrap()
                .write_all(&vec![n; 4 << 20])
                .unwrap();
            path
        };
        let (a, b, c) = (blob(1), blob(2), blob(3));
        // Admitted on the second read.
        assert!(!cache.admit(&digest(1), &a, 4 << 20));
        assert!(cache.admit(&digest(1), &a, 4 << 20));
        assert!(cache.take(&digest(1), 4 << 20));
        assert!(!cache.admit(&digest(2), &b, 4 << 20));
        assert!(cache.admit(&digest(2), &b, 4 << 20));
        assert!(cache.take(&digest(2), 4 << 20));
        assert_eq!(cache.reserve_ready(), 0);
        // The reserve is gone: a third blob's fill takes the first blob's pages, the one
        // used least recently (after b was used again).
        assert!(cache.admit(&digest(2), &b, 4 << 20));
        assert!(!cache.admit(&digest(3), &c, 4 << 20));
        assert!(cache.admit(&digest(3), &c, 4 << 20));
        assert!(cache.take(&digest(3), 4 << 20));
        {
            let state = cache.shared.state.lock().unwrap();
            assert!(!state.blobs.contains_key(&digest(1)));
            assert_eq!(state.blobs[&digest(2)].bytes, 4 << 20);
            assert_eq!(state.blobs[&digest(3)].bytes, 4 << 20);
            assert_eq!(state.kept, 8 << 20);
        }
        // A blob never counts more than its file: readers of it at once share its pages.
        assert!(cache.take(&digest(3), 4 << 20));
        assert_eq!(cache.held(&digest(3)), 4 << 20);
        // More than the others hold: refused, nothing freed.
        assert!(!cache.take(&digest(9), 16 << 20));
        assert_eq!(cache.shared.state.lock().unwrap().kept, 8 << 20);
        // Too big for the budget: not admitted.
        assert!(!cache.admit(&digest(4), &c, 9 << 20));
        // Deleted blobs give their share back to the reserve, which is prepared again.
        cache.forget(&digest(2));
        wait_ready(&cache, 4 << 20);
    }

    #[test]
    fn a_warmed_blob_is_read_into_memory_and_admitted_without_a_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(&dir.path().join("cache"), 64 << 20).unwrap();
        wait_ready(&cache, 64 << 20);
        // Longer than a warming's read-ahead: what the kernel reads past a step is counted too.
        let len = 40u64 << 20;
        let path = dir.path().join("blob");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![5u8; len as usize]).unwrap();
        file.sync_all().unwrap();
        drop_pages(&file, 0, len);
        cache.warm(&digest(5), &path);
        let file = File::open(&path).unwrap();
        for _ in 0..500 {
            if resident(&file, 0, len).unwrap()
                && cache.shared.state.lock().unwrap().warm.is_empty()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(resident(&file, 0, len).unwrap());
        // Its next read is admitted: it is the one to be served from memory.
        assert!(cache.admit(&digest(5), &path, len));
        // What it filled counts against the budget (the reserve gave it the room), all of it.
        let state = cache.shared.state.lock().unwrap();
        assert!(state.top + state.kept <= 64 << 20);
        assert_eq!(state.blobs[&digest(5)].bytes, len);
        drop(state);
        // A missing blob, one larger than the budget, and any blob without a budget: nothing.
        cache.warm(&digest(6), &dir.path().join("missing"));
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(96 << 20).unwrap();
        cache.warm(&digest(7), &big);
        let none = ReadCache::new(&dir.path().join("none"), 0).unwrap();
        none.warm(&digest(5), &path);
        for _ in 0..500 {
            if cache.shared.state.lock().unwrap().warm.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        let state = cache.shared.state.lock().unwrap();
        assert!(!state.blobs.contains_key(&digest(6)));
        assert!(!state.blobs.contains_key(&digest(7)));
        assert!(none.shared.state.lock().unwrap().warm.is_empty());
    }

    #[test]
    fn fresh_memory_is_a_slow_fill_kept_up_or_one_far_too_slow() {
        let ms = Duration::from_millis;
        // Recycled: 0.25 ms/MiB.
        assert!(!fresh_memory(ms(1), 4 << 20, ms(16), 64 << 20));
        // A window of 1.5 ms/MiB now and then is no proof, early or late.
        assert!(!fresh_memory(ms(6), 4 << 20, ms(6), 4 << 20));
        assert!(!fresh_memory(ms(6), 4 << 20, ms(30), 64 << 20));
        // Kept up over 32 MiB, or 4 ms/MiB at once, is.
        assert!(fresh_memory(ms(12), 4 << 20, ms(96), 32 << 20));
        assert!(fresh_memory(ms(20), 4 << 20, ms(20), 4 << 20));
        // Too little to judge.
        assert!(!fresh_memory(ms(20), 4096, ms(20), 4096));
    }

    #[test]
    fn admitted_blobs_that_hold_nothing_are_not_remembered_forever() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(&dir.path().join("cache"), 8 << 20).unwrap();
        for i in 0..(SEEN_MAX as u32 + 100) {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            let d = Digest::from_bytes(bytes);
            assert!(!cache.admit(&d, dir.path(), 1 << 20));
            assert!(cache.admit(&d, dir.path(), 1 << 20));
        }
        let state = cache.shared.state.lock().unwrap();
        assert!(state.blobs.len() <= SEEN_MAX, "{}", state.blobs.len());
        assert!(state.seen.len() <= SEEN_MAX);
    }

    #[test]
    fn no_budget_keeps_nothing_and_makes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(&dir.path().join("cache"), 0).unwrap();
        assert!(!cache.admit(&digest(1), dir.path(), 1));
        assert!(!cache.take(&digest(1), 1));
        assert!(!dir.path().join("cache").exists());
        drop(cache);

        // A reserve a run that was killed left behind goes, budget or not.
        let left = dir.path().join("left");
        std::fs::create_dir_all(&left).unwrap();
        File::create(left.join("reserve"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let cache = ReadCache::new(&left, 0).unwrap();
        assert!(!left.join("reserve").exists());
        assert_eq!(cache.status().budget_bytes, 0);
    }

    #[test]
    fn residency_is_what_the_kernel_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path)
            .unwrap()
            .write_all(&vec![7u8; 1 << 20])
            .unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        drop_pages(&file, 0, 1 << 20);
        // Some filesystems (tmpfs) keep every page: only check the way back in.
        let mut buf = vec![0u8; 1 << 20];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert!(resident(&file, 0, 1 << 20).unwrap());
        assert!(resident(&file, 4095, 2).unwrap());
        assert!(mincore(&file, 12_345, 100_000).unwrap());
        assert!(resident(&file, 0, 0).unwrap());
    }
}
