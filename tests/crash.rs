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

/// An OCI image over `layers` (and a config of its own), pushed with its blobs: its manifest.
fn push_image(address: &str, repo: &str, tag: &str, layers: &[&[u8]]) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","image":"{repo}:{tag}"}}"#);
    let descriptor = |media: &str, data: &[u8]| {
        serde_json::json!({
            "mediaType": media,
            "digest": push_blob(address, repo, data),
            "size": data.len(),
        })
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config.as_bytes()),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
            .collect::<Vec<_>>(),
    }))
    .unwrap();
    let response = http()
        .put(format!("http://{address}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "manifest {repo}:{tag}");
    manifest
}

/// Every image pulls whole: its manifest byte for byte, each blob it names hashing to its
/// digest.
fn check_images(address: &str, images: &[(String, String, Vec<u8>)]) {
    let client = http();
    for (repo, tag, manifest) in images {
        let response = client
            .get(format!("http://{address}/v2/{repo}/manifests/{tag}"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{repo}:{tag}");
        assert_eq!(response.bytes().unwrap().as_ref(), manifest.as_slice());
        let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        let layers = parsed["layers"].as_array().unwrap();
        for digest in std::iter::once(&parsed["config"])
            .chain(layers)
            .map(|d| d["digest"].as_str().unwrap())
        {
            let response = client
                .get(format!("http://{address}/v2/{repo}/blobs/{digest}"))
                .send()
                .unwrap();
            assert_eq!(response.status(), 200, "{repo}:{tag} {digest}");
            assert_eq!(
                sha256_digest(&response.bytes().unwrap()),
                digest,
                "{repo}:{tag}"
            );
        }
    }
}

/// Pushes `per_repo` images into each of `repos` repositories from 8 threads: each image a
/// layer of its own and one its repository's images share.
fn push_images(address: &str, repos: usize, per_repo: usize) -> Vec<(String, String, Vec<u8>)> {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let address = address.to_string();
            std::thread::spawn(move || {
                let mut pushed = Vec::new();
                for r in (t..repos).step_by(8) {
                    let repo = format!("kept/r{r}");
                    let shared = small_blob(1 << 40 | r as u64);
                    for i in 0..per_repo {
                        let own = small_blob((r * per_repo + i) as u64);
                        let tag = format!("t{i}");
                        let manifest = push_image(&address, &repo, &tag, &[&shared, &own]);
                        pushed.push((repo.clone(), tag, manifest));
                    }
                }
                pushed
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Files under blob names that nothing holds, written an hour ago: what a collection removes.
fn plant_orphans(data_dir: &Path, round: u64, n: u64) -> BTreeSet<String> {
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    (0..n)
        .map(|i| {
            let digest = sha256_digest(format!("orphan {round} {i}").as_bytes());
            let path = blob_path(data_dir, &digest);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"committed, never linked").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
            digest
        })
        .collect()
}

/// kill -9 at three moments of a garbage collection (as it starts, a quarter into its sweep,
/// three quarters into it): nothing an image references is lost, the daemon starts again,
/// and the next collection finishes the job.
#[test]
fn kill_during_gc_loses_nothing_referenced_and_the_next_gc_finishes() {
    let env = Env::new();
    let config = env.write_config("registry:\n  deleted_blob_grace: 1s\n  upload_expiry: 1s\n");
    let args = ["--config", config.to_str().unwrap()];
    let mut daemon = env.spawn_daemon(&args);
    let mut address = registry_address(&env);
    let images = push_images(&address, 16, 60);
    // Uploads no manifest ever referenced: links the collection's first step drops.
    let strays: Vec<String> = (0..200)
        .map(|i| {
            push_blob(
                &address,
                &format!("kept/r{}", i % 16),
                &small_blob(1 << 50 | i),
            )
        })
        .collect();
    // What the images reference: every file there but the strays'.
    let (mut held, _) = blob_files(&env.data_dir());
    held.retain(|d| !strays.contains(d));
    std::thread::sleep(Duration::from_millis(2_100));

    // Fewer than the files held: a store mostly of unheld files is left alone (see gc).
    const ORPHANS: u64 = 1_500;
    let mut mid_sweep = 0;
    for (round, kill_below) in [(0u64, ORPHANS), (1, ORPHANS * 3 / 4), (2, ORPHANS / 4)] {
        let orphans = plant_orphans(&env.data_dir(), round, ORPHANS);
        let left = || {
            orphans
                .iter()
                .filter(|d| blob_path(&env.data_dir(), d).exists())
                .count() as u64
        };
        let mut gc = env.ecrl_command(&["gc", "-q"]);
        gc.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut gc = gc.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut at_kill = left();
        while at_kill > kill_below && at_kill > 0 {
            assert!(Instant::now() < deadline, "the collection removed nothing");
            at_kill = left();
        }
        daemon.signal(libc::SIGKILL);
        daemon.wait(Duration::from_secs(10));
        let _ = gc.wait();
        let after_kill = left();
        eprintln!(
            "round {round}: killed with {at_kill}, then {after_kill} orphans left of {ORPHANS}"
        );
        if after_kill > 0 && after_kill < ORPHANS {
            mid_sweep += 1;
        }
        // Nothing referenced went.
        let (files, _) = blob_files(&env.data_dir());
        let lost: Vec<_> = held.difference(&files).collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?}");
        drop(daemon);
        daemon = env.spawn_daemon(&args);
        address = registry_address(&env);
        let some: Vec<_> = images.iter().step_by(7).cloned().collect();
        check_images(&address, &some);
    }
    assert!(mid_sweep >= 1, "no kill landed in the middle of a sweep");

    // The next collection finishes: the strays are unlinked and their content goes after the
    // grace; every orphan is gone; the images are whole.
    let done: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["gc", "--output", "json"])).unwrap();
    assert!(
        done["linksRemoved"].as_u64().unwrap() <= strays.len() as u64,
        "{done}"
    );
    let client = http();
    for (i, digest) in strays.iter().enumerate() {
        let repo = format!("kept/r{}", i % 16);
        let status = client
            .head(format!("http://{address}/v2/{repo}/blobs/{digest}"))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 404, "stray {digest} is still linked");
    }
    std::thread::sleep(Duration::from_millis(1_200));
    env.ecrl_ok(&["gc", "-q"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (files, _) = blob_files(&env.data_dir());
        let expected = &held;
        if files == *expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {:?}, lost: {:?}",
            files.difference(expected).take(5).collect::<Vec<_>>(),
            expected.difference(&files).take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    check_images(&address, &images);
    drop(daemon);
}

/// Opens `ecrl fsck --repair`'s progress stream on the control socket and reads until the
/// check has looked at `blobs` blobs: the events read (progress lines, raw).
fn fsck_until(socket: &Path, blobs: u64) -> String {
    let mut conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
    conn.write_all(
        b"POST /v1/system/fsck/stream?repair=true HTTP/1.1\r\nHost: ecrld\r\n\
          Content-Length: 0\r\n\r\n",
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).expect("fsck's progress");
        assert!(n > 0, "the stream ended before {blobs} blobs: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        let done = seen
            .rmatch_indices(r#""step":"checking blobs","done":"#)
            .next()
            .map(|(i, m)| {
                let rest = &seen[i + m.len()..];
                rest[..rest.find(',').unwrap_or(0)]
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        assert!(
            !seen.contains(r#""event":"done""#),
            "fsck finished first: {seen}"
        );
        if done >= blobs {
            return seen;
        }
    }
}

/// kill -9 in the middle of `ecrl fsck --repair` (a third of the blobs checked, a corrupt one
/// among them): nothing is lost, and the next `fsck --repair` finds and repairs the corrupt
/// blob; the one after it finds the store clean. Its progress arrives as it goes.
#[test]
fn kill_during_fsck_loses_nothing_and_the_next_fsck_repairs() {
    let env = Env::new();
    let mut daemon = env.spawn_daemon(&[]);
    let address = registry_address(&env);
    // 30 images of a 4 MiB layer each (decrypting and hashing them takes a moment).
    let mut generator = Generator::new(GIB);
    let images: Vec<(String, String, Vec<u8>)> = (0..30u64)
        .map(|i| {
            let layer = generator.bytes_at(i * 4 * MIB, 4 * MIB as usize);
            let tag = format!("t{i}");
            let manifest = push_image(&address, "fsck/app", &tag, &[&layer]);
            ("fsck/app".to_string(), tag, manifest)
        })
        .collect();
    // One layer's file damaged on disk: a byte of its ciphertext flipped.
    let damaged: serde_json::Value = serde_json::from_slice(&images[3].2).unwrap();
    let damaged = damaged["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = blob_path(&env.data_dir(), &damaged);
    let mut file = std::fs::read(&path).unwrap();
    let at = file.len() / 2;
    file[at] ^= 0x10;
    std::fs::write(&path, &file).unwrap();
    let (before, _) = blob_files(&env.data_dir());

    let seen = fsck_until(&env.socket(), before.len() as u64 / 3);
    assert!(seen.contains(r#""event":"progress""#), "{seen}");
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    let (after, _) = blob_files(&env.data_dir());
    assert_eq!(after, before, "the killed check changed the store");
    drop(daemon);

    let _daemon = env.spawn_daemon(&[]);
    let address = registry_address(&env);
    let out = env.ecrl(&["fsck", "--repair", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "CORRUPT_BLOB", "{report}");
    assert_eq!(problems[0]["digest"], damaged.as_str(), "{report}");
    assert!(
        problems[0]["images"][0].as_str().unwrap().contains("(t3)"),
        "{report}"
    );
    // Every other image pulls whole; the damaged one says it lost content.
    let whole: Vec<_> = images
        .iter()
        .filter(|(_, tag, _)| tag != "t3")
        .cloned()
        .collect();
    check_images(&address, &whole);
    let response = http()
        .get(format!("http://{address}/v2/fsck/app/manifests/t3"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().unwrap().contains("lost content"));
    let again: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["fsck", "--output", "json"])).unwrap();
    assert_eq!(again["problems"], serde_json::json!([]), "{again}");
    assert_eq!(
        again["blobsChecked"].as_u64().unwrap(),
        before.len() as u64 - 1,
        "{again}"
    );
}
