//! The blob store on S3-compatible object storage (`storage.backend: s3`), against a real
//! SeaweedFS and the real `ecrld`: docker, skopeo and plain HTTP clients; encryption at rest
//! (the bucket never holds plaintext); multipart uploads; range reads; a chunked upload that
//! moves between two instances on one bucket; failed digests, outages and tampering that
//! leave nothing behind and never serve wrong bytes; and the errors of a backend that cannot
//! be used at start-up.

mod common;

use common::registry::{
    build_busybox_image, localhost, pushed_digest, require_docker, require_skopeo, run_ok,
    sha256_digest, unique, DockerImages,
};
use common::s3::SeaweedFs;
use common::{Daemon, Env};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// ecrld's part size: 81 segments of 65520 plaintext bytes.
const PART: usize = 81 * 65520;
const SEGMENT_PLAIN: usize = 65520;
/// A string that must never appear in the bucket.
const MARKER: &[u8] = b"ECRL-PLAINTEXT-MARKER-must-never-reach-the-bucket";

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Starts an `ecrld` on `bucket`/`prefix` of `store`, with more flags; returns it and its
/// registry address.
fn spawn(
    env: &Env,
    store: &SeaweedFs,
    bucket: &str,
    prefix: &str,
    args: &[&str],
) -> (Daemon, String) {
    let vars = store.daemon_vars(bucket, prefix);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = env.spawn_daemon_with(args, &vars);
    let address = common::registry::registry_address(env);
    (daemon, address)
}

/// Bytes with the marker every 256 KiB, the rest pseudo-random.
fn marked_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut at = 1000;
    while at + MARKER.len() < len {
        data[at..at + MARKER.len()].copy_from_slice(MARKER);
        at += 256 * 1024;
    }
    data
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every object under `prefix`, read whole: none may hold `needle`.
fn assert_not_in_bucket(store: &SeaweedFs, bucket: &str, prefix: &str, needle: &[u8]) {
    let objects = store.objects(bucket, prefix);
    assert!(!objects.is_empty(), "nothing under {prefix} in {bucket}");
    for (key, _) in objects {
        let bytes = store.get(bucket, &key);
        assert!(
            !contains(&bytes, needle),
            "{key} in the bucket holds plaintext ({:?})",
            String::from_utf8_lossy(needle)
        );
    }
}

fn keys_under(objects: &[(String, u64)], part: &str) -> Vec<String> {
    objects
        .iter()
        .filter(|(k, _)| k.contains(part))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Opens an upload session in `repo`; returns its location path.
fn open_upload(c: &Client, address: &str, repo: &str) -> String {
    let r = c
        .post(format!("http://{address}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().unwrap());
    r.headers()["location"].to_str().unwrap().to_string()
}

fn patch(c: &Client, address: &str, location: &str, offset: usize, chunk: &[u8]) -> Response {
    c.patch(format!("http://{address}{location}"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(
            CONTENT_RANGE,
            format!("{offset}-{}", offset + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .unwrap()
}

fn finish(c: &Client, address: &str, location: &str, digest: &str) -> Response {
    c.put(format!("http://{address}{location}?digest={digest}"))
        .send()
        .unwrap()
}

/// Pushes `data` as a blob of `repo` in one PATCH and a PUT.
fn push_blob(c: &Client, address: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let location = open_upload(c, address, repo);
    let r = patch(c, address, &location, 0, data);
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().unwrap());
    let r = finish(c, address, &location, &digest);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    digest
}

fn get_blob(c: &Client, address: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = c
        .get(format!("http://{address}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    let status = r.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "GET {repo}@{digest}: {}",
        r.text().unwrap_or_default()
    );
    r.bytes().unwrap().to_vec()
}

fn get_range(
    c: &Client,
    address: &str,
    repo: &str,
    digest: &str,
    from: usize,
    to: usize,
) -> Vec<u8> {
    let r = c
        .get(format!("http://{address}/v2/{repo}/blobs/{digest}"))
        .header(RANGE, format!("bytes={from}-{to}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    r.bytes().unwrap().to_vec()
}

fn data_key(objects: &[(String, u64)]) -> (String, u64) {
    let data: Vec<_> = objects
        .iter()
        .filter(|(k, _)| k.contains("/data/"))
        .cloned()
        .collect();
    assert_eq!(data.len(), 1, "{objects:?}");
    data[0].clone()
}

fn sealed_len(plain: u64) -> u64 {
    let segments = plain.div_ceil(SEGMENT_PLAIN as u64).max(1);
    plain + 16 * segments
}

#[test]
fn docker_push_pull_and_skopeo_copy_through_an_encrypted_bucket() {
    require_docker();
    require_skopeo();
    let store = SeaweedFs::shared();
    let (bucket, reg) = store.place("docker");
    let env = Env::new();
    let (_daemon, address) = spawn(&env, store, &bucket, &reg, &[]);
    let host = localhost(&address);
    let images = DockerImages::new();
    let id = unique("ecrl-s3");
    let local = format!("ecrl-test/busybox:{id}");
    build_busybox_image(&images, &local, &id);

    let remote = format!("{host}/team/busybox:1");
    images.track(&remote);
    run_ok("docker", &["tag", &local, &remote]);
    let digest = pushed_digest(&run_ok("docker", &["push", &remote]));
    run_ok("docker", &["rmi", &remote]);
    let pull = run_ok("docker", &["pull", &remote]);
    assert!(pull.contains(&digest), "{pull}");
    let out = run_ok(
        "docker",
        &["run", "--rm", &remote, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(out.trim(), id);

    // Registry to registry through the same bucket: every blob is there already.
    let copy = format!("docker://{host}/copy/busybox:1");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{remote}"),
            &copy,
        ],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok("skopeo", &["inspect", "--tls-verify=false", &copy])).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());

    // Status names the backend, and it answers.
    let info = env.info();
    assert_eq!(info["storage"]["backend"], "s3", "{info}");
    let location = info["storage"]["location"].as_str().unwrap();
    assert!(
        location.contains(&bucket) && location.contains(&store.endpoint),
        "{info}"
    );
    assert!(info["storage"].get("error").is_none(), "{info}");
    assert_eq!(info["encryption"], "aes256-gcm");
    assert!(info["bytesStored"].as_u64().unwrap() > 500_000, "{info}");
    let table = env.ecrl_ok(&["daemon", "status"]);
    assert!(
        table.contains("s3 s3://") && table.contains("(answers)"),
        "{table}"
    );

    // The bucket: links, data, the format record; no session left; the config blob's JSON
    // (plaintext a client sees) is nowhere in it.
    let objects = store.objects(&bucket, &format!("{reg}/"));
    assert!(
        objects
            .iter()
            .any(|(k, _)| *k == format!("{reg}/storage.json")),
        "{objects:?}"
    );
    assert!(
        keys_under(&objects, "/blobs/sha256/").len() >= 3,
        "{objects:?}"
    );
    assert!(keys_under(&objects, "/uploads/").is_empty(), "{objects:?}");
    assert_not_in_bucket(store, &bucket, &format!("{reg}/data/"), b"\"architecture\"");
}

#[test]
fn an_unencrypted_bucket_round_trips_with_skopeo() {
    require_docker();
    require_skopeo();
    let store = SeaweedFs::shared();
    let (bucket, prefix) = store.place("plain");
    let env = Env::new();
    let (_daemon, address) = spawn(&env, store, &bucket, &prefix, &["--encryption", "none"]);
    let host = localhost(&address);
    let images = DockerImages::new();
    let id = unique("ecrl-s3-plain");
    let local = format!("ecrl-test/busybox:{id}");
    build_busybox_image(&images, &local, &id);
    let work = tempfile::tempdir().unwrap();
    let digest_file = work.path().join("digest");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--digestfile",
            digest_file.to_str().unwrap(),
            &format!("docker-daemon:{local}"),
            &format!("docker://{host}/plain/busybox:1"),
        ],
    );
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    // Back out to a directory, whose blobs skopeo checks against their digests.
    let out = work.path().join("out");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/plain/busybox:1"),
            &format!("dir:{}", out.display()),
        ],
    );
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&manifest), pushed.trim());

    let format = String::from_utf8(store.get(&bucket, &format!("{prefix}/storage.json"))).unwrap();
    assert!(format.contains("\"none\""), "{format}");
    let info = env.info();
    assert_eq!(info["encryption"], "none");
    // Plain data objects are the content itself.
    let objects = store.objects(&bucket, &format!("{prefix}/data/"));
    assert!(objects
        .iter()
        .any(|(k, _)| contains(&store.get(&bucket, k), b"\"architecture\"")));
}

#[test]
fn a_big_chunked_blob_goes_in_parts_sealed_and_reads_back_by_range() {
    let store = SeaweedFs::shared();
    let (bucket, pre) = store.place("big");
    let env = Env::new();
    let (_daemon, address) = spawn(&env, store, &bucket, &pre, &[]);
    let c = client();
    let data = marked_bytes(3 * PART + 123_457, 7);
    let digest = sha256_digest(&data);
    let location = open_upload(&c, &address, "big/blob");
    let chunk = 3 * 1024 * 1024 + 7;
    let mut offset = 0;
    let mut chunks = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let r = patch(&c, &address, &location, offset, &data[offset..end]);
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().unwrap());
        assert_eq!(r.headers()["range"], format!("0-{}", end - 1).as_str());
        offset = end;
        chunks += 1;
        if chunks == 2 {
            // Mid-upload: the session's state and its unsent tail are in the bucket, sealed.
            let objects = store.objects(&bucket, &format!("{pre}/uploads/"));
            assert!(keys_under(&objects, "/state").len() == 1, "{objects:?}");
            assert!(keys_under(&objects, "/tail.").len() == 1, "{objects:?}");
            assert_not_in_bucket(store, &bucket, &format!("{pre}/uploads/"), MARKER);
            assert_eq!(store.multipart_uploads(&bucket, &format!("{pre}/data/")), 1);
        }
    }
    let r = finish(&c, &address, &location, &digest);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());

    assert!(
        get_blob(&c, &address, "big/blob", &digest) == data,
        "whole blob differs"
    );
    for (from, to) in [
        (0, 99),
        (SEGMENT_PLAIN - 5, SEGMENT_PLAIN + 5),
        (PART - 10, PART + 10),
        (2 * PART - 1, 2 * PART + 3 * SEGMENT_PLAIN),
        (data.len() - 1, data.len() - 1),
    ] {
        let got = get_range(&c, &address, "big/blob", &digest, from, to);
        assert!(got == data[from..=to], "range {from}-{to} differs");
    }

    let objects = store.objects(&bucket, &format!("{pre}/"));
    assert!(keys_under(&objects, "/uploads/").is_empty(), "{objects:?}");
    assert_eq!(store.multipart_uploads(&bucket, &format!("{pre}/")), 0);
    let (_, size) = data_key(&objects);
    assert_eq!(
        size,
        sealed_len(data.len() as u64),
        "the sealed segments, no header"
    );
    assert_not_in_bucket(store, &bucket, &format!("{pre}/"), MARKER);
}

#[test]
fn a_chunked_upload_moves_between_two_instances_on_one_bucket() {
    let store = SeaweedFs::shared();
    let (bucket, shared) = store.place("two");
    let (env_a, env_b) = (Env::new(), Env::new());
    let (_a, addr_a) = spawn(&env_a, store, &bucket, &shared, &[]);

    // Without the store's key, the second instance refuses to start, and says which key.
    let format = String::from_utf8(store.get(&bucket, &format!("{shared}/storage.json"))).unwrap();
    let format: serde_json::Value = serde_json::from_str(&format).unwrap();
    let key = format["keys"][0].as_str().unwrap().to_string();
    let vars = store.daemon_vars(&bucket, &shared);
    let out = env_b
        .ecrld_command(&[])
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains(&key) && err.contains("Copy the key file"),
        "{err}"
    );

    env_b.copy_keys_from(&env_a);
    let (_b, addr_b) = spawn(&env_b, store, &bucket, &shared, &[]);
    let c = client();
    let data = marked_bytes(2 * PART + 4321, 11);
    let digest = sha256_digest(&data);
    let location = open_upload(&c, &addr_a, "team/app");
    let cuts = [0, 1_000_000, PART + 17, PART + 2_000_000, data.len()];
    let hosts = [&addr_a, &addr_b, &addr_a, &addr_b];
    for (i, host) in hosts.iter().enumerate() {
        // Each instance sees the session as the other left it.
        let r = c.get(format!("http://{host}{location}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "status on {host}");
        let expected = if cuts[i] == 0 {
            "0-0".to_string()
        } else {
            format!("0-{}", cuts[i] - 1)
        };
        assert_eq!(r.headers()["range"], expected.as_str());
        let r = patch(&c, host, &location, cuts[i], &data[cuts[i]..cuts[i + 1]]);
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().unwrap());
    }
    // A chunk that does not start where the session ends is refused on either.
    let r = patch(&c, &addr_a, &location, 5, b"xyz");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // The session is the repository's it was opened in, on every instance.
    let elsewhere = location.replace("/team/app/", "other/repo/");
    let r = c.get(format!("http://{addr_b}{elsewhere}")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = finish(&c, &addr_b, &location, &digest);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    assert!(get_blob(&c, &addr_b, "team/app", &digest) == data);
    // Finished on B: gone for A too.
    let r = c.get(format!("http://{addr_a}{location}")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A's repository mounts it: the blob is shared through the bucket.
    let r = c
        .post(format!(
            "http://{addr_a}/v2/mine/app/blobs/uploads/?mount={digest}&from=team/app"
        ))
        .send()
        .unwrap();
    // A knows no repository team/app: the spec's fallback is a session, and a monolithic
    // push of the same bytes is then stored once.
    assert!(matches!(
        r.status(),
        StatusCode::CREATED | StatusCode::ACCEPTED
    ));
    push_blob(&c, &addr_a, "mine/app", &data);
    assert!(get_blob(&c, &addr_a, "mine/app", &digest) == data);
    let objects = store.objects(&bucket, &format!("{shared}/"));
    assert_eq!(
        keys_under(&objects, "/data/").len(),
        1,
        "stored once: {objects:?}"
    );
    assert!(keys_under(&objects, "/uploads/").len() <= 2, "{objects:?}");
}

#[test]
fn a_wrong_digest_leaves_nothing_in_the_bucket() {
    let store = SeaweedFs::shared();
    let (bucket, prefix) = store.place("digest");
    let env = Env::new();
    let (_daemon, address) = spawn(&env, store, &bucket, &prefix, &[]);
    let c = client();
    for len in [1000, 2 * PART + 5] {
        let data = marked_bytes(len, len as u64);
        let wrong = sha256_digest(b"something else");
        let location = open_upload(&c, &address, "bad/digest");
        let r = patch(&c, &address, &location, 0, &data);
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = finish(&c, &address, &location, &wrong);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.text().unwrap().contains("DIGEST_INVALID"));
        let r = c.get(format!("http://{address}{location}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "the session ended");
    }
    let objects = store.objects(&bucket, &format!("{prefix}/"));
    let keys: Vec<_> = objects.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        [format!("{prefix}/storage.json")],
        "only the format record remains"
    );
    assert_eq!(
        store.multipart_uploads(&bucket, &format!("{prefix}/")),
        0,
        "no multipart upload left"
    );
}

#[test]
fn an_outage_of_the_object_store_is_a_503_and_loses_nothing() {
    require_docker();
    require_skopeo();
    let mut store = SeaweedFs::start();
    let bucket = store.bucket("outage");
    let env = Env::new();
    let (_daemon, address) = spawn(&env, &store, &bucket, "", &[]);
    let host = localhost(&address);
    let images = DockerImages::new();
    let id = unique("ecrl-s3-outage");
    let local = format!("ecrl-test/busybox:{id}");
    build_busybox_image(&images, &local, &id);
    let image = format!("docker://{host}/kept/busybox:1");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-daemon:{local}"),
            &image,
        ],
    );
    let c = client();
    let kept = marked_bytes(PART + 99, 3);
    let kept_digest = push_blob(&c, &address, "kept/blob", &kept);

    // Mid-push, the store dies.
    let data = marked_bytes(2 * PART + 1, 5);
    let location = open_upload(&c, &address, "lost/push");
    let r = patch(&c, &address, &location, 0, &data[..PART / 2]);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    store.kill();
    let started = Instant::now();
    let r = patch(&c, &address, &location, PART / 2, &data[PART / 2..]);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let body: serde_json::Value = r.json().unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("unavailable") && message.contains(&bucket),
        "{body}"
    );
    let r = c
        .get(format!("http://{address}/v2/kept/blob/blobs/{kept_digest}"))
        .send()
        .unwrap();
    // Refused with a status, never a 200 whose body breaks off.
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = c
        .post(format!("http://{address}/v2/new/push/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let info = env.info();
    assert!(info["storage"]["error"].is_string(), "{info}");

    // Back: what was stored is all there, the failed push can be done again.
    store.restart();
    assert!(get_blob(&c, &address, "kept/blob", &kept_digest) == kept);
    run_ok("skopeo", &["inspect", "--tls-verify=false", &image]);
    let work = tempfile::tempdir().unwrap();
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &image,
            &format!("dir:{}", work.path().join("out").display()),
        ],
    );
    let digest = push_blob(&c, &address, "lost/push", &data);
    assert!(get_blob(&c, &address, "lost/push", &digest) == data);
    assert!(env.info()["storage"].get("error").is_none());
}

#[test]
fn a_backend_that_cannot_be_used_at_start_is_a_clear_error() {
    let env = Env::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let out = env
        .ecrld_command(&[
            "--storage-backend",
            "s3",
            "--s3-endpoint",
            &endpoint,
            "--s3-bucket",
            "ecrl-test-nowhere",
        ])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains(&endpoint) && err.contains("ecrl-test-nowhere"),
        "the error names the store: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !env.data_dir().join("blobs").exists(),
        "nothing of the filesystem backend"
    );

    // A bucket that does not exist.
    let store = SeaweedFs::shared();
    let missing = unique("ecrl-test-missing");
    let vars = store.daemon_vars(&missing, "");
    let out = env
        .ecrld_command(&[])
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains(&missing) && err.contains("does not exist"),
        "{err}"
    );

    // Half the credentials.
    let out = env
        .ecrld_command(&["--storage-backend", "s3", "--s3-bucket", "b"])
        .env("AWS_ACCESS_KEY_ID", "k")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("secret access key"));
}

#[test]
fn forged_sessions_and_a_tampered_bucket_fail_cleanly() {
    let store = SeaweedFs::shared();
    let (bucket, prefix) = store.place("abuse");
    let env = Env::new();
    let (daemon, address) = spawn(&env, store, &bucket, &prefix, &[]);
    let c = client();

    // Upload ids: forged, of another repository, and one whose state was damaged.
    let forged = format!("/v2/a/b/blobs/uploads/{}", uuid_like(1));
    let r = patch(&c, &address, &forged, 0, b"data");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().unwrap().contains("BLOB_UPLOAD_UNKNOWN"));
    let location = open_upload(&c, &address, "a/b");
    let r = patch(
        &c,
        &address,
        &location.replace("/a/b/", "/c/d/"),
        0,
        b"data",
    );
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let id = location.rsplit('/').next().unwrap();
    store.put(
        &bucket,
        &format!("{prefix}/uploads/{id}/state"),
        b"{\"v\":1}".to_vec(),
    );
    let r = patch(&c, &address, &location, 0, b"data");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a damaged state is no session"
    );

    // Stored blobs, then their data and links changed in the bucket: reads fail, never
    // serving other bytes.
    let small = marked_bytes(5000, 1);
    let big = marked_bytes(PART + 10, 2);
    let small_digest = push_blob(&c, &address, "t/small", &small);
    let big_digest = push_blob(&c, &address, "t/big", &big);
    let link_of = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        format!("{prefix}/blobs/sha256/{}/{hex}", &hex[..2])
    };
    let link: serde_json::Value =
        serde_json::from_slice(&store.get(&bucket, &link_of(&small_digest))).unwrap();
    let data_name = format!("{prefix}/data/{}", link["data"].as_str().unwrap());
    let mut sealed = store.get(&bucket, &data_name);
    sealed[100] ^= 1;
    store.put(&bucket, &data_name, sealed);
    // The big blob's link: its nonce prefix changed, so no segment opens.
    let link_key = link_of(&big_digest);
    let mut link: serde_json::Value =
        serde_json::from_slice(&store.get(&bucket, &link_key)).unwrap();
    let header = link["header"].as_str().unwrap().to_string();
    let flip = if &header[48..49] == "0" { "1" } else { "0" };
    link["header"] = format!("{}{flip}{}", &header[..48], &header[49..]).into();
    store.put(&bucket, &link_key, serde_json::to_vec(&link).unwrap());
    // Links are kept in memory once read: a restarted instance reads them afresh.
    drop(daemon);
    let (_daemon, address) = spawn(&env, store, &bucket, &prefix, &[]);
    let fails = |repo: &str, digest: &str, range: Option<&str>| {
        let mut request = c.get(format!("http://{address}/v2/{repo}/blobs/{digest}"));
        if let Some(range) = range {
            request = request.header(RANGE, range);
        }
        let r = request.send().unwrap();
        // The first segments are opened before the status goes: a damaged blob is an
        // error status that says why, never bytes.
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR, "{repo}");
        let text = r.text().unwrap();
        assert!(text.contains("authentication"), "{repo}: {text}");
    };
    fails("t/small", &small_digest, None);
    fails("t/big", &big_digest, None);
    fails("t/big", &big_digest, Some("bytes=0-99"));
    // A link that is not JSON at all.
    store.put(&bucket, &link_key, b"garbage".to_vec());
    drop(_daemon);
    let (_daemon, address) = spawn(&env, store, &bucket, &prefix, &[]);
    let r = c
        .get(format!("http://{address}/v2/t/big/blobs/{big_digest}"))
        .send()
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    // What was not touched still reads.
    let fresh = marked_bytes(777, 9);
    let digest = push_blob(&c, &address, "t/fresh", &fresh);
    assert!(get_blob(&c, &address, "t/fresh", &digest) == fresh);
}

fn uuid_like(n: u8) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

#[test]
fn another_instances_abandoned_session_is_expired_with_its_parts() {
    let store = SeaweedFs::shared();
    let (bucket, prefix) = store.place("expire");
    let (env_a, env_b) = (Env::new(), Env::new());
    let (mut a, addr_a) = spawn(&env_a, store, &bucket, &prefix, &[]);
    let c = client();
    let location = open_upload(&c, &addr_a, "gone/app");
    let data = marked_bytes(PART + 1000, 13);
    let r = patch(&c, &addr_a, &location, 0, &data);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(store.multipart_uploads(&bucket, &format!("{prefix}/")), 1);
    // The instance that held it dies; another, whose sessions may idle 2 s, cleans up.
    a.signal(libc::SIGKILL);
    a.wait(Duration::from_secs(10));
    env_b.copy_keys_from(&env_a);
    let config = env_b.write_config("registry:\n  upload_idle_timeout: 2s\n");
    let (_b, _addr_b) = spawn(
        &env_b,
        store,
        &bucket,
        &prefix,
        &["--config", config.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let uploads = keys_under(&store.objects(&bucket, &format!("{prefix}/")), "/uploads/");
        let open = store.multipart_uploads(&bucket, &format!("{prefix}/"));
        if uploads.is_empty() && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not expired: {uploads:?}, {open} multipart uploads"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(keys_under(&store.objects(&bucket, &format!("{prefix}/")), "/data/").is_empty());
}
