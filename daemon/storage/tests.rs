use super::buf::BUF_SIZE;
use super::writer::SMALL;
use super::{BlobStore, StoreError};
use bytes::Bytes;
use ecrl::names::Digest;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
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
    let mut stream = store.read(digest, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

async fn push(store: &BlobStore, data: &Bytes, sizes: &[usize]) -> Result<u64, StoreError> {
    let id = store.upload_start()?;
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
    let hex = digest.hex();
    let path = root.join("blobs/sha256").join(&hex[..2]).join(&hex);
    assert!(std::fs::read(path).unwrap() == data[..]);
    assert_eq!(files_under(&root.join("uploads")), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blob_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    round_trip(&store, dir.path(), 64 << 20, 1).await;
    // Not a multiple of 4096: the unaligned tail is written at the commit.
    round_trip(&store, dir.path(), (9 << 20) + 12_345, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
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

/// Many PATCHes of odd sizes, each with its offset: exercises the carried unaligned tail,
/// the switch from memory to file, and requests that never fill a buffer.
async fn chunked_odd_sizes(store: &BlobStore, root: &Path) {
    let len = 3 * BUF_SIZE + 777;
    let data = Bytes::from(random_bytes(len, 42));
    let digest = digest_of(&data);
    let id = store.upload_start().unwrap();
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
    assert_eq!(files_under(&root.join("uploads")), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_odd_sizes_hashes_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    chunked_odd_sizes(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_without_o_direct() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open_with(dir.path(), false).unwrap();
    chunked_odd_sizes(&store, dir.path()).await;
    round_trip(&store, dir.path(), (5 << 20) + 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_tmpfs() {
    // tmpfs refuses O_DIRECT on older kernels (EINVAL): the store falls back to buffered I/O.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    chunked_odd_sizes(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_at_odd_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
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
    let again = BlobStore::open(dir.path()).unwrap();
    let got = read_range(&again, &digest, 4097..len - 3).await;
    assert!(got == data[4097..len as usize - 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    for len in [100, SMALL + 1, BUF_SIZE * 2 + 3] {
        let data = Bytes::from(random_bytes(len, len as u64));
        let wrong = digest_of(b"something else");
        let id = store.upload_start().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_mismatch_is_a_range_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = Bytes::from(random_bytes(SMALL * 2, 5));
    let id = store.upload_start().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_body_ends_the_session_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    // Fails while small (in memory), after the file exists, and after full buffers went out.
    for good in [10, SMALL + 10, 2 * BUF_SIZE + 10] {
        let data = Bytes::from(random_bytes(good, 9));
        let id = store.upload_start().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_content_leave_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
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
        assert!(std::fs::read(fan.join(&hex)).unwrap() == data[..]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_uploads_removes_idle_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = Bytes::from(random_bytes(SMALL * 3, 11));
    let idle_small = store.upload_start().unwrap();
    let idle_big = store.upload_start().unwrap();
    store
        .upload_write(&idle_big, None, body(&data, &[SMALL]))
        .await
        .unwrap();
    assert_eq!(files_under(&dir.path().join("uploads")).len(), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let fresh = store.upload_start().unwrap();
    assert_eq!(store.expire_uploads(Duration::from_millis(50)).await, 2);
    for id in [idle_small, idle_big] {
        assert!(matches!(
            store.upload_size(&id).await,
            Err(StoreError::UploadNotFound)
        ));
    }
    assert_eq!(store.upload_size(&fresh).await.unwrap(), 0);
    assert_nothing_left(dir.path());
    store.upload_cancel(&fresh).await.unwrap();
    assert_eq!(store.expire_uploads(Duration::ZERO).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_forgets_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = Bytes::from(random_bytes(BUF_SIZE + 5, 12));
    let id = store.upload_start().unwrap();
    store
        .upload_write(&id, None, body(&data, &[SMALL]))
        .await
        .unwrap();
    assert!(!files_under(&dir.path().join("uploads")).is_empty());
    let again = BlobStore::open(dir.path()).unwrap();
    assert!(matches!(
        again.upload_size(&id).await,
        Err(StoreError::UploadNotFound)
    ));
    assert_nothing_left(dir.path());
    for i in 0..=255u8 {
        assert!(dir.path().join(format!("blobs/sha256/{i:02x}")).is_dir());
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
