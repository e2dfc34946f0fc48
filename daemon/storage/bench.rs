//! A benchmark of the blob store alone (no HTTP), on the shapes the registry benchmark uses:
//!
//!     CARGO_TARGET_DIR=target cargo test --release --bin ecrld storage::bench \
//!         -- --ignored --nocapture
//!
//! `ECRL_BENCH_DIR` picks the data dir (default: a temp dir under /tmp, which is on the
//! real disk here). `ECRL_BENCH_MIB` sets the big blob's size (default 1024).
//! `ECRL_BENCH_SMALL=0` skips the 4 KiB pushes, `ECRL_BENCH_BIG=0` the big blob,
//! `ECRL_BENCH_PULL=0` its reads. `ECRL_BENCH_ENCRYPTION` lists the modes to run, one
//! after the other (default `aes256-gcm,none`).

use super::BlobStore;
use bytes::Bytes;
use ecrl::config::Encryption;
use ecrl::names::Digest;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use std::time::Instant;

/// hyper hands request bodies over in pieces of about this size.
const BODY_PIECE: usize = 256 * 1024;
const PATCH: usize = 16 << 20;

use super::tests::random_bytes;

fn body(data: &Bytes) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let pieces: Vec<_> = (0..data.len())
        .step_by(BODY_PIECE)
        .map(|at| Ok(data.slice(at..(at + BODY_PIECE).min(data.len()))))
        .collect();
    futures_util::stream::iter(pieces)
}

fn digest_of(data: &[u8]) -> Digest {
    Digest::from_bytes(Sha256::digest(data).into())
}

/// CPU seconds (user + system) this process has used: a figure less noisy than wall time
/// on a shared machine.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn gbps(bytes: usize, since: Instant) -> f64 {
    bytes as f64 / since.elapsed().as_secs_f64() / 1e9
}

async fn pull(store: &BlobStore, digest: &Digest, size: u64) -> usize {
    let mut stream = store.read(digest, 0..size).await.unwrap();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total as u64, size);
    total
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn bench_store() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let modes = std::env::var("ECRL_BENCH_ENCRYPTION").unwrap_or("aes256-gcm,none".into());
    for mode in modes.split(',') {
        let mode = <Encryption as clap::ValueEnum>::from_str(mode, true).unwrap();
        println!("-- encryption {mode}");
        runtime.block_on(run(mode));
    }
}

async fn run(mode: Encryption) {
    let base = std::env::var("ECRL_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = super::tests::open_store(dir.path(), mode);
    let mib: usize = std::env::var("ECRL_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let big = std::env::var("ECRL_BENCH_BIG").map_or(true, |v| v != "0");
    let small = std::env::var("ECRL_BENCH_SMALL").map_or(true, |v| v != "0");
    let pulls = std::env::var("ECRL_BENCH_PULL").map_or(true, |v| v != "0");
    let mut data = random_bytes(if big { size } else { 0 }, 0x9e37_79b9_7f4a_7c15);

    for kind in ["monolithic", "16 MiB chunks"] {
        if !big {
            break;
        }
        data[..16].copy_from_slice(&random_bytes(
            16,
            Instant::now().elapsed().as_nanos() as u64 + kind.len() as u64,
        ));
        let bytes = Bytes::from(std::mem::take(&mut data));
        let digest = digest_of(&bytes);
        let t = Instant::now();
        let cpu = cpu_seconds();
        let id = store.upload_start().await.unwrap();
        if kind == "monolithic" {
            store.upload_write(&id, None, body(&bytes)).await.unwrap();
        } else {
            for at in (0..size).step_by(PATCH) {
                let piece = bytes.slice(at..(at + PATCH).min(size));
                store
                    .upload_write(&id, Some(at as u64), body(&piece))
                    .await
                    .unwrap();
            }
        }
        let got = store.upload_finish(&id, &digest).await.unwrap();
        assert_eq!(got, size as u64);
        println!(
            "push {mib} MiB {kind}: {:.2} GB/s, {:.2} CPU s/GiB (peak 4 MiB buffers alive: {})",
            gbps(size, t),
            (cpu_seconds() - cpu) / (size as f64 / (1u64 << 30) as f64),
            super::buf::PEAK.load(std::sync::atomic::Ordering::Relaxed)
        );
        // Back to a Vec without a copy (the only reference), for the next round.
        data = Vec::from(bytes);
        if kind == "16 MiB chunks" && pulls {
            for label in [
                "pull (just pushed)",
                "pull again",
                "pull again",
                "pull again",
            ] {
                let t = Instant::now();
                let cpu = cpu_seconds();
                let n = pull(&store, &digest, size as u64).await;
                println!(
                    "{label}: {:.2} GB/s, {:.2} CPU s/GiB (peak 4 MiB buffers alive: {})",
                    gbps(n, t),
                    (cpu_seconds() - cpu) / (n as f64 / (1u64 << 30) as f64),
                    super::buf::PEAK.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    }
    drop(data);

    for clients in [1usize, 16] {
        if !small {
            break;
        }
        let per_client = if clients == 1 { 500 } else { 400 };
        let t = Instant::now();
        let cpu = cpu_seconds();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let blob = Bytes::from(random_bytes(
                        4096,
                        (c * 100_000 + i + 7) as u64 ^ (clients as u64 * 31),
                    ));
                    let digest = digest_of(&blob);
                    let id = store.upload_start().await.unwrap();
                    store
                        .upload_write(
                            &id,
                            None,
                            futures_util::stream::iter([Ok::<_, std::io::Error>(blob)]),
                        )
                        .await
                        .unwrap();
                    store.upload_finish(&id, &digest).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let n = clients * per_client;
        println!(
            "4 KiB pushes, {clients} clients: {:.0} blobs/s, {:.0} us CPU/blob",
            n as f64 / t.elapsed().as_secs_f64(),
            (cpu_seconds() - cpu) * 1e6 / n as f64
        );
    }
}
