//! A hard kill of `ecrld` in the middle of a 1 GiB upload: what was committed before
//! survives whole, no half blob appears under a real name, the dead session is gone, and the
//! same blob can be pushed again.
//!
//! Blob files may be encrypted (they are by default), so their content is checked through
//! the registry, which decrypts and authenticates it, never by reading the files.

mod common;

use common::registry::{hex, registry_address, sha256_digest, spawn_registry};
use common::Env;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const CHUNK: usize = MIB as usize;
const POOL: usize = 4 * CHUNK;

/// A deterministic, incompressible stream of `len` bytes, made without holding it: each
/// MiB is a window of a 4 MiB random pool, stamped with its index.
struct Generator {
    pool: Arc<Vec<u8>>,
    len: u64,
    pos: u64,
    chunk: Vec<u8>,
    chunk_index: Option<u64>,
}

impl Generator {
    fn new(len: u64) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut pool = Vec::with_capacity(POOL);
        while pool.len() < POOL {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            pool.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        Generator {
            pool: Arc::new(pool),
            len,
            pos: 0,
            chunk: vec![0; CHUNK],
            chunk_index: None,
        }
    }

    fn load(&mut self, index: u64) {
        if self.chunk_index != Some(index) {
            let start = (index as usize * 4099 * 8) % (POOL - CHUNK);
            self.chunk.copy_from_slice(&self.pool[start..start + CHUNK]);
            self.chunk[..8].copy_from_slice(&index.to_le_bytes());
            self.chunk_index = Some(index);
        }
    }

    /// The bytes at `offset..offset + n`.
    fn bytes_at(&mut self, offset: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut pos = offset;
        while out.len() < n {
            self.load(pos / MIB);
            let at = (pos % MIB) as usize;
            let take = (CHUNK - at).min(n - out.len());
            out.extend_from_slice(&self.chunk[at..at + take]);
            pos += take as u64;
        }
        out
    }
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        self.load(self.pos / MIB);
        let at = (self.pos % MIB) as usize;
        let n = buf
            .len()
            .min(CHUNK - at)
            .min((self.len - self.pos) as usize);
        buf[..n].copy_from_slice(&self.chunk[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn digest_of_generated(len: u64) -> String {
    let mut generator = Generator::new(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = generator.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex(&hasher.finalize()))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
}

/// The path part of an upload `Location` (relative or absolute).
fn location_path(response: &reqwest::blocking::Response) -> String {
    let location = response.headers()["location"].to_str().unwrap();
    match location.find("/v2/") {
        Some(i) => location[i..].to_string(),
        None => panic!("odd upload location {location}"),
    }
}

fn push_blob(address: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let response = http()
        .post(format!(
            "http://{address}/v2/{repo}/blobs/uploads/?digest={digest}"
        ))
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "monolithic push of {digest}");
    assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
    digest
}

/// Where the store keeps the blob `digest` (`sha256:<hex>`).
fn blob_path(data_dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// The blob files under `blobs/sha256/` (each under its own prefix): their digests and the
/// largest file's size.
fn blob_files(data_dir: &Path) -> (BTreeSet<String>, u64) {
    let root = data_dir.join("blobs").join("sha256");
    let mut names = BTreeSet::new();
    let mut largest = 0;
    for prefix in std::fs::read_dir(&root).unwrap() {
        let prefix = prefix.unwrap();
        assert!(
            prefix.file_type().unwrap().is_dir(),
            "stray file {} in the blob store",
            prefix.path().display()
        );
        for entry in std::fs::read_dir(prefix.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert!(
                name.starts_with(prefix.file_name().to_str().unwrap()),
                "{name} is under the wrong prefix"
            );
            largest = largest.max(entry.metadata().unwrap().len());
            names.insert(format!("sha256:{name}"));
        }
    }
    (names, largest)
}

/// Every blob file's content, read through the registry (from the repository that holds
/// it), hashes to its name.
fn check_blob_contents(address: &str, names: &BTreeSet<String>, repos: &[(&str, &String)]) {
    for name in names {
        let repo = repos
            .iter()
            .find(|(_, digest)| *digest == name)
            .map(|(repo, _)| *repo)
            .unwrap_or_else(|| panic!("{name} is in the store but was never pushed"));
        let response = http()
            .get(format!("http://{address}/v2/{repo}/blobs/{name}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{repo} {name}");
        let body = response.bytes().unwrap();
        assert_eq!(
            &sha256_digest(&body),
            name,
            "{name} does not hash to its name"
        );
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kill_during_a_1gib_upload_loses_nothing_committed() {
    let started = Instant::now();
    let env = Env::new();
    let (mut daemon, address) = spawn_registry(&env);
    let repo = "crash/app";
    let client = http();

    // The digest of the big blob, computed next to the first upload.
    let digest_thread = std::thread::spawn(|| digest_of_generated(GIB));

    // Committed state: a config, two layers, a manifest under a tag, and a blob in another
    // repository pushed in a session (POST, PATCH, PUT).
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_a = vec![b'a'; 300_000];
    let layer_b: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let config_digest = push_blob(&address, repo, config);
    let a_digest = push_blob(&address, repo, &layer_a);
    let b_digest = push_blob(&address, repo, &layer_b);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config.len(),
        },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar",
              "digest": a_digest, "size": layer_a.len() },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar",
              "digest": b_digest, "size": layer_b.len() },
        ],
    }))
    .unwrap();
    let manifest_digest = sha256_digest(&manifest);
    let put = client
        .put(format!("http://{address}/v2/{repo}/manifests/v1"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    let session_blob = b"pushed in a session before the crash".to_vec();
    let session_digest = sha256_digest(&session_blob);
    let post = client
        .post(format!("http://{address}/v2/crash/other/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(post.status(), 202);
    let patch = client
        .patch(format!("http://{address}{}", location_path(&post)))
        .body(session_blob.clone())
        .send()
        .unwrap();
    assert_eq!(patch.status(), 202);
    let put = client
        .put(format!(
            "http://{address}{}?digest={session_digest}",
            location_path(&patch)
        ))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);

    // The 1 GiB upload: a streamed PATCH over a raw connection, from a thread.
    let post = client
        .post(format!("http://{address}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(post.status(), 202);
    let upload = location_path(&post);
    let sent = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, finished, address, upload) = (
            sent.clone(),
            finished.clone(),
            address.clone(),
            upload.clone(),
        );
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut conn = std::net::TcpStream::connect(&address)?;
            write!(
                conn,
                "PATCH {upload} HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {GIB}\r\n\r\n"
            )?;
            let mut generator = Generator::new(GIB);
            let mut buf = vec![0; CHUNK];
            loop {
                let n = generator.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n])?;
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            finished.store(true, Ordering::Relaxed);
            Ok(())
        })
    };

    // Kill -9 once hundreds of MiB are sent and the daemon has written a good part of them.
    let uploads_dir = env.data_dir().join("uploads");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let on_disk = dir_bytes(&uploads_dir);
        if sent.load(Ordering::Relaxed) >= 400 * MIB && on_disk >= 256 * MIB {
            break;
        }
        assert!(
            !finished.load(Ordering::Relaxed),
            "the whole GiB went out before the kill"
        );
        assert!(
            Instant::now() < deadline,
            "the upload did not progress: {} bytes sent, {on_disk} on disk",
            sent.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.signal(libc::SIGKILL);
    let status = daemon.wait(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let result = sender.join().unwrap();
    let sent_before_kill = sent.load(Ordering::Relaxed);
    assert!(
        result.is_err() && sent_before_kill < GIB,
        "the upload was not cut: {sent_before_kill} bytes sent, {result:?}"
    );
    eprintln!(
        "killed ecrld after {} MiB sent ({:?} in)",
        sent_before_kill / MIB,
        started.elapsed()
    );

    // What the crash left: only the committed blobs under their names, nothing of the big
    // upload (their content is checked through the registry below).
    let (names, largest) = blob_files(&env.data_dir());
    let committed = [
        (repo, &config_digest),
        (repo, &a_digest),
        (repo, &b_digest),
        (repo, &manifest_digest),
        ("crash/other", &session_digest),
    ];
    assert_eq!(
        names,
        committed.iter().map(|(_, d)| d.to_string()).collect(),
        "config, two layers, manifest, session blob"
    );
    assert!(
        largest < MIB,
        "a piece of the cut upload is in the blob store"
    );

    // Restart on the same data dir.
    drop(daemon);
    let _daemon = env.spawn_daemon(&[]);
    let address = registry_address(&env);
    assert_eq!(
        dir_bytes(&uploads_dir),
        0,
        "the dead upload's file is still there"
    );
    assert_eq!(blob_files(&env.data_dir()), (names.clone(), largest));
    check_blob_contents(&address, &names, &committed);

    // Everything committed is intact.
    for (r, digest, bytes) in [
        (repo, &config_digest, config.to_vec()),
        (repo, &a_digest, layer_a.clone()),
        (repo, &b_digest, layer_b.clone()),
        ("crash/other", &session_digest, session_blob.clone()),
    ] {
        let response = client
            .get(format!("http://{address}/v2/{r}/blobs/{digest}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{r} {digest}");
        assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(response.bytes().unwrap().as_ref(), bytes.as_slice());
    }
    let response = client
        .get(format!("http://{address}/v2/{repo}/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["docker-content-digest"],
        manifest_digest.as_str()
    );
    assert_eq!(response.bytes().unwrap().as_ref(), manifest.as_slice());
    let tags: serde_json::Value = client
        .get(format!("http://{address}/v2/{repo}/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // The cut session is gone.
    let response = client
        .get(format!("http://{address}{upload}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN", "{body}");

    // The client starts over: POST, then one streamed PUT of the whole GiB.
    let big_digest = digest_thread.join().unwrap();
    let post = client
        .post(format!("http://{address}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(post.status(), 202);
    let put = client
        .put(format!(
            "http://{address}{}?digest={big_digest}",
            location_path(&post)
        ))
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::blocking::Body::sized(Generator::new(GIB), GIB))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201, "{:?}", put.text());
    assert_eq!(put.headers()["docker-content-digest"], big_digest.as_str());

    let head = client
        .head(format!("http://{address}/v2/{repo}/blobs/{big_digest}"))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["docker-content-digest"], big_digest.as_str());
    assert_eq!(head.headers()["content-length"], GIB.to_string().as_str());

    // Its bytes read back where they were cut and at the ends.
    let mut generator = Generator::new(GIB);
    for offset in [0, sent_before_kill - 100, GIB / 2 + 12345, GIB - 4096] {
        let response = client
            .get(format!("http://{address}/v2/{repo}/blobs/{big_digest}"))
            .header("Range", format!("bytes={offset}-{}", offset + 4095))
            .send()
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.bytes().unwrap().as_ref(),
            generator.bytes_at(offset, 4096).as_slice(),
            "bytes at {offset}"
        );
    }
    let on_disk = blob_path(&env.data_dir(), &big_digest);
    // The content, plus a header and a 16-byte tag a 64 KiB segment when encrypted.
    let len = std::fs::metadata(&on_disk).unwrap().len();
    assert!(
        (GIB..GIB + GIB / 1000).contains(&len),
        "{len} bytes on disk"
    );
    eprintln!("done in {:?}", started.elapsed());
}

/// A 4 KiB blob made from `seed`: deterministic, incompressible.
fn small_blob(seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    let mut counter = 0u64;
    while out.len() < 4096 {
        out.extend_from_slice(&Sha256::digest(
            [seed.to_le_bytes(), counter.to_le_bytes()].concat(),
        ));
        counter += 1;
    }
    out
}

#[test]
fn kill_during_small_blob_pushes_leaves_only_whole_blobs() {
    // Small blobs are committed as unnamed files linked under their name once synced. A hard
    // kill while 8 clients push them must leave only whole blobs under real names. Stored
    // plain, so each file can be hashed as it lies.
    let env = Env::new();
    let mut daemon = env.spawn_daemon(&["--encryption", "none"]);
    let address = registry_address(&env);
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pushers: Vec<_> = (0..8u64)
        .map(|t| {
            let (acked, address) = (acked.clone(), address.clone());
            std::thread::spawn(move || {
                let client = http();
                for i in 0.. {
                    let data = small_blob(t << 32 | i);
                    let digest = sha256_digest(&data);
                    let response = client
                        .post(format!(
                            "http://{address}/v2/crash/small{t}/blobs/uploads/?digest={digest}"
                        ))
                        .body(data.clone())
                        .send();
                    match response {
                        Ok(r) if r.status() == 201 => {
                            acked
                                .lock()
                                .unwrap()
                                .push((format!("crash/small{t}"), digest, data))
                        }
                        // The daemon is gone: the connection failed or was cut.
                        Err(_) => return,
                        Ok(r) => panic!("push of {digest}: {}", r.status()),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 400 {
        assert!(Instant::now() < deadline, "the pushes did not progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    for pusher in pushers {
        pusher.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    // Every file under a real name is a whole blob; every acknowledged blob has its file.
    let (names, _) = blob_files(&env.data_dir());
    for name in &names {
        let path = blob_path(&env.data_dir(), name);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &sha256_digest(&bytes),
            name,
            "{} is not whole",
            path.display()
        );
    }
    for (_, digest, _) in &acked {
        assert!(names.contains(digest), "acknowledged {digest} is missing");
    }
    eprintln!(
        "{} blobs acknowledged before the kill, {} under a name",
        acked.len(),
        names.len()
    );

    // After a restart every acknowledged blob reads back whole, blobs committed but never
    // linked into a repository are gone, and pushing goes on.
    drop(daemon);
    let _daemon = env.spawn_daemon(&["--encryption", "none"]);
    let address = registry_address(&env);
    assert_eq!(dir_bytes(&env.data_dir().join("uploads")), 0);
    let client = http();
    let (kept, _) = blob_files(&env.data_dir());
    assert!(kept.is_subset(&names), "files appeared across the restart");
    for name in &kept {
        let held = (0..8).any(|t| {
            client
                .head(format!("http://{address}/v2/crash/small{t}/blobs/{name}"))
                .send()
                .unwrap()
                .status()
                == 200
        });
        assert!(held, "{name} is in the store but no repository holds it");
    }
    eprintln!("{} blob files kept after the restart", kept.len());
    for (repo, digest, data) in &acked {
        let response = client
            .get(format!("http://{address}/v2/{repo}/blobs/{digest}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{repo} {digest}");
        assert_eq!(response.bytes().unwrap().as_ref(), data.as_slice());
    }
    push_blob(&address, "crash/small0", &small_blob(u64::MAX));
}

#[test]
fn a_replaced_metadata_db_does_not_cost_the_blobs() {
    // The start-up sweep removes blobs no repository holds, but not when most are unheld:
    // that is metadata from elsewhere (here: lost), and the blobs may be wanted.
    let env = Env::new();
    let (mut daemon, address) = spawn_registry(&env);
    let digests: BTreeSet<String> = (0..3u64)
        .map(|i| push_blob(&address, "keep/me", &small_blob(1000 + i)))
        .collect();
    daemon.signal(libc::SIGTERM);
    daemon.wait(Duration::from_secs(15));
    for file in ["metadata.db", "metadata.db-wal", "metadata.db-shm"] {
        let _ = std::fs::remove_file(env.data_dir().join(file));
    }
    let _daemon = env.spawn_daemon(&[]);
    assert_eq!(blob_files(&env.data_dir()).0, digests);
}
