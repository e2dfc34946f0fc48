use super::buf::BUF_SIZE;
use super::crypt::{self, HEADER, PLAIN, SEGMENT};
use super::keys::fake::FakeKeyring;
use super::writer::SMALL;
use super::{BlobStore, OpenError, StoreError, StoreOptions, WARM_SESSIONS};
use bytes::Bytes;
use ecrl::api::system::KeyStore;
use ecrl::config::Encryption;
use ecrl::names::Digest;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for word in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    out
}

/// The read cache of test stores: room for a few of their blobs.
const TEST_READ_CACHE: u64 = 64 << 20;

/// Every test runs in both modes.
const MODES: [Encryption; 2] = [Encryption::Aes256Gcm, Encryption::None];

/// Opens the store on `root` in `mode`, on a machine without a keyring: the key goes to a
/// file under `root/keys` (found there again when the store is opened again).
pub(super) fn open_store(root: &Path, mode: Encryption) -> BlobStore {
    open_store_with(root, mode, true)
}

fn open_store_with(root: &Path, mode: Encryption, direct: bool) -> BlobStore {
    let options = StoreOptions {
        encryption: Some(mode),
        key_dir: root.join("keys"),
        keyring: &FakeKeyring::none(),
        upload_memory: usize::MAX,
        read_cache: TEST_READ_CACHE,
    };
    BlobStore::open_with(root, &options, direct).unwrap()
}

fn digest_of(data: &[u8]) -> Digest {
    Digest::from_bytes(Sha256::digest(data).into())
}

/// A body made of pieces of the given sizes, cycling, over `data`.
fn body(
    data: &Bytes,
    sizes: &[usize],
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send {
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let end = (at + sizes[i % sizes.len()]).min(data.len());
        pieces.push(Ok(data.slice(at..end)));
        at = end;
        i += 1;
    }
    futures_util::stream::iter(pieces)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_nothing_left(root: &Path) {
    assert_eq!(files_under(&root.join("blobs")), Vec::<PathBuf>::new());
    assert_eq!(files_under(&root.join("uploads")), Vec::<PathBuf>::new());
}

async fn read_range(store: &BlobStore, digest: &Digest, range: std::ops::Range<u64>) -> Vec<u8> {
    try_read_range(store, digest, range).await.unwrap()
}

/// A range read to its end, or its first error.
async fn try_read_range(
    store: &BlobStore,
    digest: &Digest,
    range: std::ops::Range<u64>,
) -> io::Result<Vec<u8>> {
    collect(store.read(digest, range).await?).await
}

/// A stream read to its end, or its first error.
async fn collect(mut stream: super::BlobStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn blob_file(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// The blob's file holds `data` as the store's mode says: as it is, or encrypted (the
/// right length, and no plaintext where a plain file would have it).
fn assert_stored_as(store: &BlobStore, path: &Path, data: &[u8]) {
    let raw = std::fs::read(path).unwrap();
    match store.encryption().mode {
        Encryption::None => assert!(raw == data, "{} differs", path.display()),
        Encryption::Aes256Gcm => {
            assert_eq!(raw.len() as u64, crypt::sealed_len(data.len() as u64));
            assert_eq!(&raw[..8], b"ECRLBLOB");
            let n = data.len().min(PLAIN);
            if n >= 16 {
                assert!(raw[HEADER..HEADER + n] != data[..n], "plaintext on disk");
                assert!(
                    !raw.windows(16).any(|w| w == &data[..16]),
                    "plaintext on disk"
                );
            }
        }
    }
}

async fn push(store: &BlobStore, data: &Bytes, sizes: &[usize]) -> Result<u64, StoreError> {
    let id = store.upload_start().await?;
    store.upload_write(&id, None, body(data, sizes)).await?;
    store.upload_finish(&id, &digest_of(data)).await
}

async fn round_trip(store: &BlobStore, root: &Path, len: usize, seed: u64) {
    let data = Bytes::from(random_bytes(len, seed));
    let digest = digest_of(&data);
    assert_eq!(
        push(store, &data, &[256 * 1024, 65_537, 1]).await.unwrap(),
        len as u64
    );
    assert_eq!(store.stat(&digest).await.unwrap(), Some(len as u64));
    // First read (O_DIRECT when on), then a second one through the page cache.
    assert!(read_range(store, &digest, 0..len as u64).await == data[..]);
    assert!(read_range(store, &digest, 0..len as u64).await == data[..]);
    assert!(store.read_all(&digest).await.unwrap() == data);
    // fsck's one-pass read hashes it to its name.
    assert_eq!(
        store.hash_blob(&digest).await.unwrap(),
        (len as u64, digest)
    );
    assert_stored_as(store, &blob_file(root, &digest), &data);
    assert_eq!(files_under(&root.join("uploads")), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blob_round_trip() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        round_trip(&store, dir.path(), 64 << 20, 1).await;
        // Not a multiple of 4096: the unaligned tail is written at the commit.
        round_trip(&store, dir.path(), (9 << 20) + 12_345, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_round_trip() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        for (i, len) in [0, 1, 4096, 4097, SMALL - 1, SMALL, SMALL + 1]
            .into_iter()
            .enumerate()
        {
            round_trip(&store, dir.path(), len, 10 + i as u64).await;
        }
        let data = Bytes::from_static(b"{\"schemaVersion\":2}");
        let digest = store.put(data.clone(), None).await.unwrap();
        assert_eq!(digest, digest_of(&data));
        assert_eq!(store.read_all(&digest).await.unwrap(), data);
        assert_eq!(
            store.put(data.clone(), Some(&digest)).await.unwrap(),
            digest
        );
        assert!(store.delete(&digest).await.unwrap());
        assert_eq!(store.stat(&digest).await.unwrap(), None);
        assert!(!store.delete(&digest).await.unwrap());
    }
}

/// Many PATCHes of odd sizes, each with its offset: exercises the carried unaligned tail,
/// the switch from memory to file, and requests that never fill a buffer.
async fn chunked_odd_sizes(store: &BlobStore, root: &Path) {
    let len = 3 * BUF_SIZE + 777;
    let data = Bytes::from(random_bytes(len, 42));
    let digest = digest_of(&data);
    let id = store.upload_start().await.unwrap();
    let patches = [
        1,
        4095,
        1,
        SMALL,
        4096,
        5000,
        BUF_SIZE + 3,
        7,
        BUF_SIZE - 9,
        123_457,
    ];
    let mut at = 0;
    let mut i = 0;
    while at < len {
        let end = (at + patches[i % patches.len()]).min(len);
        let piece = data.slice(at..end);
        let size = store
            .upload_write(&id, Some(at as u64), body(&piece, &[1000, 65_536, 3]))
            .await
            .unwrap();
        assert_eq!(size, end as u64);
        assert_eq!(store.upload_size(&id).await.unwrap(), end as u64);
        at = end;
        i += 1;
    }
    assert_eq!(store.upload_finish(&id, &digest).await.unwrap(), len as u64);
    assert!(read_range(store, &digest, 0..len as u64).await == data[..]);
    assert_stored_as(store, &blob_file(root, &digest), &data);
    assert_eq!(files_under(&root.join("uploads")), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_odd_sizes_hashes_correctly() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        chunked_odd_sizes(&store, dir.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_without_o_direct() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store_with(dir.path(), mode, false);
        chunked_odd_sizes(&store, dir.path()).await;
        round_trip(&store, dir.path(), (5 << 20) + 1, 3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_tmpfs() {
    for mode in MODES {
        // tmpfs refuses O_DIRECT on older kernels (EINVAL): the store falls back to buffered I/O.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let store = open_store(dir.path(), mode);
        chunked_odd_sizes(&store, dir.path()).await;
        round_trip(&store, dir.path(), 4096, 7).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_fan_out_directory_is_made_again() {
    // Small blobs are written as unnamed files in their directory, bigger ones renamed
    // from uploads/: both make the directory again when someone removed it.
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        for (i, len) in [4096, SMALL + 1].into_iter().enumerate() {
            let data = Bytes::from(random_bytes(len, 40 + i as u64));
            let digest = digest_of(&data);
            let fan = blob_file(dir.path(), &digest).parent().unwrap().to_owned();
            std::fs::remove_dir(&fan).unwrap();
            assert_eq!(push(&store, &data, &[1000]).await.unwrap(), len as u64);
            assert!(read_range(&store, &digest, 0..len as u64).await == data[..]);
            assert_stored_as(&store, &blob_file(dir.path(), &digest), &data);
            assert_eq!(files_under(&fan), vec![blob_file(dir.path(), &digest)]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_unlisted_keeps_what_is_listed_what_is_not_a_blob_and_a_foreign_store() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let mut digests = Vec::new();
        for (i, len) in [10, 4096, SMALL + 1].into_iter().enumerate() {
            let data = Bytes::from(random_bytes(len, 60 + i as u64));
            push(&store, &data, &[len]).await.unwrap();
            digests.push(digest_of(&data));
        }
        let stray = dir.path().join("blobs/sha256/00/not-a-digest");
        std::fs::write(&stray, b"x").unwrap();
        // Two of three unheld: more than half, so nothing goes (metadata that is not these
        // blobs' own).
        let keep = HashSet::from([digests[0]]);
        let sweep = store.remove_unlisted(&keep, &HashSet::new()).unwrap();
        assert_eq!((sweep.blobs, sweep.unheld, sweep.removed), (3, 2, 0));
        assert_eq!(sweep.left, 2);
        assert!(digests.iter().all(|d| blob_file(dir.path(), d).exists()));
        // What deletes freed goes all the same; the unexplained rest stays.
        let released = HashSet::from([digests[1]]);
        let sweep = store.remove_unlisted(&HashSet::new(), &released).unwrap();
        assert_eq!(
            (sweep.blobs, sweep.unheld, sweep.removed, sweep.left),
            (3, 2, 1, 2)
        );
        assert!(blob_file(dir.path(), &digests[0]).exists());
        assert!(!blob_file(dir.path(), &digests[1]).exists());
        let data = Bytes::from(random_bytes(4096, 61));
        push(&store, &data, &[4096]).await.unwrap();
        assert_eq!(digest_of(&data), digests[1]);
        let keep = HashSet::from([digests[0], digests[2]]);
        let gone = std::fs::metadata(blob_file(dir.path(), &digests[1]))
            .unwrap()
            .len();
        let sweep = store.remove_unlisted(&keep, &HashSet::new()).unwrap();
        assert_eq!(
            sweep,
            super::Sweep {
                blobs: 3,
                unheld: 1,
                removed: 1,
                bytes: gone,
                left: 0,
            }
        );
        assert_eq!(store.stat(&digests[1]).await.unwrap(), None);
        assert_eq!(store.stat(&digests[0]).await.unwrap(), Some(10));
        assert_eq!(
            store.stat(&digests[2]).await.unwrap(),
            Some(SMALL as u64 + 1)
        );
        assert!(stray.exists());
        let sweep = store.remove_unlisted(&keep, &HashSet::new()).unwrap();
        assert_eq!((sweep.blobs, sweep.unheld, sweep.removed), (2, 0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_at_odd_offsets() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let len = 2 * BUF_SIZE + 5555;
        let data = Bytes::from(random_bytes(len, 7));
        let digest = digest_of(&data);
        push(&store, &data, &[1 << 20]).await.unwrap();
        let len = len as u64;
        let ranges = [
            1..4097,
            4095..(BUF_SIZE as u64 + 3),
            12_345..len,
            len - 1..len,
            0..1,
            4096..8192,
            3..(2 * BUF_SIZE as u64 + 1),
            (BUF_SIZE as u64 - 1)..(BUF_SIZE as u64 + 1),
            100..(300 * 1024),
        ];
        // Twice: the first read of the blob is O_DIRECT, later ones go through the cache.
        for _ in 0..2 {
            for r in ranges.iter().cloned() {
                let got = read_range(&store, &digest, r.clone()).await;
                assert!(got == data[r.start as usize..r.end as usize], "range {r:?}");
            }
        }
        // A fresh store: its first read of the blob is a cold one at an odd offset.
        let again = open_store(dir.path(), mode);
        let got = read_range(&again, &digest, 4097..len - 3).await;
        assert!(got == data[4097..len as usize - 3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_leaves_nothing() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        for len in [100, SMALL + 1, BUF_SIZE * 2 + 3] {
            let data = Bytes::from(random_bytes(len, len as u64));
            let wrong = digest_of(b"something else");
            let id = store.upload_start().await.unwrap();
            store
                .upload_write(&id, None, body(&data, &[70_000]))
                .await
                .unwrap();
            match store.upload_finish(&id, &wrong).await {
                Err(StoreError::DigestMismatch { expected, actual }) => {
                    assert_eq!(expected, wrong);
                    assert_eq!(actual, digest_of(&data));
                }
                other => panic!("expected a digest mismatch, got {other:?}"),
            }
            assert!(matches!(
                store.upload_size(&id).await,
                Err(StoreError::UploadNotFound)
            ));
            assert_eq!(store.stat(&wrong).await.unwrap(), None);
            assert_eq!(store.stat(&digest_of(&data)).await.unwrap(), None);
            assert_nothing_left(dir.path());
            assert!(matches!(
                store.put(data.clone(), Some(&wrong)).await,
                Err(StoreError::DigestMismatch { .. })
            ));
            assert_nothing_left(dir.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_mismatch_is_a_range_error() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let data = Bytes::from(random_bytes(SMALL * 2, 5));
        let id = store.upload_start().await.unwrap();
        store
            .upload_write(&id, Some(0), body(&data.slice(..1000), &[1000]))
            .await
            .unwrap();
        match store
            .upload_write(&id, Some(999), body(&data.slice(999..), &[1000]))
            .await
        {
            Err(StoreError::RangeMismatch { offset, size }) => {
                assert_eq!((offset, size), (999, 1000));
            }
            other => panic!("expected a range mismatch, got {other:?}"),
        }
        // The session survives a refused chunk.
        store
            .upload_write(&id, Some(1000), body(&data.slice(1000..), &[4000]))
            .await
            .unwrap();
        assert_eq!(
            store.upload_finish(&id, &digest_of(&data)).await.unwrap(),
            data.len() as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_body_ends_the_session_and_leaves_nothing() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        // Fails while small (in memory), after the file exists, and after full buffers went out.
        for good in [10, SMALL + 10, 2 * BUF_SIZE + 10] {
            let data = Bytes::from(random_bytes(good, 9));
            let id = store.upload_start().await.unwrap();
            let mut pieces: Vec<Result<Bytes, io::Error>> = (0..good)
                .step_by(100_000)
                .map(|at| Ok(data.slice(at..(at + 100_000).min(good))))
                .collect();
            pieces.push(Err(io::Error::other("client went away")));
            pieces.push(Ok(Bytes::from_static(b"never read")));
            match store
                .upload_write(&id, None, futures_util::stream::iter(pieces))
                .await
            {
                Err(StoreError::Body(msg)) => assert!(msg.contains("client went away")),
                other => panic!("expected a body error, got {other:?}"),
            }
            assert!(matches!(
                store.upload_size(&id).await,
                Err(StoreError::UploadNotFound)
            ));
            assert!(matches!(
                store.upload_finish(&id, &digest_of(&data)).await,
                Err(StoreError::UploadNotFound)
            ));
            assert_nothing_left(dir.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_content_leave_one_copy() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        for len in [4096, BUF_SIZE + 4097] {
            let data = Bytes::from(random_bytes(len, len as u64 + 1));
            let digest = digest_of(&data);
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let store = store.clone();
                let data = data.clone();
                tasks.push(tokio::spawn(
                    async move { push(&store, &data, &[50_000]).await },
                ));
            }
            for task in tasks {
                assert_eq!(task.await.unwrap().unwrap(), len as u64);
            }
            let hex = digest.hex();
            let fan = dir.path().join("blobs/sha256").join(&hex[..2]);
            assert_eq!(files_under(&fan), vec![fan.join(&hex)]);
            assert_stored_as(&store, &fan.join(&hex), &data);
            assert!(read_range(&store, &digest, 0..len as u64).await == data[..]);
            assert_eq!(
                files_under(&dir.path().join("uploads")),
                Vec::<PathBuf>::new()
            );
        }
        assert_eq!(
            store.bytes_stored().await.unwrap(),
            (4096 + BUF_SIZE + 4097) as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_uploads_removes_idle_sessions() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let data = Bytes::from(random_bytes(SMALL * 3, 11));
        let idle_small = store.upload_start().await.unwrap();
        let idle_big = store.upload_start().await.unwrap();
        store
            .upload_write(&idle_big, None, body(&data, &[SMALL]))
            .await
            .unwrap();
        assert_eq!(files_under(&dir.path().join("uploads")).len(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let fresh = store.upload_start().await.unwrap();
        let expired = store
            .expire_uploads(Duration::from_millis(50), Duration::MAX)
            .await;
        assert_eq!(expired.len(), 2);
        for id in [idle_small, idle_big] {
            assert!(matches!(
                store.upload_size(&id).await,
                Err(StoreError::UploadNotFound)
            ));
        }
        assert_eq!(store.upload_size(&fresh).await.unwrap(), 0);
        assert_nothing_left(dir.path());
        store.upload_cancel(&fresh).await.unwrap();
        assert!(store
            .expire_uploads(Duration::ZERO, Duration::ZERO)
            .await
            .is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_forgets_uploads() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let data = Bytes::from(random_bytes(BUF_SIZE + 5, 12));
        let id = store.upload_start().await.unwrap();
        store
            .upload_write(&id, None, body(&data, &[SMALL]))
            .await
            .unwrap();
        assert!(!files_under(&dir.path().join("uploads")).is_empty());
        let again = open_store(dir.path(), mode);
        assert!(matches!(
            again.upload_size(&id).await,
            Err(StoreError::UploadNotFound)
        ));
        assert_nothing_left(dir.path());
        for i in 0..=255u8 {
            assert!(dir.path().join(format!("blobs/sha256/{i:02x}")).is_dir());
        }
    }
}

#[test]
fn dir_sync_shared_by_concurrent_callers() {
    let dir = tempfile::tempdir().unwrap();
    let sync = std::sync::Arc::new(super::writer::DirSync::default());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let sync = sync.clone();
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    sync.sync(&path).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(sync.sync(&dir.path().join("missing")).is_err());
}

/// Sizes around segment and buffer boundaries, pushed whole and in PATCHes that end on and
/// next to segment boundaries (the segment held back for the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_that_straddle_segment_boundaries() {
    let per_buf = BUF_SIZE / SEGMENT * PLAIN;
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        for (i, len) in [
            PLAIN - 1,
            PLAIN,
            PLAIN + 1,
            2 * PLAIN,
            per_buf - 1,
            per_buf,
            per_buf + 1,
            2 * per_buf,
            2 * per_buf + PLAIN,
        ]
        .into_iter()
        .enumerate()
        {
            round_trip(&store, dir.path(), len, 100 + i as u64).await;
        }
        for patches in [
            vec![PLAIN * 2, PLAIN, SMALL + 1, per_buf],
            vec![SMALL + 1, per_buf - SMALL - 1, PLAIN],
            vec![per_buf, per_buf, 1],
        ] {
            let len: usize = patches.iter().sum();
            let data = Bytes::from(random_bytes(len, len as u64 + 3));
            let digest = digest_of(&data);
            let id = store.upload_start().await.unwrap();
            let mut at = 0;
            for patch in patches {
                let piece = data.slice(at..at + patch);
                store
                    .upload_write(&id, Some(at as u64), body(&piece, &[70_001]))
                    .await
                    .unwrap();
                at += patch;
            }
            assert_eq!(store.upload_finish(&id, &digest).await.unwrap(), len as u64);
            assert!(read_range(&store, &digest, 0..len as u64).await == data[..]);
            assert_stored_as(&store, &blob_file(dir.path(), &digest), &data);
        }
    }
}

/// Range reads that start and end on, before and after every segment boundary and the
/// boundary between two 4 MiB read chunks, cold (O_DIRECT) and through the page cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_at_every_segment_boundary() {
    let per_buf = (BUF_SIZE / SEGMENT * PLAIN) as u64;
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let len = per_buf + 3 * PLAIN as u64 + 100;
        let data = Bytes::from(random_bytes(len as usize, 77));
        let digest = digest_of(&data);
        push(&store, &data, &[1 << 20]).await.unwrap();
        let mut points = vec![0, len];
        for k in 1..=(len / PLAIN as u64) {
            let b = k * PLAIN as u64;
            points.extend([b - 1, b, b + 1]);
        }
        points.retain(|&p| p <= len);
        points.sort();
        points.dedup();
        let mut ranges = Vec::new();
        for (i, &a) in points.iter().enumerate() {
            // Short ranges from each point, and a long one into the next chunk.
            for &b in &points[i + 1..(i + 4).min(points.len())] {
                ranges.push(a..b);
            }
            ranges.push(a..(a + per_buf + 2).min(len));
        }
        ranges.retain(|r| r.start < r.end);
        for round in 0..2 {
            // A fresh store: the first read of each blob is O_DIRECT, then cached.
            let store = if round == 0 {
                store.clone()
            } else {
                open_store(dir.path(), mode)
            };
            for r in &ranges {
                let got = read_range(&store, &digest, r.clone()).await;
                assert!(
                    got == data[r.start as usize..r.end as usize],
                    "{mode} range {r:?}"
                );
            }
        }
    }
}

/// Pushes a blob of `len` bytes into the store and returns it, its digest and file.
async fn stored_blob(
    store: &BlobStore,
    root: &Path,
    len: usize,
    seed: u64,
) -> (Bytes, Digest, PathBuf) {
    let data = Bytes::from(random_bytes(len, seed));
    let digest = digest_of(&data);
    push(store, &data, &[100_000]).await.unwrap();
    (data.clone(), digest, blob_file(root, &digest))
}

/// Every read of a damaged encrypted blob is an error: never other bytes than were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_encrypted_blobs_fail_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open_store(root, Encryption::Aes256Gcm);
    // Small (read at once) and larger than one read chunk (streamed).
    for len in [3 * PLAIN + 500, BUF_SIZE + 3 * PLAIN] {
        let (data, digest, path) = stored_blob(&store, root, len, len as u64).await;
        let (_, other_digest, other_path) = stored_blob(&store, root, len, len as u64 + 1).await;
        let pristine = std::fs::read(&path).unwrap();
        let other = std::fs::read(&other_path).unwrap();
        let seg = |i: usize| HEADER + i * SEGMENT..HEADER + (i + 1) * SEGMENT;
        let len = len as u64;
        // What is done to the file, and whether reading segments 0 and 1 must fail too
        // (damage elsewhere leaves them readable, and right).
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "a flipped ciphertext byte",
                {
                    let mut f = pristine.clone();
                    f[HEADER + SEGMENT + 1000] ^= 0x40;
                    f
                },
                true,
            ),
            (
                "a flipped tag byte of the last segment",
                {
                    let mut f = pristine.clone();
                    *f.last_mut().unwrap() ^= 1;
                    f
                },
                false,
            ),
            (
                "a byte cut off",
                pristine[..pristine.len() - 1].to_vec(),
                true,
            ),
            (
                "a byte appended",
                {
                    let mut f = pristine.clone();
                    f.push(0);
                    f
                },
                true,
            ),
            (
                "the last segment cut off, the header's length to match",
                {
                    let keep = HEADER + SEGMENT * ((pristine.len() - HEADER - 1) / SEGMENT);
                    let mut f = pristine[..keep].to_vec();
                    let plain = (keep - HEADER) / SEGMENT * PLAIN;
                    f[32..40].copy_from_slice(&(plain as u64).to_le_bytes());
                    f
                },
                false,
            ),
            (
                "two segments swapped",
                {
                    let mut f = pristine.clone();
                    f[seg(0)].copy_from_slice(&pristine[seg(1)]);
                    f[seg(1)].copy_from_slice(&pristine[seg(0)]);
                    f
                },
                true,
            ),
            (
                "a segment of another blob spliced in",
                {
                    let mut f = pristine.clone();
                    f[seg(0)].copy_from_slice(&other[seg(0)]);
                    f
                },
                true,
            ),
            (
                "another blob's header",
                {
                    let mut f = pristine.clone();
                    f[..HEADER].copy_from_slice(&other[..HEADER]);
                    f
                },
                true,
            ),
            (
                "another key's id in the header",
                {
                    let mut f = pristine.clone();
                    f[16] ^= 1;
                    f
                },
                true,
            ),
            (
                "a header that is not one",
                {
                    let mut f = pristine.clone();
                    f[0] = b'X';
                    f
                },
                true,
            ),
        ];
        for (what, content, middle_fails) in cases {
            std::fs::write(&path, &content).unwrap();
            // Reads up to what the header claims, too.
            let claimed = u64::from_le_bytes(content[32..40].try_into().unwrap()).min(len);
            for fresh in [false, true] {
                // Cold (O_DIRECT) and cached first reads.
                let store = if fresh {
                    open_store(root, Encryption::Aes256Gcm)
                } else {
                    store.clone()
                };
                let whole = try_read_range(&store, &digest, 0..len).await;
                assert!(whole.is_err(), "{what} (len {len}): whole read succeeded");
                let claimed = try_read_range(&store, &digest, 0..claimed).await;
                assert!(claimed.is_err(), "{what} (len {len}): read succeeded");
                let range = PLAIN as u64 - 3..PLAIN as u64 + 3;
                match try_read_range(&store, &digest, range.clone()).await {
                    Err(_) => assert!(middle_fails, "{what}: segments 0-1 fail to read"),
                    Ok(got) => {
                        assert!(!middle_fails, "{what} (len {len}): range read succeeded");
                        assert!(got == data[range.start as usize..range.end as usize]);
                    }
                }
                if len < 256 * 1024 {
                    assert!(store.read_all(&digest).await.is_err(), "{what}: read_all");
                }
                let hashed = store.hash_blob(&digest).await;
                assert!(
                    hashed.is_err(),
                    "{what} (len {len}): fsck's read: {hashed:?}"
                );
            }
        }
        // Put back, it reads again; the other blob never stopped reading.
        std::fs::write(&path, &pristine).unwrap();
        assert!(read_range(&store, &digest, 0..len).await == data[..]);
        assert_eq!(
            read_range(&store, &other_digest, 0..len).await.len() as u64,
            len
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_encrypted_blob_is_authenticated_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), Encryption::Aes256Gcm);
    let digest = store.put(Bytes::new(), None).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(0));
    assert!(store.read_all(&digest).await.unwrap().is_empty());
    assert!(read_range(&store, &digest, 0..0).await.is_empty());
    let path = blob_file(dir.path(), &digest);
    let mut raw = std::fs::read(&path).unwrap();
    assert_eq!(raw.len(), HEADER + 16);
    raw[HEADER] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    assert!(store.read_all(&digest).await.is_err());
}

fn options<'a>(
    mode: Option<Encryption>,
    root: &Path,
    keyring: &'a FakeKeyring,
) -> StoreOptions<'a> {
    StoreOptions {
        encryption: mode,
        key_dir: root.join("keys"),
        keyring,
        upload_memory: usize::MAX,
        read_cache: TEST_READ_CACHE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_keeps_the_mode_it_was_made_with() {
    let none = FakeKeyring::none();
    // New data dirs are encrypted unless asked otherwise.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = BlobStore::open(root, &options(None, root, &none)).unwrap();
    assert_eq!(store.encryption().mode, Encryption::Aes256Gcm);
    let key = store.encryption().key.clone().unwrap();
    assert_eq!(key.store, KeyStore::File);
    assert!(key.file.as_ref().unwrap().starts_with(root.join("keys")));
    let data = Bytes::from(random_bytes(100_000, 1));
    let digest = store.put(data.clone(), None).await.unwrap();
    drop(store);
    let asked_none = BlobStore::open(root, &options(Some(Encryption::None), root, &none));
    match asked_none {
        Err(e @ OpenError::ModeMismatch { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("aes256-gcm") && text.contains("none"),
                "{text}"
            );
            assert!(text.contains(&root.display().to_string()), "{text}");
        }
        other => panic!("expected a mode mismatch, got {:?}", other.map(|_| ())),
    }
    let store = BlobStore::open(root, &options(None, root, &none)).unwrap();
    assert!(store.read_all(&digest).await.unwrap() == data);

    // Its key gone: a clear error that names the key and where it was looked for.
    let file = key.file.unwrap();
    std::fs::rename(&file, root.join("moved")).unwrap();
    match BlobStore::open(root, &options(None, root, &none)) {
        Err(OpenError::Key(e)) => {
            let text = e.to_string();
            assert!(text.contains(&file.display().to_string()), "{text}");
        }
        other => panic!("expected a missing key, got {:?}", other.map(|_| ())),
    }
    std::fs::rename(root.join("moved"), &file).unwrap();

    // Asked for none: stays none.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = BlobStore::open(root, &options(Some(Encryption::None), root, &none)).unwrap();
    assert_eq!(store.encryption().mode, Encryption::None);
    assert_eq!(store.encryption().key, None);
    drop(store);
    assert!(BlobStore::open(root, &options(Some(Encryption::Aes256Gcm), root, &none)).is_err());
    let store = BlobStore::open(root, &options(None, root, &none)).unwrap();
    assert_eq!(store.encryption().mode, Encryption::None);
    assert!(!root.join("keys").exists());

    // A data dir from before encryption (blobs, no storage.json) holds plain blobs.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = b"a blob from an older ecrl".to_vec();
    let digest = digest_of(&data);
    let path = blob_file(root, &digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    assert!(matches!(
        BlobStore::open(root, &options(Some(Encryption::Aes256Gcm), root, &none)),
        Err(OpenError::ModeMismatch { .. })
    ));
    let store = BlobStore::open(root, &options(None, root, &none)).unwrap();
    assert_eq!(store.encryption().mode, Encryption::None);
    assert_eq!(store.read_all(&digest).await.unwrap(), data);
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));

    // With a keyring, the key goes there and no file is written.
    let keyring = FakeKeyring::default();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = BlobStore::open(root, &options(None, root, &keyring)).unwrap();
    assert_eq!(
        store.encryption().key.as_ref().map(|k| k.store),
        Some(KeyStore::Keyring)
    );
    assert!(!root.join("keys").exists());
    assert_eq!(keyring.entries.lock().unwrap().len(), 1);
    drop(store);
    let store = BlobStore::open(root, &options(None, root, &keyring)).unwrap();
    assert_eq!(store.encryption().mode, Encryption::Aes256Gcm);
}

/// Descriptors this process has open now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Upload files this process has open now.
fn open_upload_files(root: &Path) -> usize {
    let uploads = root.join("uploads");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|target| target.starts_with(&uploads))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upload_sessions_hold_no_descriptor() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let before = open_fds();
        // Sessions past the in-memory size, one of them past a whole buffer (its workers
        // finish after the request), left open between requests.
        let small = Bytes::from(random_bytes(SMALL * 3 + 5, 7));
        let big = Bytes::from(random_bytes(2 * BUF_SIZE + 4099, 8));
        let mut ids = Vec::new();
        for data in std::iter::repeat_n(&small, 2 * WARM_SESSIONS).chain([&big]) {
            let id = store.upload_start().await.unwrap();
            store
                .upload_write(&id, None, body(data, &[70_000]))
                .await
                .unwrap();
            ids.push((id, data));
        }
        assert_eq!(
            files_under(&dir.path().join("uploads")).len(),
            2 * WARM_SESSIONS + 1
        );
        // Only the warmest sessions keep their file open (the coldest ones' workers close
        // theirs once they finish).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open_upload_files(dir.path()) > WARM_SESSIONS && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(open_upload_files(dir.path()) <= WARM_SESSIONS, "{mode}");
        assert!(
            open_fds() <= before + WARM_SESSIONS + 2,
            "{} > {before}",
            open_fds()
        );
        // The files are opened again for the rest, and the blobs come out whole.
        for (id, data) in ids {
            let tail = Bytes::from_static(b"end");
            let size = store
                .upload_write(&id, Some(data.len() as u64), body(&tail, &[3]))
                .await
                .unwrap();
            let mut whole = data.to_vec();
            whole.extend_from_slice(&tail);
            assert_eq!(size, whole.len() as u64);
            let digest = digest_of(&whole);
            store.upload_finish(&id, &digest).await.unwrap();
            assert!(read_range(&store, &digest, 0..size).await == whole[..]);
        }
        assert_eq!(
            files_under(&dir.path().join("uploads")),
            Vec::<PathBuf>::new()
        );
        assert_eq!(store.upload_memory_held(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_share_a_bounded_memory() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let keyring = FakeKeyring::none();
        let mut options = options(Some(mode), dir.path(), &keyring);
        options.upload_memory = 4 * SMALL;
        let store = BlobStore::open_with(dir.path(), &options, true).unwrap();
        let piece = Bytes::from(random_bytes(SMALL - 10, 9));
        let mut held = Vec::new();
        let refused = loop {
            let id = store.upload_start().await.unwrap();
            match store.upload_write(&id, None, body(&piece, &[4096])).await {
                Ok(_) => held.push(id),
                Err(e) => break (id, e),
            }
            assert!(held.len() <= 4, "{mode}: {} sessions in memory", held.len());
        };
        assert!(
            matches!(refused.1, StoreError::Busy { .. }),
            "{}",
            refused.1
        );
        assert!(store.upload_memory_held() <= 4 * SMALL);
        // The refused request changed nothing: its session is still there, empty.
        assert_eq!(store.upload_size(&refused.0).await.unwrap(), 0);
        // Memory comes back as sessions end, and the refused session goes on.
        for id in held {
            store.upload_cancel(&id).await.unwrap();
        }
        assert_eq!(store.upload_memory_held(), 0);
        store
            .upload_write(&refused.0, None, body(&piece, &[4096]))
            .await
            .unwrap();
        store
            .upload_finish(&refused.0, &digest_of(&piece))
            .await
            .unwrap();
        assert_eq!(store.upload_memory_held(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_being_written_is_not_expired_under_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), Encryption::None);
    let id = store.upload_start().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, io::Error>>();
    let rx = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.upload_write(&id, None, rx).await })
    };
    tx.send(Ok(Bytes::from(random_bytes(SMALL * 2, 3))))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Idle too long by its start, but a request is writing: it stays.
    assert!(store
        .expire_uploads(Duration::ZERO, Duration::ZERO)
        .await
        .is_empty());
    drop(tx);
    assert_eq!(writer.await.unwrap().unwrap(), (SMALL * 2) as u64);
    assert_eq!(
        store.expire_uploads(Duration::ZERO, Duration::MAX).await,
        vec![id]
    );
    assert_nothing_left(dir.path());
}

/// Waits until the read cache has prepared room for fills (it does so in the background
/// after the store opens).
async fn reserve_ready(store: &BlobStore) {
    for _ in 0..1000 {
        if store.inner.cache.reserve_ready() >= TEST_READ_CACHE / 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the read cache prepared no room in 10 s");
}

/// Drops what the page cache holds of a blob's file, as memory pressure would.
fn evict(root: &Path, digest: &Digest) {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::File::open(blob_file(root, digest)).unwrap();
    // SAFETY: fadvise on an fd we own, with integer arguments.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Whether the page cache holds all of a blob's file.
fn in_memory(root: &Path, digest: &Digest) -> bool {
    let path = blob_file(root, digest);
    let file = std::fs::File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    super::cache::resident(&file, 0, len).unwrap()
}

/// Whether the filesystem under `root` lets the page cache drop a file (tmpfs does not):
/// without it, only the mapped path can be seen.
fn evictable(root: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let path = root.join("probe");
    std::fs::write(&path, vec![1u8; 1 << 16]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: as in `evict`.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let gone = !super::cache::resident(&file, 0, 1 << 16).unwrap();
    std::fs::remove_file(&path).unwrap();
    gone
}

/// Ranges that start and end on, just before and just after the segment and window
/// boundaries near `len`'s windows, and ranges that span windows.
fn boundary_ranges(len: u64) -> Vec<std::ops::Range<u64>> {
    let window = (BUF_SIZE / SEGMENT * PLAIN) as u64;
    let mut points = vec![0, 1, len - 1, len];
    for k in 1..=(len / window) {
        for edge in [k * window, k * BUF_SIZE as u64] {
            for p in [
                edge - PLAIN as u64,
                edge - 1,
                edge,
                edge + 1,
                edge + PLAIN as u64,
            ] {
                points.push(p);
            }
        }
    }
    points.retain(|&p| p <= len);
    points.sort();
    points.dedup();
    let mut ranges = Vec::new();
    ranges.push(0..len);
    for (i, &a) in points.iter().enumerate() {
        for &b in &points[i + 1..(i + 3).min(points.len())] {
            ranges.push(a..b);
        }
        ranges.push(a..(a + window + 3).min(len));
    }
    ranges.retain(|r| r.start < r.end);
    ranges
}

async fn read_range_with(
    store: &BlobStore,
    digest: &Digest,
    range: std::ops::Range<u64>,
    cold: super::reader::Cold,
) -> Vec<u8> {
    collect(store.read_with(digest, range, cold).await.unwrap())
        .await
        .unwrap()
}

/// Every way a window is read gives the same bytes for ranges across segment and window
/// boundaries: O_DIRECT (and the page cache left alone), filling the page cache, mapped
/// from it, and a read that finds some windows in memory and others not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_path_serves_ranges_across_windows() {
    use super::reader::Cold;
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let can_evict = evictable(root);
        let store = open_store(root, mode);
        let len = 2 * BUF_SIZE + 3 * PLAIN + 100;
        let (data, digest, _) = stored_blob(&store, root, len, 99).await;
        reserve_ready(&store).await;
        let ranges = boundary_ranges(len as u64);
        let fill = || Cold::Fill {
            cache: store.inner.cache.clone(),
            digest,
        };
        let check = |got: Vec<u8>, r: &std::ops::Range<u64>, path: &str| {
            assert!(
                got == data[r.start as usize..r.end as usize],
                "{mode} {path} range {r:?}"
            );
        };

        // Straight from the disk: nothing of it lands in the page cache.
        evict(root, &digest);
        for r in &ranges {
            check(
                read_range_with(&store, &digest, r.clone(), Cold::Direct).await,
                r,
                "direct",
            );
        }
        if can_evict {
            assert!(
                !in_memory(root, &digest),
                "{mode}: a direct read filled the page cache"
            );
        }

        // Filling the page cache, window by window and range by range.
        for r in &ranges {
            evict(root, &digest);
            check(
                read_range_with(&store, &digest, r.clone(), fill()).await,
                r,
                "fill",
            );
        }
        // The whole blob once more: then all of it is in memory, and reads map it. (A machine
        // short of memory, as a concurrent build makes it, may drop pages again at once:
        // three fills in a row that each leave it out are a fill that does not fill.)
        let all = 0..len as u64;
        let mut filled = false;
        for _ in 0..3 {
            check(
                read_range_with(&store, &digest, all.clone(), fill()).await,
                &all,
                "fill",
            );
            if in_memory(root, &digest) {
                filled = true;
                break;
            }
        }
        assert!(filled, "{mode}: a fill left the blob out of memory");
        for r in &ranges {
            check(
                read_range_with(&store, &digest, r.clone(), Cold::Direct).await,
                r,
                "mapped",
            );
        }

        // Part in memory, part not: the middle window only.
        let window = (BUF_SIZE / SEGMENT * PLAIN) as u64;
        for r in &ranges {
            evict(root, &digest);
            let middle = window + 10..2 * window - 10;
            read_range_with(&store, &digest, middle, fill()).await;
            check(
                read_range_with(&store, &digest, r.clone(), Cold::Direct).await,
                r,
                "mixed",
            );
        }
    }
}

/// A blob deleted while it is being read is read to its end, whichever way its windows are
/// read; then it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_deleted_while_being_read_is_read_to_its_end() {
    for mode in MODES {
        for warm in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open_store(dir.path(), mode);
            let len = 3 * BUF_SIZE + 12_345;
            let (data, digest, _) = stored_blob(&store, dir.path(), len, 5).await;
            if warm {
                read_range(&store, &digest, 0..len as u64).await;
            }
            let mut stream = store.read(&digest, 0..len as u64).await.unwrap();
            let mut got = stream.next().await.unwrap().unwrap().to_vec();
            assert!(store.delete(&digest).await.unwrap());
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            assert!(got == data[..], "{mode} warm {warm}");
            assert_eq!(store.stat(&digest).await.unwrap(), None);
            assert!(store.read(&digest, 0..1).await.is_err());
        }
    }
}

/// 64 readers of one blob at once, while it goes from the disk into memory, all get its
/// bytes; the cache never counts more of it than its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_readers_of_one_blob() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode);
        let len = 2 * BUF_SIZE + 777;
        let (data, digest, file) = stored_blob(&store, dir.path(), len, 64).await;
        let mut readers = Vec::new();
        for i in 0..64u64 {
            let store = store.clone();
            // Every fourth reader takes a range that starts and ends inside windows.
            let range = if i % 4 == 3 {
                (i * 4099)..(len as u64 - i * 17)
            } else {
                0..len as u64
            };
            readers.push(tokio::spawn(async move {
                let got = read_range(&store, &digest, range.clone()).await;
                (range, got)
            }));
        }
        for reader in readers {
            let (r, got) = reader.await.unwrap();
            assert!(
                got == data[r.start as usize..r.end as usize],
                "{mode} {r:?}"
            );
        }
        let file_len = std::fs::metadata(file).unwrap().len();
        assert!(store.inner.cache.held(&digest) <= file_len);
    }
}
