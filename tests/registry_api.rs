//! The registry's HTTP API (OCI Distribution Spec v1.1 / Docker Registry HTTP API V2),
//! exercised with a plain HTTP client against the real `ecrld` on a private data dir.
//!
//! The OCI conformance suite is not available here, so these tests stand in for it: every
//! endpoint, every error code, and the edge cases real clients hit (chunked and streamed
//! uploads, mounts, ranges, several `Accept` lines, oversized and truncated bodies,
//! concurrent pushes, restarts).

mod common;

use common::{Daemon, Env};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, IF_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

// --- harness --------------------------------------------------------------------------------

/// An `ecrld` on a private temp dir, its registry on a free port, and an HTTP client.
struct Registry {
    // Declared first so the daemon stops before the temp dir goes.
    daemon: Option<Daemon>,
    env: Env,
    args: Vec<String>,
    addr: String,
    client: Client,
}

impl Registry {
    fn start() -> Self {
        Self::start_in(Env::new(), &[])
    }

    fn start_in(env: Env, args: &[&str]) -> Self {
        let mut registry = Registry {
            daemon: None,
            env,
            args: args.iter().map(|a| a.to_string()).collect(),
            addr: String::new(),
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(self.env.spawn_daemon(&args));
        self.addr = self.env.info()["registryAddress"]
            .as_str()
            .expect("registryAddress")
            .to_string();
        assert!(!self.addr.ends_with(":0"), "{}", self.addr);
    }

    /// SIGTERM, and insist on a clean exit.
    fn stop(&mut self) {
        let mut daemon = self.daemon.take().expect("daemon running");
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait(Duration::from_secs(20));
        assert!(status.success(), "ecrld exited with {status}");
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn data_dir(&self) -> PathBuf {
        self.env.data_dir()
    }

    /// A path or a `Location` (relative or absolute) as a full URL.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("http://{}{}", self.addr, path)
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().unwrap()
    }

    fn head(&self, path: &str) -> Response {
        self.request(Method::HEAD, path).send().unwrap()
    }

    fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().unwrap()
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
            .header(CONTENT_TYPE, "application/octet-stream")
    }

    /// Where the blob store keeps a digest's content.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.data_dir()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// Upload files in progress.
    fn upload_files(&self) -> Vec<PathBuf> {
        files_under(&self.data_dir().join("uploads"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Stop cleanly so that the socket goes too; `Daemon`'s own drop kills what is left.
        if let Some(daemon) = self.daemon.as_mut() {
            daemon.signal(libc::SIGTERM);
            if let Some(child) = daemon.child.as_mut() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// False when the suite runs on the object store (tests/run's second pass): the tests that
/// look at, damage or fill the data dir's blob files then have nothing to look at (tests/s3.rs
/// checks the same things of the bucket), and pass without running.
fn blobs_on_disk() -> bool {
    std::env::var(common::ENV_STORAGE_BACKEND).as_deref() != Ok("s3")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- helpers --------------------------------------------------------------------------------

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// `len` bytes that differ with `seed` (not compressible, not all alike).
fn bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name} header: {:?}", resp.url(), resp.headers()))
        .to_str()
        .unwrap()
        .to_string()
}

fn opt_header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn assert_api_version(resp: &Response) {
    assert_eq!(
        opt_header(resp, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0"),
        "{} {}",
        resp.status(),
        resp.url()
    );
}

fn assert_status(resp: &Response, status: u16) {
    assert_eq!(
        resp.status().as_u16(),
        status,
        "{} answered {} with headers {:?}",
        resp.url(),
        resp.status(),
        resp.headers()
    );
}

/// The spec's error body `{"errors":[{"code", "message"}]}`: asserts its shape (and that the
/// status is a 4xx, never a 5xx) and returns the first error's code.
fn error_code(resp: Response) -> String {
    let status = resp.status();
    let url = resp.url().clone();
    assert_api_version(&resp);
    assert!(
        status.is_client_error(),
        "{url} answered {status}, not a client error"
    );
    assert!(
        header(&resp, "content-type").starts_with("application/json"),
        "{url}: error body is not JSON"
    );
    let text = resp.text().unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: error body {text:?} is not JSON: {e}"));
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: no errors array in {text}"));
    assert!(!errors.is_empty(), "{url}: empty errors in {text}");
    for e in errors {
        assert!(e["message"].is_string(), "{url}: no message in {text}");
        let code = e["code"].as_str().unwrap_or_default();
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{url}: bad code in {text}"
        );
    }
    errors[0]["code"].as_str().unwrap().to_string()
}

/// Asserts status and error code; returns the message.
fn expect_error(resp: Response, status: u16, code: &str) -> String {
    assert_status(&resp, status);
    assert_api_version(&resp);
    let url = resp.url().clone();
    let text = resp.text().unwrap();
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {text:?}: {e}"));
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors[0]["code"], code, "{url}: {text}");
    assert!(errors[0]["message"].is_string(), "{url}: {text}");
    errors[0]["message"].as_str().unwrap().to_string()
}

/// `Location` plus a query parameter (the location is opaque: it may have a query already).
fn with_param(location: &str, name: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{name}={value}")
}

/// Monolithic upload: `POST ?digest=` with the content. Returns the digest.
fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let resp = reg
        .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    digest
}

/// Opens an upload session; returns its `Location`.
fn start_upload(reg: &Registry, repo: &str) -> String {
    let resp = reg
        .post(&format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_status(&resp, 202);
    assert_api_version(&resp);
    header(&resp, "location")
}

/// A chunk with `Content-Range`; returns the response.
fn patch_chunk(reg: &Registry, location: &str, start: usize, chunk: &[u8]) -> Response {
    reg.patch(location)
        .header(
            CONTENT_RANGE,
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .unwrap()
}

fn put_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    reg.put(&format!("/v2/{repo}/manifests/{reference}"))
        .header(CONTENT_TYPE, media_type)
        .body(body.to_vec())
        .send()
        .unwrap()
}

/// Puts a manifest and insists on 201 with the right headers; returns its digest.
fn put_manifest_ok(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let resp = put_manifest(reg, repo, reference, media_type, body);
    let digest = sha256(body);
    if resp.status() != 201 {
        let (url, status, headers) = (resp.url().clone(), resp.status(), resp.headers().clone());
        panic!(
            "{url} answered {status} with headers {headers:?}: {}",
            resp.text().unwrap_or_default()
        );
    }
    assert_api_version(&resp);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/{repo}/manifests/{digest}")
    );
    digest
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    Oci,
    Docker,
}

impl Flavor {
    fn manifest(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_MANIFEST,
            Flavor::Docker => DOCKER_MANIFEST,
        }
    }
    fn index(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_INDEX,
            Flavor::Docker => DOCKER_LIST,
        }
    }
}

/// An image manifest for a config and layers (not pushed).
fn image_manifest(flavor: Flavor, config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let (config_type, layer_type) = match flavor {
        Flavor::Oci => (OCI_CONFIG, OCI_LAYER),
        Flavor::Docker => (DOCKER_CONFIG, DOCKER_LAYER),
    };
    let layers: Vec<Value> = layers.iter().map(|l| descriptor(layer_type, l)).collect();
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": flavor.manifest(),
        "config": descriptor(config_type, config),
        "layers": layers,
    }))
    .unwrap()
}

/// Pushes a config and a layer made from `seed`, then the manifest under `reference`.
/// Returns the manifest's bytes and digest.
fn push_image(
    reg: &Registry,
    repo: &str,
    reference: &str,
    flavor: Flavor,
    seed: &str,
) -> (Vec<u8>, String) {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": { "Labels": { "seed": seed } }
    }))
    .unwrap();
    let layer = bytes(seed, 4096);
    push_blob(reg, repo, &config);
    push_blob(reg, repo, &layer);
    let manifest = image_manifest(flavor, &config, &[&layer]);
    let reference = if reference.is_empty() {
        sha256(&manifest)
    } else {
        reference.to_string()
    };
    let digest = put_manifest_ok(reg, repo, &reference, flavor.manifest(), &manifest);
    (manifest, digest)
}

/// An index of manifests, one per `(bytes, architecture)`.
fn index_manifest(flavor: Flavor, children: &[(&[u8], &str)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(m, arch)| {
            let mut d = descriptor(flavor.manifest(), m);
            d["platform"] = json!({ "architecture": arch, "os": "linux" });
            d
        })
        .collect();
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": flavor.index(),
        "manifests": manifests,
    }))
    .unwrap()
}

fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    let resp = reg.get(&format!("/v2/{repo}/tags/list"));
    assert_status(&resp, 200);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["name"], repo);
    body["tags"]
        .as_array()
        .expect("tags array")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn catalog(reg: &Registry) -> Vec<String> {
    let resp = reg.get("/v2/_catalog");
    assert_status(&resp, 200);
    let body: Value = resp.json().unwrap();
    body["repositories"]
        .as_array()
        .expect("repositories array")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// The URL of a `Link: <url>; rel="next"` header.
fn next_link(resp: &Response) -> Option<String> {
    let link = opt_header(resp, "link")?;
    assert!(link.contains("rel=\"next\""), "{link}");
    let start = link.find('<').expect("link <") + 1;
    let end = link.find('>').expect("link >");
    Some(link[start..end].to_string())
}

/// One raw HTTP/1.1 exchange (for what an HTTP client library would not send as is).
fn raw_http(reg: &Registry, request: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(&reg.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    (status, response)
}

/// Nothing of a rejected manifest push remains: neither by digest nor under the tag, the tag
/// list is unchanged and the content is not in the store.
fn assert_manifest_not_stored(
    reg: &Registry,
    repo: &str,
    tag: &str,
    body: &[u8],
    tags_before: &[String],
) {
    let digest = sha256(body);
    let resp = reg.get(&format!("/v2/{repo}/manifests/{digest}"));
    assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
    let resp = reg.get(&format!("/v2/{repo}/manifests/{tag}"));
    assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
    assert_eq!(tags(reg, repo), tags_before);
    assert!(
        !reg.blob_file(&digest).exists(),
        "a rejected manifest's content is in the store"
    );
}

// --- base ------------------------------------------------------------------------------------

#[test]
fn base_endpoint_is_200_with_the_api_version_header() {
    let reg = Registry::start();
    for path in ["/v2/", "/v2"] {
        let resp = reg.get(path);
        assert_status(&resp, 200);
        assert_api_version(&resp);
    }
    let resp = reg.head("/v2/");
    assert_status(&resp, 200);
    assert_api_version(&resp);
}

#[test]
fn api_version_header_and_spec_error_body_are_on_every_error() {
    let reg = Registry::start();
    let unknown = sha256(b"unknown");
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            format!("/v2/nope/blobs/{unknown}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/nope/manifests/latest".into(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/nope/tags/list".into(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/Nope/tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/nope/blobs/sha256:00".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/nope/blobs/uploads/3f1c2a4e-0000-4000-8000-000000000000".into(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (Method::GET, "/v3/".into(), 404, "UNSUPPORTED"),
        (Method::GET, "/v2/nope/other".into(), 404, "UNSUPPORTED"),
        (Method::PUT, "/v2/".into(), 405, "UNSUPPORTED"),
        (
            Method::POST,
            "/v2/nope/manifests/latest".into(),
            405,
            "UNSUPPORTED",
        ),
    ];
    for (method, path, status, code) in cases {
        let resp = reg.request(method.clone(), &path).send().unwrap();
        assert_status(&resp, status);
        assert_eq!(error_code(resp), code, "{method} {path}");
    }
    // HEAD errors have no body, but the header all the same.
    let resp = reg.head(&format!("/v2/nope/blobs/{unknown}"));
    assert_status(&resp, 404);
    assert_api_version(&resp);
}

// --- uploads ---------------------------------------------------------------------------------

#[test]
fn monolithic_post_with_digest_is_201_with_location_and_digest() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    let data = bytes("monolithic", 300_000);
    let digest = sha256(&data);
    let resp = reg
        .post(&format!("/v2/team/app/blobs/uploads/?digest={digest}"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.clone())
        .send()
        .unwrap();
    assert_status(&resp, 201);
    assert_api_version(&resp);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let location = header(&resp, "location");
    assert_eq!(location, format!("/v2/team/app/blobs/{digest}"));
    let got = reg.get(&location);
    assert_status(&got, 200);
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());
    assert!(reg.blob_file(&digest).is_file());
}

#[test]
fn empty_blob_uploads_monolithically() {
    let reg = Registry::start();
    let digest = push_blob(&reg, "app", b"");
    let resp = reg.get(&format!("/v2/app/blobs/{digest}"));
    assert_status(&resp, 200);
    assert_eq!(header(&resp, "content-length"), "0");
}

#[test]
fn post_then_put_with_the_body_completes_the_upload() {
    let reg = Registry::start();
    let data = bytes("post-put", 70_000);
    let digest = sha256(&data);
    let resp = reg.post("/v2/app/blobs/uploads/").send().unwrap();
    assert_status(&resp, 202);
    assert_eq!(header(&resp, "content-length"), "0");
    let location = header(&resp, "location");
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");
    let resp = reg
        .put(&with_param(&location, "digest", &digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.clone())
        .send()
        .unwrap();
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/app/blobs/{digest}"));
    let got = reg.get(&format!("/v2/app/blobs/{digest}"));
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());
}

#[test]
fn streamed_patch_without_content_range_then_put_completes_the_upload() {
    let reg = Registry::start();
    let part1 = bytes("stream-1", 200_000);
    let part2 = bytes("stream-2", 123_457);
    let all = [part1.clone(), part2.clone()].concat();
    let digest = sha256(&all);
    let mut location = start_upload(&reg, "app");
    let mut held = 0;
    for part in [&part1, &part2] {
        // A reader body goes out with chunked transfer encoding and no Content-Length, the
        // way docker streams a layer.
        let resp = reg
            .patch(&location)
            .body(Body::new(std::io::Cursor::new(part.clone())))
            .send()
            .unwrap();
        assert_status(&resp, 202);
        held += part.len();
        assert_eq!(header(&resp, "range"), format!("0-{}", held - 1));
        location = header(&resp, "location");
    }
    let resp = reg
        .put(&with_param(&location, "digest", &digest))
        .send()
        .unwrap();
    assert_status(&resp, 201);
    let got = reg.get(&format!("/v2/app/blobs/{digest}"));
    assert_eq!(got.bytes().unwrap().as_ref(), all.as_slice());
}

#[test]
fn chunked_patch_with_content_range_across_several_chunks() {
    let reg = Registry::start();
    let data = bytes("chunked", 3 * 65_536 + 17);
    let digest = sha256(&data);
    let chunks: Vec<&[u8]> = data.chunks(65_536).collect();
    assert_eq!(chunks.len(), 4);
    let mut location = start_upload(&reg, "team/chunked");
    let mut offset = 0;
    for chunk in &chunks[..3] {
        let resp = patch_chunk(&reg, &location, offset, chunk);
        assert_status(&resp, 202);
        assert_eq!(header(&resp, "content-length"), "0");
        offset += chunk.len();
        assert_eq!(header(&resp, "range"), format!("0-{}", offset - 1));
        // The upload URL stays valid: the next chunk goes where this answer says.
        location = header(&resp, "location");
        assert!(location.starts_with("/v2/team/chunked/blobs/uploads/"));
    }
    // The last chunk rides on the PUT, with its Content-Range.
    let last = chunks[3];
    let resp = reg
        .put(&with_param(&location, "digest", &digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(
            CONTENT_RANGE,
            format!("{offset}-{}", offset + last.len() - 1),
        )
        .body(last.to_vec())
        .send()
        .unwrap();
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let got = reg.get(&format!("/v2/team/chunked/blobs/{digest}"));
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());
}

#[test]
fn out_of_order_chunk_is_416_with_the_range_held_and_the_upload_continues() {
    let reg = Registry::start();
    let data = bytes("ooo", 30);
    let location = start_upload(&reg, "app");
    let resp = patch_chunk(&reg, &location, 0, &data[..10]);
    assert_status(&resp, 202);
    let location = header(&resp, "location");

    let resp = patch_chunk(&reg, &location, 20, &data[20..30]);
    assert_status(&resp, 416);
    assert_eq!(header(&resp, "range"), "0-9");
    assert!(opt_header(&resp, "location").is_some());
    assert_eq!(error_code(resp), "BLOB_UPLOAD_INVALID");

    // The session is intact: status and the right next chunk carry on.
    let resp = reg.get(&location);
    assert_status(&resp, 204);
    assert_eq!(header(&resp, "range"), "0-9");
    let resp = patch_chunk(&reg, &location, 10, &data[10..20]);
    assert_status(&resp, 202);
    let resp = patch_chunk(&reg, &header(&resp, "location"), 20, &data[20..30]);
    assert_status(&resp, 202);
    let digest = sha256(&data);
    let resp = reg
        .put(&with_param(&header(&resp, "location"), "digest", &digest))
        .send()
        .unwrap();
    assert_status(&resp, 201);
    let got = reg.get(&format!("/v2/app/blobs/{digest}"));
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());
}

#[test]
fn repeated_chunk_is_416_and_is_not_appended_twice() {
    let reg = Registry::start();
    let data = bytes("repeat", 20);
    let location = start_upload(&reg, "app");
    assert_status(&patch_chunk(&reg, &location, 0, &data[..10]), 202);
    let resp = patch_chunk(&reg, &location, 0, &data[..10]);
    assert_status(&resp, 416);
    assert_eq!(header(&resp, "range"), "0-9");
    assert_eq!(error_code(resp), "BLOB_UPLOAD_INVALID");
    assert_status(&patch_chunk(&reg, &location, 10, &data[10..]), 202);
    let digest = sha256(&data);
    let resp = reg
        .put(&with_param(&location, "digest", &digest))
        .send()
        .unwrap();
    assert_status(&resp, 201);
}

#[test]
fn overlapping_content_range_is_416() {
    let reg = Registry::start();
    let data = bytes("overlap", 15);
    let location = start_upload(&reg, "app");
    assert_status(&patch_chunk(&reg, &location, 0, &data[..10]), 202);
    let resp = patch_chunk(&reg, &location, 5, &data[5..15]);
    assert_status(&resp, 416);
    assert_eq!(header(&resp, "range"), "0-9");
    assert_eq!(error_code(resp), "BLOB_UPLOAD_INVALID");
    let resp = reg.get(&location);
    assert_eq!(header(&resp, "range"), "0-9");
}

#[test]
fn content_range_disagreeing_with_content_length_or_malformed_is_416() {
    let reg = Registry::start();
    let data = bytes("mismatch", 10);
    let location = start_upload(&reg, "app");
    assert_status(&patch_chunk(&reg, &location, 0, &data), 202);
    for range in ["10-29", "10-14", "garbage", "20-10", "bytes=10-19"] {
        let resp = reg
            .patch(&location)
            .header(CONTENT_RANGE, range)
            .body(data.clone())
            .send()
            .unwrap();
        assert_status(&resp, 416);
        assert_eq!(header(&resp, "range"), "0-9", "{range}");
        assert_eq!(error_code(resp), "BLOB_UPLOAD_INVALID", "{range}");
    }
    // Nothing of those bodies was kept.
    let resp = reg.get(&location);
    assert_status(&resp, 204);
    assert_eq!(header(&resp, "range"), "0-9");
}

/// A request refused before its body was read is answered once the body has arrived, so a
/// client sending a big chunk reads the error instead of a broken pipe.
#[test]
fn refused_upload_requests_with_big_bodies_get_their_error_not_a_reset() {
    let reg = Registry::start();
    let data = bytes("start", 10);
    let location = start_upload(&reg, "app");
    assert_status(&patch_chunk(&reg, &location, 0, &data), 202);
    let big = vec![3u8; 48 << 20];

    // A chunk that does not continue the upload.
    let resp = reg
        .patch(&location)
        .header(CONTENT_RANGE, format!("100-{}", 100 + big.len() - 1))
        .body(big.clone())
        .send()
        .unwrap();
    assert_status(&resp, 416);
    assert_eq!(header(&resp, "range"), "0-9");
    assert_eq!(error_code(resp), "BLOB_UPLOAD_INVALID");
    // A malformed Content-Range.
    let resp = reg
        .patch(&location)
        .header(CONTENT_RANGE, "garbage")
        .body(big.clone())
        .send()
        .unwrap();
    assert_status(&resp, 416);
    // A session that does not exist.
    let resp = reg
        .patch("/v2/app/blobs/uploads/00000000-0000-4000-8000-000000000000")
        .body(big.clone())
        .send()
        .unwrap();
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "BLOB_UPLOAD_UNKNOWN");
    // A monolithic PUT without its digest.
    let resp = reg.put(&location).body(big).send().unwrap();
    assert_status(&resp, 400);
    assert_eq!(error_code(resp), "DIGEST_INVALID");
    // None of it was kept.
    let resp = reg.get(&location);
    assert_status(&resp, 204);
    assert_eq!(header(&resp, "range"), "0-9");
}

/// A reference that is no valid tag names no manifest: GET, HEAD and DELETE answer 404
/// `MANIFEST_UNKNOWN` (the OCI conformance suite asks for `.INVALID_MANIFEST_NAME`), a PUT
/// under it is refused with 400 and stores nothing, a malformed digest stays 400
/// `DIGEST_INVALID`, and a client without credentials hears 401 first, as for any manifest.
#[test]
fn a_reference_that_is_no_tag_is_an_unknown_manifest() {
    let reg = Registry::start();
    push_image(&reg, "app", "base", Flavor::Oci, "base");
    let before = tags(&reg, "app");
    for bad in [".INVALID_MANIFEST_NAME", "-x", &"t".repeat(129)] {
        let path = format!("/v2/app/manifests/{bad}");
        let resp = reg.head(&path);
        assert_status(&resp, 404);
        let resp = reg.get(&path);
        assert_status(&resp, 404);
        assert_eq!(error_code(resp), "MANIFEST_UNKNOWN", "{bad}");
        let resp = reg.delete(&path);
        assert_status(&resp, 404);
        assert_eq!(error_code(resp), "MANIFEST_UNKNOWN", "{bad}");

        let body = image_manifest(Flavor::Oci, b"{\"bad\":1}", &[]);
        let resp = put_manifest(&reg, "app", bad, OCI_MANIFEST, &body);
        assert_status(&resp, 400);
        assert_eq!(error_code(resp), "MANIFEST_INVALID", "{bad}");
        assert_manifest_not_stored(&reg, "app", "base2", &body, &before);
    }
    let resp = reg.get("/v2/app/manifests/sha256:abc");
    assert_status(&resp, 400);
    assert_eq!(error_code(resp), "DIGEST_INVALID");

    let locked = Registry::start_in(Env::with_anonymous("none"), &[]);
    let resp = locked.get("/v2/app/manifests/.INVALID_MANIFEST_NAME");
    assert_status(&resp, 401);
    assert!(opt_header(&resp, "www-authenticate").is_some());
}

/// An upload request refused for want of credentials is answered after its body too: the
/// client reads the 401 and its challenge, not a broken pipe.
#[test]
fn an_unauthenticated_upload_request_with_a_big_body_gets_its_401() {
    let reg = Registry::start_in(Env::with_anonymous("none"), &[]);
    let big = vec![4u8; 48 << 20];
    let resp = reg
        .patch("/v2/app/blobs/uploads/00000000-0000-4000-8000-000000000000")
        .body(big.clone())
        .send()
        .unwrap();
    assert_status(&resp, 401);
    assert!(opt_header(&resp, "www-authenticate").is_some());
    let resp = reg
        .post(&format!("/v2/app/blobs/uploads/?digest={}", sha256(&big)))
        .body(big)
        .send()
        .unwrap();
    assert_status(&resp, 401);
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());
    // A manifest push from a client that sends its whole (oversized) body first.
    let head = "PUT /v2/app/manifests/v1 HTTP/1.1";
    let (status, body) = send_whole_then_read(&reg, head, &vec![b' '; 8 << 20]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(raw_error_code(head, &body), "UNAUTHORIZED");
}

/// Sends a request and its whole body before reading anything, as simple clients do
/// (Python's http.client, shell scripts over `nc`): a registry that refuses the request
/// without reading the body resets the connection, and such a client sees a broken pipe
/// instead of the answer. Returns the status and the response's body.
fn send_whole_then_read(reg: &Registry, head: &str, body: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(&reg.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "{head}\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reg.addr,
        body.len()
    )
    .unwrap();
    conn.write_all(body)
        .unwrap_or_else(|e| panic!("{head}: the registry stopped reading the body: {e}"));
    let mut response = Vec::new();
    conn.read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("{head}: no answer after the body: {e}"));
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{head}: no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The code of a spec error body read by [`send_whole_then_read`].
fn raw_error_code(head: &str, body: &str) -> String {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{head}: error body {body:?} is not JSON: {e}"));
    value["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{head}: no error code in {body}"))
        .to_string()
}

/// Every refusal of a request that carries a body, not only an upload's, is sent once the
/// body has arrived: a malformed name or digest, an endpoint that does not exist, a method
/// an endpoint does not take, an oversized manifest, bytes that do not match their digest. A
/// client that writes the whole body before it reads gets the spec's error, and nothing is
/// stored, not even the repository the request named.
#[test]
fn refusals_of_any_request_with_a_big_body_reach_a_client_that_sends_it_all() {
    let reg = Registry::start();
    let big = vec![6u8; 48 << 20];
    let digest = sha256(&big);
    let cases = [
        (
            format!("PUT /v2/Bad..Name/blobs/uploads/?digest={digest} HTTP/1.1"),
            400,
            "NAME_INVALID",
        ),
        (
            "POST /v2/app/blobs/uploads/?digest=sha512:abc HTTP/1.1".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!(
                "POST /v2/app/blobs/uploads/?digest={} HTTP/1.1",
                sha256(b"other bytes")
            ),
            400,
            "DIGEST_INVALID",
        ),
        (
            "POST /v2/app/nothing/here HTTP/1.1".to_string(),
            404,
            "UNSUPPORTED",
        ),
        (
            "PUT /v2/app/blobs/uploads/ HTTP/1.1".to_string(),
            405,
            "UNSUPPORTED",
        ),
        (
            format!("PUT /v2/app/blobs/{digest} HTTP/1.1"),
            405,
            "UNSUPPORTED",
        ),
        (
            "PUT /v2/app/manifests/v1 HTTP/1.1\r\nContent-Type: application/vnd.oci.image.manifest.v1+json"
                .to_string(),
            413,
            "SIZE_INVALID",
        ),
    ];
    for (head, status, code) in &cases {
        let (got, body) = send_whole_then_read(&reg, head, &big);
        assert_eq!(got, *status, "{head}: {body}");
        assert_eq!(raw_error_code(head, &body), *code, "{head}");
        // Messages speak of what the client sent, not of the registry's insides.
        assert!(!body.contains("RepoName"), "{head}: {body}");
    }
    let (_, body) = send_whole_then_read(&reg, "PUT /v2/app/blobs/uploads/ HTTP/1.1", &big);
    assert!(
        body.contains("PUT is not supported on /v2/app/blobs/uploads/"),
        "{body}"
    );
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());
    assert!(!reg.blob_file(&digest).exists());
    // Not even the repository was created.
    assert_eq!(error_code(reg.get("/v2/app/manifests/v1")), "NAME_UNKNOWN");
}

/// A client that waits for `100 Continue` before sending a big body (curl does) is told of a
/// refusal at once and sends nothing; one that does not wait has its body read to the end
/// and then reads the error.
#[test]
fn a_refused_client_waiting_for_100_continue_sends_nothing() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let chunk = dir.path().join("chunk");
    std::fs::write(&chunk, vec![5u8; 16 << 20]).unwrap();
    let url = reg.url("/v2/app/blobs/uploads/00000000-0000-4000-8000-000000000000");
    for (expect, waits) in [("Expect: 100-continue", true), ("Expect:", false)] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-X", "PATCH", "-H", expect])
            .arg("--data-binary")
            .arg(format!("@{}", chunk.display()))
            .args(["-o", "/dev/null", "-w", "%{http_code} %{size_upload}", &url])
            .output()
            .expect("curl runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{expect}: {stderr}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (code, sent) = text.split_once(' ').unwrap();
        assert_eq!(code, "404", "{expect}: {text}");
        let sent: u64 = sent.parse().unwrap();
        if waits {
            assert!(sent < 1 << 20, "{expect}: sent {sent} bytes");
        } else {
            assert_eq!(sent, 16 << 20, "{expect}");
        }
    }
}

#[test]
fn upload_status_is_204_with_range_and_a_usable_location() {
    let reg = Registry::start();
    let data = bytes("status", 100);
    let location = start_upload(&reg, "app");
    assert_status(&patch_chunk(&reg, &location, 0, &data), 202);
    let resp = reg.get(&location);
    assert_status(&resp, 204);
    assert_api_version(&resp);
    assert_eq!(header(&resp, "range"), "0-99");
    let status_location = header(&resp, "location");
    assert!(status_location.starts_with("/v2/app/blobs/uploads/"));
    let digest = sha256(&data);
    let resp = reg
        .put(&with_param(&status_location, "digest", &digest))
        .send()
        .unwrap();
    assert_status(&resp, 201);
}

#[test]
fn cancelled_upload_is_204_then_blob_upload_unknown() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    // Larger than the store keeps in memory, so the session has a file to remove.
    let data = bytes("cancel", 200_000);
    let digest = sha256(&data);
    let location = start_upload(&reg, "app");
    assert_status(&patch_chunk(&reg, &location, 0, &data), 202);
    assert_eq!(reg.upload_files().len(), 1);

    let resp = reg.delete(&location);
    assert_status(&resp, 204);
    assert_api_version(&resp);
    assert!(reg.upload_files().is_empty(), "cancel leaves the data");

    assert_eq!(error_code(reg.get(&location)), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        error_code(patch_chunk(&reg, &location, 1000, b"more")),
        "BLOB_UPLOAD_UNKNOWN"
    );
    let resp = reg
        .put(&with_param(&location, "digest", &digest))
        .send()
        .unwrap();
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(error_code(reg.delete(&location)), "BLOB_UPLOAD_UNKNOWN");
    assert_status(&reg.head(&format!("/v2/app/blobs/{digest}")), 404);

    // Ids that never existed, UUID or not.
    for id in ["0b0e3c36-5d39-4bb5-9a8e-3f5b1b7b2f6d", "not-an-id"] {
        let resp = reg.get(&format!("/v2/app/blobs/uploads/{id}"));
        assert_status(&resp, 404);
        assert_eq!(error_code(resp), "BLOB_UPLOAD_UNKNOWN");
    }
}

#[test]
fn completing_an_upload_without_digest_is_digest_invalid() {
    let reg = Registry::start();
    let location = start_upload(&reg, "app");
    let resp = reg.put(&location).body(b"content".to_vec()).send().unwrap();
    assert_status(&resp, 400);
    assert_eq!(error_code(resp), "DIGEST_INVALID");
    assert_status(
        &reg.head(&format!("/v2/app/blobs/{}", sha256(b"content"))),
        404,
    );
}

#[test]
fn completing_an_upload_with_a_wrong_digest_is_digest_invalid_and_stores_nothing() {
    let reg = Registry::start();
    let data = bytes("wrong", 5000);
    let right = sha256(&data);
    let wrong = sha256(b"something else");

    let location = start_upload(&reg, "app");
    let resp = reg
        .put(&with_param(&location, "digest", &wrong))
        .body(data.clone())
        .send()
        .unwrap();
    assert_status(&resp, 400);
    assert_eq!(error_code(resp), "DIGEST_INVALID");

    // Monolithically too.
    let resp = reg
        .post(&format!("/v2/app/blobs/uploads/?digest={wrong}"))
        .body(data.clone())
        .send()
        .unwrap();
    assert_status(&resp, 400);
    assert_eq!(error_code(resp), "DIGEST_INVALID");

    for digest in [&right, &wrong] {
        assert_status(&reg.head(&format!("/v2/app/blobs/{digest}")), 404);
        let resp = reg.get(&format!("/v2/app/blobs/{digest}"));
        assert_eq!(error_code(resp), "BLOB_UNKNOWN");
        assert!(!reg.blob_file(digest).exists(), "{digest} is on disk");
    }
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());
}

#[test]
fn body_shorter_than_its_content_length_completes_nothing() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    // Larger than the store keeps in memory, so the upload shows as a file while it runs.
    let sent = bytes("truncated", 500_000);
    // The digest of exactly what was sent: a registry that took the short body as the whole
    // would store it under this digest.
    let digest = sha256(&sent);

    // Monolithic POST.
    let mut conn = TcpStream::connect(&reg.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "POST /v2/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
        reg.addr
    )
    .unwrap();
    conn.write_all(&sent).unwrap();
    wait_until("the upload has begun", || !reg.upload_files().is_empty());
    conn.shutdown(Shutdown::Write).unwrap();
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(
        !response.starts_with("HTTP/1.1 2"),
        "a truncated body was accepted: {response}"
    );
    wait_until("the upload is discarded", || reg.upload_files().is_empty());
    assert_status(&reg.head(&format!("/v2/app/blobs/{digest}")), 404);
    assert!(!reg.blob_file(&digest).exists());

    // A streamed PATCH cut short: its session cannot be completed with what arrived.
    let location = start_upload(&reg, "app");
    let mut conn = TcpStream::connect(&reg.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
        reg.addr
    )
    .unwrap();
    conn.write_all(&sent).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(
        !response.starts_with("HTTP/1.1 2"),
        "a truncated chunk was accepted: {response}"
    );
    let resp = reg
        .put(&with_param(&location, "digest", &digest))
        .send()
        .unwrap();
    assert!(
        !resp.status().is_success(),
        "completed an upload whose body was cut short: {}",
        resp.status()
    );
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_status(&reg.head(&format!("/v2/app/blobs/{digest}")), 404);
    assert!(!reg.blob_file(&digest).exists());
}

// --- mounts -----------------------------------------------------------------------------------

#[test]
fn cross_repository_mount_is_201_and_the_blob_is_readable_in_the_target() {
    let reg = Registry::start();
    let data = bytes("mount", 10_000);
    let digest = push_blob(&reg, "source/app", &data);
    assert_status(&reg.head(&format!("/v2/target/blobs/{digest}")), 404);

    let resp = reg
        .post(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=source/app"
        ))
        .send()
        .unwrap();
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/target/blobs/{digest}")
    );
    let got = reg.get(&format!("/v2/target/blobs/{digest}"));
    assert_status(&got, 200);
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());

    // The two repositories hold it independently: deleting it from the source keeps it in
    // the target.
    assert_status(&reg.delete(&format!("/v2/source/app/blobs/{digest}")), 202);
    let got = reg.get(&format!("/v2/target/blobs/{digest}"));
    assert_status(&got, 200);
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());
}

#[test]
fn mount_that_cannot_be_done_is_202_with_a_working_upload_session() {
    let reg = Registry::start();
    let in_other = bytes("elsewhere", 500);
    let elsewhere = push_blob(&reg, "other", &in_other);
    push_blob(&reg, "source", b"something");
    let nowhere_data = bytes("nowhere", 700);
    let nowhere = sha256(&nowhere_data);

    let cases = [
        // Stored nowhere.
        (nowhere.clone(), "source", nowhere_data.clone()),
        // Stored, but not in the repository `from` names.
        (elsewhere.clone(), "source", in_other.clone()),
        // `from` does not exist.
        (nowhere.clone(), "missing/repo", nowhere_data.clone()),
    ];
    for (i, (digest, from, data)) in cases.into_iter().enumerate() {
        let repo = format!("target{i}");
        let resp = reg
            .post(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            ))
            .send()
            .unwrap();
        assert_status(&resp, 202);
        let location = header(&resp, "location");
        assert!(
            location.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
            "{location}"
        );
        assert_status(&reg.head(&format!("/v2/{repo}/blobs/{digest}")), 404);
        let resp = reg
            .put(&with_param(&location, "digest", &digest))
            .body(data)
            .send()
            .unwrap();
        assert_status(&resp, 201);
        assert_status(&reg.head(&format!("/v2/{repo}/blobs/{digest}")), 200);
    }
}

#[test]
fn mount_without_from_is_201_when_any_repository_holds_the_blob_and_202_otherwise() {
    let reg = Registry::start();
    let data = bytes("anywhere", 800);
    let digest = push_blob(&reg, "holder", &data);
    let resp = reg
        .post(&format!("/v2/taker/blobs/uploads/?mount={digest}"))
        .send()
        .unwrap();
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let got = reg.get(&format!("/v2/taker/blobs/{digest}"));
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());

    let absent = sha256(b"absent");
    let resp = reg
        .post(&format!("/v2/taker/blobs/uploads/?mount={absent}"))
        .send()
        .unwrap();
    assert_status(&resp, 202);
    assert!(header(&resp, "location").starts_with("/v2/taker/blobs/uploads/"));
    assert_status(&reg.head(&format!("/v2/taker/blobs/{absent}")), 404);
}

#[test]
fn mount_with_invalid_arguments_falls_back_to_an_upload_session() {
    let reg = Registry::start();
    let data = bytes("fallback", 900);
    let digest = push_blob(&reg, "holder", &data);
    // "If a mount fails due to invalid repository or digest arguments, the registry will fall
    // back to the standard upload behavior and return a 202 Accepted".
    for query in [
        "mount=sha256:abc&from=holder".to_string(),
        format!("mount=md5:{}&from=holder", "a".repeat(32)),
        format!("mount={digest}&from=Not..A..Name"),
        format!("mount={digest}&from="),
    ] {
        let resp = reg
            .post(&format!("/v2/taker/blobs/uploads/?{query}"))
            .send()
            .unwrap();
        assert_status(&resp, 202);
        let location = header(&resp, "location");
        assert!(location.starts_with("/v2/taker/blobs/uploads/"), "{query}");
        // An invalid `from` must not widen the mount to "any repository".
        assert_status(&reg.head(&format!("/v2/taker/blobs/{digest}")), 404);
        assert_status(&reg.delete(&location), 204);
    }
}

// --- blob reads and deletes -----------------------------------------------------------------

#[test]
fn blob_get_and_head_report_length_and_digest() {
    let reg = Registry::start();
    let data = bytes("read", 12_345);
    let digest = push_blob(&reg, "app", &data);
    let path = format!("/v2/app/blobs/{digest}");

    let resp = reg.get(&path);
    assert_status(&resp, 200);
    assert_api_version(&resp);
    assert_eq!(header(&resp, "content-length"), "12345");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(resp.bytes().unwrap().as_ref(), data.as_slice());

    let resp = reg.head(&path);
    assert_status(&resp, 200);
    assert_api_version(&resp);
    assert_eq!(header(&resp, "content-length"), "12345");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(resp.bytes().unwrap().is_empty());

    let unknown = sha256(b"never pushed");
    let resp = reg.get(&format!("/v2/app/blobs/{unknown}"));
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "BLOB_UNKNOWN");
    assert_status(&reg.head(&format!("/v2/app/blobs/{unknown}")), 404);
}

#[test]
fn blob_range_get_is_206_with_content_range_and_the_right_bytes() {
    let reg = Registry::start();
    let data = bytes("range", 1000);
    let digest = push_blob(&reg, "app", &data);
    let path = format!("/v2/app/blobs/{digest}");
    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=100-199", 100, 200),
        ("bytes=500-", 500, 1000),
        ("bytes=-10", 990, 1000),
        ("bytes=990-5000", 990, 1000),
        ("bytes=999-999", 999, 1000),
    ] {
        let resp = reg
            .request(Method::GET, &path)
            .header(RANGE, range)
            .send()
            .unwrap();
        assert_status(&resp, 206);
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{}/1000", end - 1),
            "{range}"
        );
        assert_eq!(header(&resp, "content-length"), (end - start).to_string());
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(resp.bytes().unwrap().as_ref(), &data[start..end], "{range}");
    }
}

/// A blob bigger than a read window (4 MiB), pulled by 64 clients at once (whole, and in
/// ranges that start and end inside windows) while it goes from the disk into memory, then
/// again from memory, then after a restart: every client gets its bytes.
#[test]
fn a_big_blob_pulled_by_64_clients_at_once_and_after_a_restart() {
    if !blobs_on_disk() {
        return;
    }
    let mut reg = Registry::start();
    let len = 9 * 1024 * 1024 + 4321;
    let data = std::sync::Arc::new(bytes("many readers", len));
    let digest = push_blob(&reg, "app", &data);
    let path = format!("/v2/app/blobs/{digest}");
    let pull_all = |reg: &Registry| {
        std::thread::scope(|s| {
            let mut readers = Vec::new();
            for i in 0..64usize {
                let (reg, data, path) = (&*reg, data.clone(), path.clone());
                readers.push(s.spawn(move || {
                    let (start, end) = if i % 2 == 1 {
                        (i * 65_521, len - i * 4099)
                    } else {
                        (0, len)
                    };
                    let mut request = reg.request(Method::GET, &path);
                    if i % 2 == 1 {
                        request = request.header(RANGE, format!("bytes={start}-{}", end - 1));
                    }
                    let resp = request.send().unwrap();
                    assert_status(&resp, if i % 2 == 1 { 206 } else { 200 });
                    let got = resp.bytes().unwrap();
                    assert!(
                        got.as_ref() == &data[start..end],
                        "reader {i}: {start}-{end}"
                    );
                }));
            }
            for reader in readers {
                reader.join().unwrap();
            }
        });
    };
    pull_all(&reg);
    pull_all(&reg);
    // Read more than once, it is in the read cache now, and the status says so.
    let cache = &reg.env.info()["readCache"];
    assert_eq!(cache["blobs"], 1, "{cache}");
    assert!(
        cache["heldBytes"].as_u64().unwrap() >= len as u64,
        "{cache}"
    );
    reg.restart();
    pull_all(&reg);
    let resp = reg
        .request(Method::GET, &path)
        .header(
            RANGE,
            format!("bytes={}-{}", 4 * 1024 * 1024 - 1, 8 * 1024 * 1024),
        )
        .send()
        .unwrap();
    assert_status(&resp, 206);
    assert!(resp.bytes().unwrap().as_ref() == &data[4 * 1024 * 1024 - 1..8 * 1024 * 1024 + 1]);
}

/// The read cache is a shared resource one client could try to fill: pulling ever more
/// blobs, each twice, never makes it hold more than its budget (64 MiB in the tests), and
/// every pull still gets its bytes.
#[test]
fn pulling_many_blobs_never_grows_the_read_cache_past_its_budget() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    let budget = reg.env.info()["readCache"]["budgetBytes"].as_u64().unwrap();
    assert_eq!(budget, 64 << 20);
    let len = 9 * 1024 * 1024;
    for i in 0..12 {
        let data = bytes(&format!("cache flood {i}"), len);
        let digest = push_blob(&reg, "flood", &data);
        for _ in 0..2 {
            let resp = reg.get(&format!("/v2/flood/blobs/{digest}"));
            assert_status(&resp, 200);
            assert!(resp.bytes().unwrap().as_ref() == &data[..], "blob {i}");
        }
        let cache = &reg.env.info()["readCache"];
        assert!(cache["heldBytes"].as_u64().unwrap() <= budget, "{cache}");
        assert!(
            cache["heldBytes"].as_u64().unwrap() + cache["preparedBytes"].as_u64().unwrap()
                <= budget,
            "{cache}"
        );
    }
    // It did keep blobs: the cache works, within its bound.
    let cache = &reg.env.info()["readCache"];
    assert!(cache["blobs"].as_u64().unwrap() >= 1, "{cache}");
}

/// What RFC 9110 lets a server ignore is answered with the whole blob (200), not an error:
/// a unit other than bytes, several ranges at once, an `If-Range` naming other content. An
/// `If-Range` with the blob's own ETag keeps the range.
#[test]
fn blob_ranges_a_server_may_ignore_get_the_whole_blob() {
    let reg = Registry::start();
    let data = bytes("ignored ranges", 1000);
    let digest = push_blob(&reg, "app", &data);
    let path = format!("/v2/app/blobs/{digest}");
    let etag = format!("\"{digest}\"");
    for headers in [
        vec![(RANGE, "items=0-9")],
        vec![(RANGE, "bytes=0-1,5-6")],
        vec![(RANGE, "bytes=0-9"), (IF_RANGE, "\"sha256:other\"")],
        vec![
            (RANGE, "bytes=0-9"),
            (IF_RANGE, "Tue, 01 Jan 2030 00:00:00 GMT"),
        ],
    ] {
        let mut request = reg.request(Method::GET, &path);
        for (name, value) in &headers {
            request = request.header(name, *value);
        }
        let resp = request.send().unwrap();
        assert_status(&resp, 200);
        assert!(opt_header(&resp, "content-range").is_none(), "{headers:?}");
        assert_eq!(resp.bytes().unwrap().as_ref(), &data[..], "{headers:?}");
    }
    let resp = reg
        .request(Method::GET, &path)
        .header(RANGE, "bytes=0-9")
        .header(IF_RANGE, &etag)
        .send()
        .unwrap();
    assert_status(&resp, 206);
    assert_eq!(header(&resp, "etag"), etag);
    assert_eq!(resp.bytes().unwrap().as_ref(), &data[..10]);
}

#[test]
fn unsatisfiable_blob_range_is_416() {
    let reg = Registry::start();
    let data = bytes("unsatisfiable", 1000);
    let digest = push_blob(&reg, "app", &data);
    for range in [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=500-100",
        "bytes=-0",
    ] {
        let resp = reg
            .request(Method::GET, &format!("/v2/app/blobs/{digest}"))
            .header(RANGE, range)
            .send()
            .unwrap();
        assert_status(&resp, 416);
        assert_api_version(&resp);
        assert_eq!(header(&resp, "content-range"), "bytes */1000", "{range}");
    }
}

#[test]
fn blob_delete_is_202_then_blob_unknown() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    let data = bytes("delete", 2048);
    let digest = push_blob(&reg, "app", &data);
    assert!(reg.blob_file(&digest).exists());
    let resp = reg.delete(&format!("/v2/app/blobs/{digest}"));
    assert_status(&resp, 202);
    assert_api_version(&resp);
    assert_eq!(
        error_code(reg.get(&format!("/v2/app/blobs/{digest}"))),
        "BLOB_UNKNOWN"
    );
    assert_status(&reg.head(&format!("/v2/app/blobs/{digest}")), 404);
    let resp = reg.delete(&format!("/v2/app/blobs/{digest}"));
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "BLOB_UNKNOWN");
    assert!(
        !reg.blob_file(&digest).exists(),
        "content no repository links is still stored"
    );
}

#[test]
fn blob_of_another_repository_is_not_readable_or_deletable_here() {
    let reg = Registry::start();
    let data = bytes("private", 300);
    let digest = push_blob(&reg, "owner", &data);
    push_blob(&reg, "stranger", b"its own blob");
    for repo in ["stranger", "does-not-exist"] {
        let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_status(&resp, 404);
        assert_eq!(error_code(resp), "BLOB_UNKNOWN");
        assert_status(&reg.head(&format!("/v2/{repo}/blobs/{digest}")), 404);
        let resp = reg.delete(&format!("/v2/{repo}/blobs/{digest}"));
        assert_status(&resp, 404);
    }
    let got = reg.get(&format!("/v2/owner/blobs/{digest}"));
    assert_eq!(got.bytes().unwrap().as_ref(), data.as_slice());
}

// --- manifests --------------------------------------------------------------------------------

/// GET and HEAD by tag and by digest answer the exact bytes with the right headers.
fn assert_manifest_served(reg: &Registry, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
    let digest = sha256(body);
    for reference in [tag, digest.as_str()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = reg.get(&path);
        assert_status(&resp, 200);
        assert_api_version(&resp);
        assert_eq!(header(&resp, "content-type"), media_type, "{path}");
        assert_eq!(header(&resp, "content-length"), body.len().to_string());
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(resp.bytes().unwrap().as_ref(), body, "{path}");

        let resp = reg.head(&path);
        assert_status(&resp, 200);
        assert_eq!(header(&resp, "content-type"), media_type, "{path}");
        assert_eq!(header(&resp, "content-length"), body.len().to_string());
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert!(resp.bytes().unwrap().is_empty());
    }
}

#[test]
fn oci_image_manifest_put_and_served_by_tag_and_digest() {
    let reg = Registry::start();
    let (manifest, digest) = push_image(&reg, "team/app", "v1", Flavor::Oci, "oci-image");
    assert_manifest_served(&reg, "team/app", "v1", OCI_MANIFEST, &manifest);
    // Pushing the same manifest by digest, and again by tag, is idempotent.
    assert_eq!(
        put_manifest_ok(&reg, "team/app", &digest, OCI_MANIFEST, &manifest),
        digest
    );
    put_manifest_ok(&reg, "team/app", "v1", OCI_MANIFEST, &manifest);
    assert_eq!(tags(&reg, "team/app"), ["v1"]);
}

#[test]
fn oci_manifest_without_media_type_field_is_stored_with_the_content_type_sent() {
    let reg = Registry::start();
    let config = b"{}".to_vec();
    let layer = bytes("no-media-type", 64);
    push_blob(&reg, "app", &config);
    push_blob(&reg, "app", &layer);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    }))
    .unwrap();
    put_manifest_ok(&reg, "app", "bare", OCI_MANIFEST, &manifest);
    assert_manifest_served(&reg, "app", "bare", OCI_MANIFEST, &manifest);
}

#[test]
fn oci_index_with_two_platform_manifests_put_and_served_by_tag_and_digest() {
    let reg = Registry::start();
    let (amd64, _) = push_image(&reg, "multi", "", Flavor::Oci, "amd64");
    let (arm64, _) = push_image(&reg, "multi", "", Flavor::Oci, "arm64");
    // Platform manifests pushed by digest are untagged.
    assert!(tags(&reg, "multi").is_empty());
    let index = index_manifest(Flavor::Oci, &[(&amd64, "amd64"), (&arm64, "arm64")]);
    let digest = put_manifest_ok(&reg, "multi", "latest", OCI_INDEX, &index);
    assert_manifest_served(&reg, "multi", "latest", OCI_INDEX, &index);
    assert_manifest_served(&reg, "multi", &sha256(&amd64), OCI_MANIFEST, &amd64);
    assert_eq!(
        put_manifest_ok(&reg, "multi", &digest, OCI_INDEX, &index),
        digest
    );
}

#[test]
fn docker_schema2_manifest_put_and_served_by_tag_and_digest() {
    let reg = Registry::start();
    let (manifest, digest) = push_image(&reg, "docker/app", "1.0", Flavor::Docker, "docker");
    assert_manifest_served(&reg, "docker/app", "1.0", DOCKER_MANIFEST, &manifest);
    put_manifest_ok(&reg, "docker/app", &digest, DOCKER_MANIFEST, &manifest);
}

#[test]
fn docker_manifest_list_put_and_served_by_tag_and_digest() {
    let reg = Registry::start();
    let (amd64, _) = push_image(&reg, "dlist", "", Flavor::Docker, "d-amd64");
    let (arm64, _) = push_image(&reg, "dlist", "", Flavor::Docker, "d-arm64");
    let list = index_manifest(Flavor::Docker, &[(&amd64, "amd64"), (&arm64, "arm64")]);
    let digest = put_manifest_ok(&reg, "dlist", "latest", DOCKER_LIST, &list);
    assert_manifest_served(&reg, "dlist", "latest", DOCKER_LIST, &list);
    put_manifest_ok(&reg, "dlist", &digest, DOCKER_LIST, &list);
}

#[test]
fn manifest_get_with_several_accept_header_lines_as_docker_sends_them() {
    let reg = Registry::start();
    let (docker, _) = push_image(&reg, "app", "docker", Flavor::Docker, "accept-docker");
    let (oci, _) = push_image(&reg, "app", "oci", Flavor::Oci, "accept-oci");
    let index = index_manifest(Flavor::Oci, &[(&oci, "amd64")]);
    put_manifest_ok(&reg, "app", "index", OCI_INDEX, &index);
    for (tag, media_type, body) in [
        ("docker", DOCKER_MANIFEST, &docker),
        ("oci", OCI_MANIFEST, &oci),
        ("index", OCI_INDEX, &index),
    ] {
        // `header` appends: each Accept is its own header line.
        let resp = reg
            .request(Method::GET, &format!("/v2/app/manifests/{tag}"))
            .header(ACCEPT, DOCKER_MANIFEST)
            .header(ACCEPT, DOCKER_LIST)
            .header(ACCEPT, OCI_MANIFEST)
            .header(ACCEPT, OCI_INDEX)
            .header(
                ACCEPT,
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
            )
            .send()
            .unwrap();
        assert_status(&resp, 200);
        assert_eq!(header(&resp, "content-type"), media_type, "{tag}");
        assert_eq!(header(&resp, "docker-content-digest"), sha256(body));
        assert_eq!(resp.bytes().unwrap().as_ref(), body.as_slice());
    }
}

#[test]
fn manifest_put_by_digest_with_other_content_is_digest_invalid_and_stores_nothing() {
    let reg = Registry::start();
    let (_, _) = push_image(&reg, "app", "base", Flavor::Oci, "base");
    let before = tags(&reg, "app");
    let config = b"{\"os\":\"linux\"}".to_vec();
    push_blob(&reg, "app", &config);
    let manifest = image_manifest(Flavor::Oci, &config, &[]);
    let claimed = sha256(b"not this manifest");
    let resp = put_manifest(&reg, "app", &claimed, OCI_MANIFEST, &manifest);
    assert_status(&resp, 400);
    assert_eq!(error_code(resp), "DIGEST_INVALID");
    let resp = reg.get(&format!("/v2/app/manifests/{claimed}"));
    assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
    assert_manifest_not_stored(&reg, "app", "base-not", &manifest, &before);
}

#[test]
fn manifest_referencing_an_unknown_blob_is_manifest_blob_unknown_and_stores_nothing() {
    let reg = Registry::start();
    push_image(&reg, "app", "base", Flavor::Oci, "base");
    let before = tags(&reg, "app");
    let config = b"{\"os\":\"linux\"}".to_vec();
    let layer = bytes("missing-layer", 100);
    // A blob another repository holds does not count for this one.
    let foreign = bytes("foreign-layer", 100);
    push_blob(&reg, "other", &foreign);
    push_blob(&reg, "app", &config);

    for (what, manifest) in [
        ("layer", image_manifest(Flavor::Oci, &config, &[&layer])),
        ("config", image_manifest(Flavor::Oci, b"{\"none\":1}", &[])),
        ("foreign", image_manifest(Flavor::Oci, &config, &[&foreign])),
        (
            "docker layer",
            image_manifest(Flavor::Docker, &config, &[&layer]),
        ),
    ] {
        let media_type = if what.starts_with("docker") {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let resp = put_manifest(&reg, "app", "broken", media_type, &manifest);
        assert_status(&resp, 400);
        assert_eq!(error_code(resp), "MANIFEST_BLOB_UNKNOWN", "{what}");
        assert_manifest_not_stored(&reg, "app", "broken", &manifest, &before);
    }
}

#[test]
fn index_referencing_an_unknown_manifest_is_manifest_blob_unknown_and_stores_nothing() {
    let reg = Registry::start();
    let (known, _) = push_image(&reg, "app", "base", Flavor::Oci, "known");
    let before = tags(&reg, "app");
    let unknown = image_manifest(Flavor::Oci, b"{\"never\":true}", &[]);
    for flavor in [Flavor::Oci, Flavor::Docker] {
        let index = index_manifest(flavor, &[(&known, "amd64"), (&unknown, "arm64")]);
        let resp = put_manifest(&reg, "app", "multi", flavor.index(), &index);
        assert_status(&resp, 400);
        assert_eq!(error_code(resp), "MANIFEST_BLOB_UNKNOWN");
        assert_manifest_not_stored(&reg, "app", "multi", &index, &before);
    }
}

#[test]
fn manifest_that_is_not_a_valid_manifest_is_manifest_invalid_and_stores_nothing() {
    let reg = Registry::start();
    push_image(&reg, "app", "base", Flavor::Oci, "base");
    let before = tags(&reg, "app");
    let bodies: [(&str, &[u8]); 5] = [
        (OCI_MANIFEST, b"this is not json"),
        (OCI_MANIFEST, b"{\"schemaVersion\": 2, \"config\": "),
        (OCI_MANIFEST, b"{\"schemaVersion\": 1}"),
        // An image manifest without config or layers.
        (OCI_MANIFEST, b"{\"schemaVersion\": 2}"),
        // Content-Type and mediaType disagree.
        (
            DOCKER_MANIFEST,
            b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.index.v1+json\", \"manifests\": []}",
        ),
    ];
    for (media_type, body) in bodies {
        let resp = put_manifest(&reg, "app", "bad", media_type, body);
        assert_status(&resp, 400);
        assert_eq!(
            error_code(resp),
            "MANIFEST_INVALID",
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_manifest_not_stored(&reg, "app", "bad", body, &before);
    }
}

/// A valid image manifest of exactly `size` bytes (padded with an annotation).
fn manifest_of_size(config: &[u8], size: usize) -> Vec<u8> {
    let skeleton = |pad: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [],
            "annotations": { "pad": "x".repeat(pad) },
        }))
        .unwrap()
    };
    let overhead = skeleton(0).len();
    let body = skeleton(size - overhead);
    assert_eq!(body.len(), size);
    body
}

#[test]
fn manifest_over_4_mib_is_413_size_invalid_and_stores_nothing() {
    let reg = Registry::start();
    push_image(&reg, "app", "base", Flavor::Oci, "base");
    let before = tags(&reg, "app");
    let config = b"{\"big\":true}".to_vec();
    push_blob(&reg, "app", &config);
    let body = manifest_of_size(&config, MAX_MANIFEST + 1);

    // With a Content-Length.
    let resp = put_manifest(&reg, "app", "huge", OCI_MANIFEST, &body);
    assert_status(&resp, 413);
    assert_eq!(error_code(resp), "SIZE_INVALID");
    assert_manifest_not_stored(&reg, "app", "huge", &body, &before);

    // Streamed, without one.
    let resp = reg
        .put("/v2/app/manifests/huge")
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .body(Body::new(std::io::Cursor::new(body.clone())))
        .send()
        .unwrap();
    assert_status(&resp, 413);
    assert_eq!(error_code(resp), "SIZE_INVALID");
    assert_manifest_not_stored(&reg, "app", "huge", &body, &before);
}

#[test]
fn manifest_of_exactly_4_mib_is_accepted() {
    let reg = Registry::start();
    let config = b"{\"big\":true}".to_vec();
    push_blob(&reg, "app", &config);
    let body = manifest_of_size(&config, MAX_MANIFEST);
    put_manifest_ok(&reg, "app", "big", OCI_MANIFEST, &body);
    assert_manifest_served(&reg, "app", "big", OCI_MANIFEST, &body);
}

#[test]
fn manifest_delete_by_digest_is_202_and_removes_every_tag_pointing_at_it() {
    let reg = Registry::start();
    let (manifest, digest) = push_image(&reg, "app", "v1", Flavor::Oci, "delete-me");
    put_manifest_ok(&reg, "app", "v2", OCI_MANIFEST, &manifest);
    push_image(&reg, "app", "keep", Flavor::Oci, "keep-me");
    assert_eq!(tags(&reg, "app"), ["keep", "v1", "v2"]);

    let resp = reg.delete(&format!("/v2/app/manifests/{digest}"));
    assert_status(&resp, 202);
    assert_api_version(&resp);
    for reference in [digest.as_str(), "v1", "v2"] {
        let resp = reg.get(&format!("/v2/app/manifests/{reference}"));
        assert_status(&resp, 404);
        assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
        assert_status(&reg.head(&format!("/v2/app/manifests/{reference}")), 404);
    }
    assert_eq!(tags(&reg, "app"), ["keep"]);
    assert_status(&reg.get("/v2/app/manifests/keep"), 200);
    let resp = reg.delete(&format!("/v2/app/manifests/{digest}"));
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
}

#[test]
fn manifest_delete_by_tag_is_202_and_keeps_the_manifest_by_digest() {
    let reg = Registry::start();
    let (manifest, digest) = push_image(&reg, "app", "v1", Flavor::Oci, "untag");
    put_manifest_ok(&reg, "app", "v2", OCI_MANIFEST, &manifest);

    let resp = reg.delete("/v2/app/manifests/v1");
    assert_status(&resp, 202);
    assert_eq!(
        error_code(reg.get("/v2/app/manifests/v1")),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(tags(&reg, "app"), ["v2"]);
    let resp = reg.get(&format!("/v2/app/manifests/{digest}"));
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), manifest.as_slice());
    assert_status(&reg.get("/v2/app/manifests/v2"), 200);

    let resp = reg.delete("/v2/app/manifests/v1");
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
}

// --- listings -----------------------------------------------------------------------------------

/// Follows `Link` from `first` to the end; returns the pages.
fn follow_pages(reg: &Registry, first: &str, field: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(url) = next {
        assert!(pages.len() < 100, "pagination does not end");
        let resp = reg.get(&url);
        assert_status(&resp, 200);
        assert_api_version(&resp);
        next = next_link(&resp);
        let body: Value = resp.json().unwrap();
        pages.push(
            body[field]
                .as_array()
                .unwrap_or_else(|| panic!("{url}: no {field} in {body}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
        );
    }
    pages
}

#[test]
fn tag_list_pages_with_n_and_last_and_links_to_the_next_page() {
    let reg = Registry::start();
    let (manifest, _) = push_image(&reg, "team/app", "latest", Flavor::Oci, "tags");
    let mut all = vec!["latest".to_string()];
    for tag in ["a", "b10", "b2", "c", "v1.0", "v1.1", "Z_upper"] {
        put_manifest_ok(&reg, "team/app", tag, OCI_MANIFEST, &manifest);
        all.push(tag.to_string());
    }
    all.sort();
    assert_eq!(tags(&reg, "team/app"), all, "lexically ordered");
    assert!(next_link(&reg.get("/v2/team/app/tags/list")).is_none());

    let pages = follow_pages(&reg, "/v2/team/app/tags/list?n=3", "tags");
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 2],
        "{pages:?}"
    );
    assert_eq!(pages.concat(), all);

    let resp = reg.get("/v2/team/app/tags/list?n=3");
    let link = opt_header(&resp, "link").unwrap();
    assert_eq!(
        link,
        format!("</v2/team/app/tags/list?n=3&last={}>; rel=\"next\"", all[2])
    );

    let resp = reg.get(&format!("/v2/team/app/tags/list?last={}", all[5]));
    let body: Value = resp.json().unwrap();
    assert_eq!(body["tags"], json!(all[6..]));
    let resp = reg.get(&format!("/v2/team/app/tags/list?n=2&last={}", all[1]));
    assert!(next_link(&resp).is_some());
    let body: Value = resp.json().unwrap();
    assert_eq!(body["tags"], json!(all[2..4]));
    // Exactly the rest: no further page.
    let resp = reg.get(&format!("/v2/team/app/tags/list?n=2&last={}", all[5]));
    assert!(next_link(&resp).is_none());

    let resp = reg.get("/v2/unknown/tags/list");
    assert_status(&resp, 404);
    assert_eq!(error_code(resp), "NAME_UNKNOWN");
}

#[test]
fn catalog_pages_with_n_and_last_and_links_to_the_next_page() {
    let reg = Registry::start();
    assert!(catalog(&reg).is_empty());
    let mut all: Vec<String> = ["b", "a/x", "a", "c-d", "team/app", "z.z", "team/app2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for repo in &all {
        push_blob(&reg, repo, repo.as_bytes());
    }
    all.sort();
    assert_eq!(catalog(&reg), all);
    let pages = follow_pages(&reg, "/v2/_catalog?n=2", "repositories");
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
    assert_eq!(pages.concat(), all);
    let resp = reg.get(&format!("/v2/_catalog?n=3&last={}", all[2]));
    assert!(next_link(&resp).is_some());
    let body: Value = resp.json().unwrap();
    assert_eq!(body["repositories"], json!(all[3..6]));
}

// --- referrers ----------------------------------------------------------------------------------

/// An artifact manifest whose subject is `subject`; pushed, with its OCI-Subject checked.
fn push_referrer(
    reg: &Registry,
    repo: &str,
    subject: &[u8],
    artifact_type: Option<&str>,
    config_type: &str,
    payload: &str,
) -> (Vec<u8>, String) {
    let config = b"{}".to_vec();
    let layer = payload.as_bytes().to_vec();
    push_blob(reg, repo, &config);
    push_blob(reg, repo, &layer);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, &config),
        "layers": [descriptor("application/octet-stream", &layer)],
        "subject": descriptor(OCI_MANIFEST, subject),
        "annotations": { "org.example.payload": payload },
    });
    if let Some(t) = artifact_type {
        manifest["artifactType"] = json!(t);
    }
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&body);
    let resp = put_manifest(reg, repo, &digest, OCI_MANIFEST, &body);
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "oci-subject"), sha256(subject));
    (body, digest)
}

/// The referrers index at `path`, checked for shape; its headers and descriptors.
fn referrers(reg: &Registry, path: &str) -> (HeaderMap, Vec<Value>) {
    let resp = reg.get(path);
    assert_status(&resp, 200);
    assert_api_version(&resp);
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    let headers = resp.headers().clone();
    let body: Value = resp.json().unwrap();
    assert_eq!(body["schemaVersion"], 2, "{path}: {body}");
    assert_eq!(body["mediaType"], OCI_INDEX, "{path}: {body}");
    let manifests = body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no manifests array in {body}"))
        .clone();
    (headers, manifests)
}

fn filters_applied(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("oci-filters-applied")
        .map(|v| v.to_str().unwrap())
}

#[test]
fn referrers_list_the_manifests_whose_subject_is_the_digest() {
    let reg = Registry::start();
    let (subject, subject_digest) = push_image(&reg, "app", "v1", Flavor::Oci, "subject");
    let (other, _) = push_image(&reg, "app", "v2", Flavor::Oci, "other-subject");
    let (sbom, sbom_digest) = push_referrer(
        &reg,
        "app",
        &subject,
        Some("application/vnd.example.sbom.v1"),
        OCI_EMPTY,
        "sbom",
    );
    // No artifactType: the config's media type stands for it.
    let (sig, sig_digest) = push_referrer(
        &reg,
        "app",
        &subject,
        None,
        "application/vnd.example.signature.config.v1+json",
        "signature",
    );
    // Refers to something else: not listed.
    push_referrer(
        &reg,
        "app",
        &other,
        Some("application/vnd.example.sbom.v1"),
        OCI_EMPTY,
        "other",
    );

    let (_, manifests) = referrers(&reg, &format!("/v2/app/referrers/{subject_digest}"));
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let find = |d: &str| {
        manifests
            .iter()
            .find(|m| m["digest"] == d)
            .unwrap_or_else(|| panic!("{d} not among {manifests:?}"))
            .clone()
    };
    let s = find(&sbom_digest);
    assert_eq!(s["mediaType"], OCI_MANIFEST);
    assert_eq!(s["size"], sbom.len());
    assert_eq!(s["artifactType"], "application/vnd.example.sbom.v1");
    assert_eq!(s["annotations"]["org.example.payload"], "sbom");
    let g = find(&sig_digest);
    assert_eq!(g["size"], sig.len());
    assert_eq!(
        g["artifactType"],
        "application/vnd.example.signature.config.v1+json"
    );
}

#[test]
fn referrers_of_an_unknown_digest_is_an_empty_index() {
    let reg = Registry::start();
    push_image(&reg, "app", "v1", Flavor::Oci, "lonely");
    let unknown = sha256(b"nobody refers to me");
    let (headers, manifests) = referrers(&reg, &format!("/v2/app/referrers/{unknown}"));
    assert!(manifests.is_empty());
    assert!(filters_applied(&headers).is_none());
}

#[test]
fn referrers_filter_by_artifact_type_and_say_so() {
    let reg = Registry::start();
    let (subject, digest) = push_image(&reg, "app", "v1", Flavor::Oci, "filtered");
    let (_, sbom) = push_referrer(
        &reg,
        "app",
        &subject,
        Some("application/vnd.example.sbom.v1"),
        OCI_EMPTY,
        "sbom",
    );
    push_referrer(
        &reg,
        "app",
        &subject,
        Some("application/vnd.example.sig.v1"),
        OCI_EMPTY,
        "sig",
    );
    let (headers, all) = referrers(&reg, &format!("/v2/app/referrers/{digest}"));
    assert_eq!(all.len(), 2);
    assert!(filters_applied(&headers).is_none());

    let (headers, only) = referrers(
        &reg,
        &format!("/v2/app/referrers/{digest}?artifactType=application/vnd.example.sbom.v1"),
    );
    assert_eq!(filters_applied(&headers), Some("artifactType"));
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["digest"], sbom);
    assert_eq!(only[0]["artifactType"], "application/vnd.example.sbom.v1");

    let (headers, none) = referrers(
        &reg,
        &format!("/v2/app/referrers/{digest}?artifactType=application/x-nothing"),
    );
    assert_eq!(filters_applied(&headers), Some("artifactType"));
    assert!(none.is_empty());
}

#[test]
fn manifest_with_a_subject_pushed_before_its_subject_answers_oci_subject() {
    let reg = Registry::start();
    // The subject does not exist (yet): the spec says to accept the referrer anyway.
    let subject = image_manifest(Flavor::Oci, b"{\"later\":true}", &[]);
    let (_, referrer) = push_referrer(
        &reg,
        "app",
        &subject,
        Some("application/vnd.example.early.v1"),
        OCI_EMPTY,
        "early",
    );
    let (_, manifests) = referrers(&reg, &format!("/v2/app/referrers/{}", sha256(&subject)));
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], referrer);
    // A manifest without a subject answers no OCI-Subject.
    let (plain, _) = push_image(&reg, "app", "plain", Flavor::Oci, "plain");
    let resp = put_manifest(&reg, "app", "plain", OCI_MANIFEST, &plain);
    assert_status(&resp, 201);
    assert!(opt_header(&resp, "oci-subject").is_none());
}

// --- bad input ----------------------------------------------------------------------------------

#[test]
fn invalid_repository_names_are_name_invalid_on_every_endpoint() {
    let reg = Registry::start();
    let d = sha256(b"x");
    let long = "a".repeat(256);
    let deep = format!("{}/{}", "a".repeat(127), "b".repeat(128));
    for name in [
        "Upper",
        "team/App",
        "a%2Fb",
        "a%2fb",
        long.as_str(),
        deep.as_str(),
        "a..b",
        "-a",
        "a-",
        "a_-b",
        "a___b",
        "a//b",
        "a%20b",
    ] {
        let requests = [
            (Method::GET, format!("/v2/{name}/tags/list")),
            (Method::GET, format!("/v2/{name}/manifests/latest")),
            (Method::HEAD, format!("/v2/{name}/manifests/{d}")),
            (Method::PUT, format!("/v2/{name}/manifests/latest")),
            (Method::DELETE, format!("/v2/{name}/manifests/latest")),
            (Method::GET, format!("/v2/{name}/blobs/{d}")),
            (Method::DELETE, format!("/v2/{name}/blobs/{d}")),
            (Method::POST, format!("/v2/{name}/blobs/uploads/")),
            (
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={d}"),
            ),
            (Method::GET, format!("/v2/{name}/referrers/{d}")),
        ];
        for (method, path) in requests {
            let resp = reg
                .request(method.clone(), &path)
                .body(b"x".to_vec())
                .send()
                .unwrap();
            assert_status(&resp, 400);
            if method != Method::HEAD {
                assert_eq!(error_code(resp), "NAME_INVALID", "{method} {path}");
            }
        }
    }
    // Dot segments, which an HTTP library would resolve away before sending.
    for path in [
        "/v2/a/../b/tags/list",
        "/v2/../v2/a/tags/list",
        "/v2/a/./b/tags/list",
        "/v2/a/%2E%2E/b/tags/list",
    ] {
        let (status, response) = raw_http(
            &reg,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 400, "{path}: {response}");
        assert!(response.contains("NAME_INVALID"), "{path}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("docker-distribution-api-version: registry/2.0"),
            "{response}"
        );
    }
    // The boundary: 255 characters is a name.
    let longest = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(longest.len(), 255);
    push_blob(&reg, &longest, b"fits");
    assert_eq!(catalog(&reg), [longest]);
}

#[test]
fn invalid_digests_are_digest_invalid_on_every_endpoint() {
    let reg = Registry::start();
    push_image(&reg, "app", "v1", Flavor::Oci, "digests");
    let hex = "a".repeat(64);
    let digests = [
        format!("md5:{}", "a".repeat(32)),
        format!("sha512:{}", "a".repeat(128)),
        "sha256:abc".to_string(),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("SHA256:{hex}"),
        "sha256:".to_string(),
        format!(":{hex}"),
    ];
    let location = start_upload(&reg, "app");
    for d in &digests {
        let mut requests = vec![
            (Method::GET, format!("/v2/app/blobs/{d}")),
            (Method::DELETE, format!("/v2/app/blobs/{d}")),
            (Method::GET, format!("/v2/app/manifests/{d}")),
            (Method::DELETE, format!("/v2/app/manifests/{d}")),
            (Method::PUT, format!("/v2/app/manifests/{d}")),
            (Method::GET, format!("/v2/app/referrers/{d}")),
            (Method::POST, format!("/v2/app/blobs/uploads/?digest={d}")),
        ];
        // Without ':' a blob path still needs a digest.
        if !d.contains(':') {
            requests.retain(|(_, p)| !p.contains("/manifests/"));
        }
        for (method, path) in requests {
            let mut request = reg.request(method.clone(), &path);
            if method == Method::PUT {
                request = request
                    .header(CONTENT_TYPE, OCI_MANIFEST)
                    .body(reg.get("/v2/app/manifests/v1").bytes().unwrap());
            }
            let resp = request.send().unwrap();
            assert_status(&resp, 400);
            assert_eq!(error_code(resp), "DIGEST_INVALID", "{method} {path}");
        }
        let resp = reg.head(&format!("/v2/app/blobs/{d}"));
        assert_status(&resp, 400);
        // Completing an upload with it.
        let resp = reg.put(&with_param(&location, "digest", d)).send().unwrap();
        assert_status(&resp, 400);
        assert_eq!(error_code(resp), "DIGEST_INVALID", "PUT upload {d}");
    }
    // Nothing of that made a manifest or a tag.
    assert_eq!(tags(&reg, "app"), ["v1"]);
}

// --- concurrency, configuration, durability -------------------------------------------------

#[test]
fn concurrent_pushes_of_one_blob_into_32_repositories_store_it_once() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    let data = std::sync::Arc::new(bytes("concurrent", 1024 * 1024 + 3));
    let digest = sha256(&data);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(32));
    let url = reg.url("");
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (data, barrier, url, digest) =
                (data.clone(), barrier.clone(), url.clone(), digest.clone());
            std::thread::spawn(move || {
                let client = Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                barrier.wait();
                let resp = client
                    .post(format!("{url}/v2/repo{i}/blobs/uploads/?digest={digest}"))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.to_vec())
                    .send()
                    .unwrap();
                (resp.status(), opt_header(&resp, "docker-content-digest"))
            })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        let (status, got) = handle.join().unwrap();
        assert_eq!(status, StatusCode::CREATED, "repo{i}");
        assert_eq!(got.as_deref(), Some(digest.as_str()), "repo{i}");
    }
    let files = files_under(&reg.data_dir().join("blobs"));
    assert_eq!(files, [reg.blob_file(&digest)], "one file for the digest");
    let resp = reg.get(&format!("/v2/repo0/blobs/{digest}"));
    assert_status(&resp, 200);
    assert!(resp.bytes().unwrap().as_ref() == data.as_slice());
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());
    for i in 0..32 {
        let resp = reg.head(&format!("/v2/repo{i}/blobs/{digest}"));
        assert_status(&resp, 200);
        assert_eq!(header(&resp, "content-length"), data.len().to_string());
    }
    assert_eq!(catalog(&reg).len(), 32);
}

#[test]
fn create_on_push_off_refuses_pushes_to_unknown_repositories_with_name_unknown() {
    let env = Env::new();
    let config = env.write_config("registry:\n  create_on_push: false\n");
    let reg = Registry::start_in(env, &["--config", config.to_str().unwrap()]);

    let resp = reg.post("/v2/newrepo/blobs/uploads/").send().unwrap();
    let message = expect_error(resp, 404, "NAME_UNKNOWN");
    assert!(
        message.contains("newrepo") && message.contains("create_on_push"),
        "the message should say what is missing and why: {message}"
    );

    let data = b"refused".to_vec();
    let digest = sha256(&data);
    let resp = reg
        .post(&format!("/v2/newrepo/blobs/uploads/?digest={digest}"))
        .body(data)
        .send()
        .unwrap();
    expect_error(resp, 404, "NAME_UNKNOWN");
    assert!(!reg.blob_file(&digest).exists());

    let manifest = image_manifest(Flavor::Oci, b"{}", &[]);
    let resp = put_manifest(&reg, "newrepo", "v1", OCI_MANIFEST, &manifest);
    expect_error(resp, 404, "NAME_UNKNOWN");
    let resp = reg
        .post(&format!("/v2/newrepo/blobs/uploads/?mount={digest}"))
        .send()
        .unwrap();
    expect_error(resp, 404, "NAME_UNKNOWN");

    assert!(catalog(&reg).is_empty());
    assert!(reg.upload_files().is_empty());
}

#[test]
fn everything_pushed_survives_a_restart() {
    if !blobs_on_disk() {
        return;
    }
    let mut reg = Registry::start();
    let (manifest, digest) = push_image(&reg, "team/app", "v1", Flavor::Oci, "durable");
    put_manifest_ok(&reg, "team/app", "v2", OCI_MANIFEST, &manifest);
    put_manifest_ok(&reg, "team/app", "gone", OCI_MANIFEST, &manifest);
    assert_status(&reg.delete("/v2/team/app/manifests/gone"), 202);
    let (docker, _) = push_image(&reg, "docker", "", Flavor::Docker, "durable-docker");
    let list = index_manifest(Flavor::Docker, &[(&docker, "amd64")]);
    put_manifest_ok(&reg, "docker", "multi", DOCKER_LIST, &list);
    let (_, referrer) = push_referrer(
        &reg,
        "team/app",
        &manifest,
        Some("application/vnd.example.sbom.v1"),
        OCI_EMPTY,
        "durable-sbom",
    );
    let blob = bytes("durable-blob", 200_000);
    let blob_digest = push_blob(&reg, "blobs/only", &blob);
    let deleted = push_blob(&reg, "blobs/only", b"deleted before the restart");
    assert_status(&reg.delete(&format!("/v2/blobs/only/blobs/{deleted}")), 202);
    let location = start_upload(&reg, "team/app");
    assert_status(&patch_chunk(&reg, &location, 0, b"half"), 202);
    let catalog_before = catalog(&reg);

    reg.restart();

    assert_eq!(catalog(&reg), catalog_before);
    assert_eq!(tags(&reg, "team/app"), ["v1", "v2"]);
    assert_eq!(tags(&reg, "docker"), ["multi"]);
    assert_manifest_served(&reg, "team/app", "v1", OCI_MANIFEST, &manifest);
    assert_manifest_served(&reg, "team/app", "v2", OCI_MANIFEST, &manifest);
    assert_manifest_served(&reg, "docker", "multi", DOCKER_LIST, &list);
    assert_manifest_served(&reg, "docker", &sha256(&docker), DOCKER_MANIFEST, &docker);
    let got = reg.get(&format!("/v2/blobs/only/blobs/{blob_digest}"));
    assert_status(&got, 200);
    assert_eq!(got.bytes().unwrap().as_ref(), blob.as_slice());
    assert_status(&reg.head(&format!("/v2/blobs/only/blobs/{deleted}")), 404);
    let (_, manifests) = referrers(&reg, &format!("/v2/team/app/referrers/{digest}"));
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], referrer);
    assert_eq!(
        manifests[0]["artifactType"],
        "application/vnd.example.sbom.v1"
    );
    // Upload sessions do not survive a restart (clients start them again).
    assert_eq!(error_code(reg.get(&location)), "BLOB_UPLOAD_UNKNOWN");
    assert!(reg.upload_files().is_empty());
}

#[test]
fn an_upload_session_belongs_to_the_repository_that_opened_it() {
    let reg = Registry::start();
    let location = start_upload(&reg, "owner");
    let elsewhere = location.replacen("/v2/owner/", "/v2/other/", 1);
    assert_ne!(location, elsewhere);
    let data = bytes("owned", 100);
    let digest = sha256(&data);
    expect_error(reg.get(&elsewhere), 404, "BLOB_UPLOAD_UNKNOWN");
    expect_error(
        reg.put(&with_param(&elsewhere, "digest", &digest))
            .body(data.clone())
            .send()
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    expect_error(reg.delete(&elsewhere), 404, "BLOB_UPLOAD_UNKNOWN");
    // The session is untouched and still completes where it was opened.
    let done = reg
        .put(&with_param(&location, "digest", &digest))
        .body(data)
        .send()
        .unwrap();
    assert_status(&done, 201);
    assert_status(&reg.head(&format!("/v2/owner/blobs/{digest}")), 200);
    assert_status(&reg.head(&format!("/v2/other/blobs/{digest}")), 404);
}

// --- encryption at rest ---------------------------------------------------------------------

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Blobs pushed with a unique marker in them (in a small blob, and many times over in a big
/// one that crosses segment and buffer boundaries) appear nowhere under the data dir, not
/// in the blob files, the upload files, nor the SQLite database and its journal, while the
/// registry serves them back intact, whole and by range.
#[test]
fn pushed_content_is_nowhere_in_the_data_dir_in_plain_text() {
    if !blobs_on_disk() {
        return;
    }
    let mut reg = Registry::start();
    let status = reg.env.info();
    assert_eq!(status["encryption"], "aes256-gcm", "{status}");
    let marker = format!(
        "ECRL-MARKER-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let small = format!("{{\"secret\":\"{marker}\"}}").into_bytes();
    // 9 MiB: the marker every 100,000 bytes, so copies straddle 64 KiB segments and 4 MiB
    // buffers; sent in two PATCHes and a PUT.
    let mut big = bytes("marker-layer", 9 << 20);
    for at in (0..big.len() - marker.len()).step_by(100_000) {
        big[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    }
    let small_digest = push_blob(&reg, "secret/app", &small);
    let location = start_upload(&reg, "secret/app");
    let resp = patch_chunk(&reg, &location, 0, &big[..3 << 20]);
    assert_status(&resp, 202);
    let location = header(&resp, "location");
    let resp = patch_chunk(&reg, &location, 3 << 20, &big[3 << 20..(8 << 20) + 7]);
    assert_status(&resp, 202);
    let location = header(&resp, "location");
    let big_digest = sha256(&big);
    let resp = reg
        .put(&with_param(&location, "digest", &big_digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(big[(8 << 20) + 7..].to_vec())
        .send()
        .unwrap();
    assert_status(&resp, 201);
    let manifest = image_manifest(Flavor::Oci, &small, &[&big]);
    put_manifest_ok(&reg, "secret/app", "v1", OCI_MANIFEST, &manifest);
    // An upload left open, with the marker in it.
    let open = start_upload(&reg, "secret/app");
    assert_status(&patch_chunk(&reg, &open, 0, &big[..SMALL_UPLOAD + 1]), 202);

    let check = |reg: &Registry, when: &str| {
        let files = files_under(&reg.data_dir());
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("blobs/sha256")),
            "no blob files under {}",
            reg.data_dir().display()
        );
        // (With the metadata on PostgreSQL, there is no database file to look at.)
        if std::env::var(common::pg::ENV_BACKEND).as_deref() != Ok("postgres") {
            assert!(
                files.iter().any(|f| f.to_string_lossy().ends_with(".db")),
                "no database under {}: {files:?}",
                reg.data_dir().display()
            );
        }
        for file in files {
            let content = std::fs::read(&file).unwrap();
            assert!(
                !contains(&content, marker.as_bytes()),
                "{when}: the marker is in {}",
                file.display()
            );
        }
    };
    check(&reg, "while running");

    let pull = |reg: &Registry| {
        let resp = reg.get(&format!("/v2/secret/app/blobs/{big_digest}"));
        assert_status(&resp, 200);
        assert!(resp.bytes().unwrap().as_ref() == big.as_slice());
        let resp = reg.get(&format!("/v2/secret/app/blobs/{small_digest}"));
        assert_status(&resp, 200);
        assert_eq!(resp.bytes().unwrap().as_ref(), small.as_slice());
        // A range across the first segment boundary (65,520 bytes of content a segment).
        let resp = reg
            .request(Method::GET, &format!("/v2/secret/app/blobs/{big_digest}"))
            .header(RANGE, "bytes=65000-66000")
            .send()
            .unwrap();
        assert_status(&resp, 206);
        assert!(resp.bytes().unwrap().as_ref() == &big[65_000..66_001]);
        let resp = reg
            .request(Method::GET, "/v2/secret/app/manifests/v1")
            .header(ACCEPT, OCI_MANIFEST)
            .send()
            .unwrap();
        assert_status(&resp, 200);
        assert_eq!(resp.bytes().unwrap().as_ref(), manifest.as_slice());
    };
    pull(&reg);

    // Stopped (the database checkpointed) and started again: still nowhere, still served.
    reg.stop();
    check(&reg, "after a stop");
    reg.spawn();
    pull(&reg);
}

/// Runs a command that should exit soon (killed after 20 s); its exit code and stderr.
fn exit_of(command: &mut std::process::Command) -> (Option<i32>, String) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The size up to which an upload stays in memory (storage's `SMALL`): one byte more goes
/// to a file.
const SMALL_UPLOAD: usize = 64 * 1024;

#[test]
fn a_data_dir_made_without_encryption_stays_plain_and_refuses_it() {
    if !blobs_on_disk() {
        return;
    }
    let env = Env::new();
    let mut reg = Registry::start_in(env, &["--encryption", "none"]);
    assert_eq!(reg.env.info()["encryption"], "none");
    assert!(reg.env.info().get("keyStore").is_none());
    let data = bytes("plain", 100_000);
    let digest = push_blob(&reg, "plain/app", &data);
    assert_eq!(std::fs::read(reg.blob_file(&digest)).unwrap(), data);
    reg.stop();

    // Asking for encryption on it now is refused, and says why.
    let mut by_flag = reg.env.ecrld_command(&["--encryption", "aes256-gcm"]);
    let (code, err) = exit_of(&mut by_flag);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("was created with encryption none") && err.contains("aes256-gcm"),
        "{err}"
    );
    let mut by_env = reg.env.ecrld_command(&[]);
    by_env.env("ECRL_ENCRYPTION", "aes256-gcm");
    let (code, err) = exit_of(&mut by_env);
    assert_eq!(code, Some(1), "{err}");

    // Without a mode asked for, it runs as it is.
    reg.args.clear();
    reg.spawn();
    assert_eq!(reg.env.info()["encryption"], "none");
    let resp = reg.get(&format!("/v2/plain/app/blobs/{digest}"));
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), data.as_slice());
}

/// A full disk: the upload is refused with 507 and a message saying so, nothing stored before
/// is lost, the refused upload's bytes are gone, and a push that fits works. The data dir is a
/// 24 MiB tmpfs, which needs root (CI runs as root); elsewhere the test says it is skipped.
#[test]
fn a_full_disk_is_a_clear_507_and_loses_nothing() {
    if !blobs_on_disk() {
        return;
    }
    let env = Env::new();
    let data = env.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs for the data dir needs root");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());
    let reg = Registry::start_in(env, &["--encryption", "none"]);
    let kept = b"stored before the disk filled".to_vec();
    let kept_digest = push_blob(&reg, "t/full", &kept);

    // 32 MiB into what is left of 24 MiB, 1 MiB a PATCH (so each request's body is read
    // whole before it is answered): a PATCH, or the final PUT, is refused with 507.
    let mut location = start_upload(&reg, "t/full");
    let chunk = vec![7u8; 1 << 20];
    let mut refused = None;
    for i in 0..32usize {
        let from = i << 20;
        let resp = reg
            .patch(&location)
            .header(
                CONTENT_RANGE,
                format!("{}-{}", from, from + chunk.len() - 1),
            )
            .body(chunk.clone())
            .send()
            .unwrap();
        if resp.status() != StatusCode::ACCEPTED {
            refused = Some(resp);
            break;
        }
        location = header(&resp, "location");
    }
    let resp = match refused {
        Some(resp) => resp,
        None => {
            let sep = if location.contains('?') { '&' } else { '?' };
            let digest = sha256(&vec![7u8; 32 << 20]);
            reg.put(&format!("{location}{sep}digest={digest}"))
                .send()
                .unwrap()
        }
    };
    assert_status(&resp, 507);
    let body = resp.text().unwrap();
    assert!(body.contains("disk is full"), "{body}");

    // What was stored before is intact; the refused upload left no file; a push that fits
    // (space freed by the refused upload) works.
    let resp = reg.get(&format!("/v2/t/full/blobs/{kept_digest}"));
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().to_vec(), kept);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reg.upload_files().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());

    // One request bigger than the disk: the same 507 once its body has arrived, not a
    // connection reset midway (the client is still sending when the disk fills).
    let location = start_upload(&reg, "t/full");
    let sep = if location.contains('?') { '&' } else { '?' };
    let big = vec![9u8; 64 << 20];
    let resp = reg
        .put(&format!("{location}{sep}digest={}", sha256(&big)))
        .body(big)
        .send()
        .unwrap();
    assert_status(&resp, 507);
    let body = resp.text().unwrap();
    assert!(body.contains("disk is full"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reg.upload_files().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reg.upload_files().is_empty(), "{:?}", reg.upload_files());
    push_blob(&reg, "t/full", &vec![1u8; 8 << 20]);
}

/// The repository's size as `ecrl repo describe` reports it.
fn repo_size(reg: &Registry, repo: &str) -> u64 {
    let out = reg
        .env
        .ecrl_ok(&["repo", "describe", repo, "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["repository"]["sizeInBytes"].as_u64().unwrap()
}

/// An image of one config and the given layers, pushed under `tag`: (manifest, config).
fn push_layers(reg: &Registry, repo: &str, tag: &str, layers: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
    let config =
        serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "tag": tag})).unwrap();
    push_blob(reg, repo, &config);
    for layer in layers {
        push_blob(reg, repo, layer);
    }
    let manifest = image_manifest(Flavor::Oci, &config, layers);
    put_manifest_ok(reg, repo, tag, OCI_MANIFEST, &manifest);
    (manifest, config)
}

fn wait_gone(reg: &Registry, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reg.blob_file(digest).exists() {
        assert!(Instant::now() < deadline, "{digest} was never removed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deleting an image frees what only it used: the repository stops linking those blobs at
/// once (its size says so), their content goes after `registry.deleted_blob_grace`, and what
/// another image shares stays. Through the registry API and through `ecrl image delete`.
#[test]
fn deleting_an_image_frees_the_blobs_only_it_used() {
    if !blobs_on_disk() {
        return;
    }
    let env = Env::new();
    let config = env.write_config("registry:\n  deleted_blob_grace: 1s\n");
    let reg = Registry::start_in(env, &["--config", config.to_str().unwrap()]);
    let shared = bytes("shared", 8192);
    let (own_a, own_b) = (bytes("own a", 4096), bytes("own b", 2048));
    let (manifest_a, config_a) = push_layers(&reg, "app", "a", &[&shared, &own_a]);
    let (manifest_b, config_b) = push_layers(&reg, "app", "b", &[&shared, &own_b]);
    let before = repo_size(&reg, "app");

    let resp = reg.delete(&format!("/v2/app/manifests/{}", sha256(&manifest_a)));
    assert_status(&resp, 202);
    let freed = (own_a.len() + config_a.len() + manifest_a.len()) as u64;
    assert_eq!(repo_size(&reg, "app"), before - freed);
    for gone in [&own_a, &config_a] {
        assert_status(&reg.head(&format!("/v2/app/blobs/{}", sha256(gone))), 404);
        wait_gone(&reg, &sha256(gone));
    }
    for kept in [&shared, &own_b, &config_b] {
        assert_status(&reg.head(&format!("/v2/app/blobs/{}", sha256(kept))), 200);
        assert!(reg.blob_file(&sha256(kept)).exists());
    }
    assert_status(&reg.get("/v2/app/manifests/b"), 200);
    // Its content gone, the old manifest cannot come back without its blobs.
    let resp = put_manifest(&reg, "app", "a", OCI_MANIFEST, &manifest_a);
    expect_error(resp, 400, "MANIFEST_BLOB_UNKNOWN");

    // The last image goes through the CLI: nothing is left but an empty repository.
    reg.env.ecrl_ok(&["image", "delete", "app:b"]);
    assert_eq!(repo_size(&reg, "app"), 0);
    for gone in [&shared, &own_b, &config_b, &manifest_b] {
        wait_gone(&reg, &sha256(gone));
    }
}

/// A push that found a layer in the repository (HEAD) before the image holding it was
/// deleted still completes: its manifest takes the freed layer back while the content
/// remains.
#[test]
fn a_push_that_found_a_layer_before_its_image_was_deleted_completes() {
    let reg = Registry::start();
    let layer = bytes("reused layer", 16384);
    let (manifest_a, _) = push_layers(&reg, "app", "a", &[&layer]);
    // The second push asks, and hears the layer is there...
    assert_status(&reg.head(&format!("/v2/app/blobs/{}", sha256(&layer))), 200);
    // ...the first image is deleted meanwhile...
    let resp = reg.delete(&format!("/v2/app/manifests/{}", sha256(&manifest_a)));
    assert_status(&resp, 202);
    assert_status(&reg.head(&format!("/v2/app/blobs/{}", sha256(&layer))), 404);
    // ...and the second push sends its config and manifest.
    let config = br#"{"architecture":"amd64","os":"linux","second":true}"#.to_vec();
    push_blob(&reg, "app", &config);
    let manifest = image_manifest(Flavor::Oci, &config, &[&layer]);
    put_manifest_ok(&reg, "app", "b", OCI_MANIFEST, &manifest);
    let resp = reg.get(&format!("/v2/app/blobs/{}", sha256(&layer)));
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), &layer[..]);
    assert_eq!(
        repo_size(&reg, "app"),
        (layer.len() + config.len() + manifest.len()) as u64
    );
}

/// A daemon stopped before a deleted image's blobs were removed removes them at its next
/// start, also when they are most of the store (where unexplained blobs are left alone).
#[test]
fn blobs_a_delete_freed_go_at_the_next_start() {
    if !blobs_on_disk() {
        return;
    }
    let mut reg = Registry::start();
    let layer = bytes("soon gone", 8192);
    let (manifest, config) = push_layers(&reg, "app", "a", &[&layer]);
    let resp = reg.delete(&format!("/v2/app/manifests/{}", sha256(&manifest)));
    assert_status(&resp, 202);
    assert!(reg.blob_file(&sha256(&layer)).exists(), "within the grace");
    reg.restart();
    for gone in [&layer, &config, &manifest] {
        assert!(!reg.blob_file(&sha256(gone)).exists());
    }
    assert_eq!(repo_size(&reg, "app"), 0);
}

/// Clients that delete an image's blobs after its manifest (the OCI conformance suite's
/// teardown does) are answered 202 for blobs the manifest's delete freed, and those go at
/// once; a second delete is 404.
#[test]
fn deleting_the_blobs_of_a_deleted_image_is_accepted() {
    let reg = Registry::start();
    let layer = bytes("layer to delete", 4096);
    let (manifest, config) = push_layers(&reg, "app", "a", &[&layer]);
    let resp = reg.delete(&format!("/v2/app/manifests/{}", sha256(&manifest)));
    assert_status(&resp, 202);
    for blob in [&layer, &config] {
        let path = format!("/v2/app/blobs/{}", sha256(blob));
        assert_status(&reg.delete(&path), 202);
        assert!(!reg.blob_file(&sha256(blob)).exists());
        expect_error(reg.delete(&path), 404, "BLOB_UNKNOWN");
    }
}

/// A blob an image uses cannot be deleted out from under it (every pull of the image would
/// fail): 405 naming the image; the image stays whole. A blob no image uses goes (202).
#[test]
fn a_blob_an_image_uses_is_not_deleted_under_it() {
    let reg = Registry::start();
    let layer = bytes("in use", 4096);
    let (manifest, _) = push_layers(&reg, "app", "a", &[&layer]);
    let path = format!("/v2/app/blobs/{}", sha256(&layer));
    let message = expect_error(reg.delete(&path), 405, "UNSUPPORTED");
    assert!(message.contains(&sha256(&manifest)), "{message}");
    let resp = reg.get(&path);
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), &layer[..]);
    assert_status(&reg.get("/v2/app/manifests/a"), 200);

    let loose = bytes("loose", 1024);
    push_blob(&reg, "app", &loose);
    assert_status(
        &reg.delete(&format!("/v2/app/blobs/{}", sha256(&loose))),
        202,
    );
    assert!(!reg.blob_file(&sha256(&loose)).exists());
}

/// A manifest a multi-platform index uses cannot be deleted under it (405 naming the index,
/// as `ecrl image delete` refuses with ImageReferencedByManifestList); once the index is
/// gone, it can.
#[test]
fn a_manifest_an_index_uses_is_not_deleted_under_it() {
    let reg = Registry::start();
    let (amd, _) = push_image(&reg, "app", "amd", Flavor::Oci, "amd");
    let (arm, _) = push_image(&reg, "app", "arm", Flavor::Oci, "arm");
    let index = index_manifest(Flavor::Oci, &[(&amd, "amd64"), (&arm, "arm64")]);
    put_manifest_ok(&reg, "app", "multi", OCI_INDEX, &index);
    let child = format!("/v2/app/manifests/{}", sha256(&amd));
    let message = expect_error(reg.delete(&child), 405, "UNSUPPORTED");
    assert!(message.contains(&sha256(&index)), "{message}");
    assert_status(&reg.get(&child), 200);
    assert_status(&reg.get("/v2/app/manifests/multi"), 200);

    assert_status(
        &reg.delete(&format!("/v2/app/manifests/{}", sha256(&index))),
        202,
    );
    assert_status(&reg.delete(&child), 202);
    assert_status(&reg.get("/v2/app/manifests/arm"), 200);
}

/// `ecrl gc`: links no manifest references (an upload never followed by a manifest) and blob
/// files nothing holds go once older than the grace; a dry run counts the same and removes
/// nothing; what images reference, and anything younger than the grace, stays.
#[test]
fn gc_removes_what_nothing_holds_and_keeps_every_referenced_byte() {
    if !blobs_on_disk() {
        return;
    }
    let env = Env::new();
    // Uploads live a second here: a link waiting that long for its manifest is garbage.
    let config = env.write_config("registry:\n  deleted_blob_grace: 1s\n  upload_expiry: 1s\n");
    let reg = Registry::start_in(env, &["--config", config.to_str().unwrap()]);
    let layer = bytes("kept layer", 20_000);
    let (manifest, config_blob) = push_layers(&reg, "app", "1", &[&layer]);
    // Uploaded, never referenced by a manifest.
    let stray = bytes("stray upload", 9_000);
    push_blob(&reg, "app", &stray);
    // A file nothing holds, as a kill between a commit and its link leaves, from an hour ago;
    // and one written just now (a commit whose link is on its way).
    let old_orphan = reg.blob_file(&sha256(b"old orphan"));
    let young_orphan = reg.blob_file(&sha256(b"young orphan"));
    for f in [&old_orphan, &young_orphan] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"whatever was committed").unwrap();
    }
    let out = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&old_orphan)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1_200));
    // The young one stays younger than the grace however long the collections below take
    // on a busy machine: it is dated a minute ahead (aged by hand further down).
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let out = std::process::Command::new("touch")
        .args(["-d", &format!("@{ahead}")])
        .arg(&young_orphan)
        .output()
        .unwrap();
    assert!(out.status.success());

    let gc = |args: &[&str]| -> Value {
        let mut all = vec!["gc", "--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&reg.env.ecrl_ok(&all)).unwrap()
    };
    let dry = gc(&["--dry-run"]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["linksRemoved"], 1, "{dry}");
    assert_eq!(dry["linkBytes"], stray.len() as u64, "{dry}");
    assert_eq!(dry["blobsRemoved"], 1, "{dry}");
    assert_eq!(dry["blobsKeptRecent"], 1, "{dry}");
    assert!(old_orphan.exists());
    assert_status(&reg.head(&format!("/v2/app/blobs/{}", sha256(&stray))), 200);

    let done = gc(&[]);
    assert_eq!(
        (&done["linksRemoved"], &done["blobsRemoved"]),
        (&json!(1), &json!(1)),
        "{done}"
    );
    assert!(!old_orphan.exists());
    assert!(young_orphan.exists());
    assert_status(&reg.head(&format!("/v2/app/blobs/{}", sha256(&stray))), 404);
    // The stray content goes after the grace, as a deleted image's does.
    wait_gone(&reg, &sha256(&stray));
    // Everything the image references is there, byte for byte.
    assert_status(&reg.get("/v2/app/manifests/1"), 200);
    for kept in [&layer, &config_blob] {
        let resp = reg.get(&format!("/v2/app/blobs/{}", sha256(kept)));
        assert_status(&resp, 200);
        assert_eq!(resp.bytes().unwrap().as_ref(), &kept[..]);
    }
    assert_eq!(
        reg.get("/v2/app/manifests/1").bytes().unwrap().as_ref(),
        &manifest[..]
    );
    // Past its grace the young orphan goes too; then nothing is left to collect, and the
    // status shows the last collection.
    let out = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&young_orphan)
        .output()
        .unwrap();
    assert!(out.status.success());
    let again = gc(&[]);
    assert_eq!(
        (&again["linksRemoved"], &again["blobsRemoved"]),
        (&json!(0), &json!(1)),
        "{again}"
    );
    assert!(!young_orphan.exists());
    let again = gc(&[]);
    assert_eq!(
        (&again["linksRemoved"], &again["blobsRemoved"]),
        (&json!(0), &json!(0)),
        "{again}"
    );
    let status = reg.env.ecrl_ok(&["daemon", "status"]);
    assert!(status.contains("last gc"), "{status}");
    assert!(status.contains("removed 0 blobs"), "{status}");

    // Old files nothing holds that are most of the store: this metadata is not theirs (a
    // lost metadata.db); they are left, and the answer says so.
    let strangers: Vec<PathBuf> = (0..4)
        .map(|i| reg.blob_file(&sha256(format!("stranger {i}").as_bytes())))
        .collect();
    for f in &strangers {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"someone else's blob").unwrap();
        let out = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(f)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let left = gc(&[]);
    assert_eq!(left["blobsLeftUnexplained"], 4, "{left}");
    assert_eq!(left["blobsRemoved"], 0, "{left}");
    assert!(strangers.iter().all(|f| f.exists()));
}

/// Collections running back to back while 16 clients push, pull and delete: every push
/// completes, every pull during the load (of any client's image) is byte-identical, and every
/// image not deleted pulls whole afterwards.
/// A blob pushed again into a repository that linked it long ago counts as just pushed: the
/// collection that runs before the manifest comes does not unlink it, and the manifest is
/// taken even once the grace of anything unlinked then would have passed.
#[test]
fn a_blob_pushed_again_is_not_collected_before_its_manifest() {
    let env = Env::new();
    let config = env.write_config("registry:\n  deleted_blob_grace: 1s\n  upload_expiry: 2s\n");
    let reg = Registry::start_in(env, &["--config", config.to_str().unwrap()]);
    let layer = bytes("pushed twice", 20_000);
    let config_blob = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux"})).unwrap();
    push_blob(&reg, "team/again", &layer);
    push_blob(&reg, "team/again", &config_blob);
    // Older than upload_expiry and the grace, with no manifest: garbage by now.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    push_blob(&reg, "team/again", &layer);
    push_blob(&reg, "team/again", &config_blob);
    reg.env.ecrl_ok(&["gc", "-q"]);
    // Past the grace of whatever that collection unlinked.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let manifest = image_manifest(Flavor::Oci, &config_blob, &[&layer]);
    put_manifest_ok(&reg, "team/again", "1", OCI_MANIFEST, &manifest);
    let resp = reg.get(&format!("/v2/team/again/blobs/{}", sha256(&layer)));
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), &layer[..]);
}

#[test]
fn gc_while_clients_push_and_pull_loses_nothing() {
    let env = Env::new();
    // A link waits `upload_expiry` for its manifest: on a loaded machine one image's push
    // (three blobs, then the manifest) takes seconds, so the links' wait is kept well above
    // that; the deleted images' content goes after the short grace.
    let config = env.write_config("registry:\n  deleted_blob_grace: 2s\n  upload_expiry: 120s\n");
    let reg = std::sync::Arc::new(Registry::start_in(
        env,
        &["--config", config.to_str().unwrap()],
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let reg = reg.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reg.env.ecrl_ok(&["gc", "-q"]);
                runs += 1;
            }
            runs
        })
    };
    type Pushed = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);
    // Images pushed so far, for any client to pull while the load goes on.
    let board: std::sync::Arc<std::sync::Mutex<Vec<Pushed>>> = Default::default();
    let shared = bytes("shared by all", 30_000);
    fn pull_whole(
        reg: &Registry,
        shared: &[u8],
        image: &(String, String, Vec<u8>, Vec<u8>, Vec<u8>),
    ) {
        let (repo, tag, manifest, config, own) = image;
        let resp = reg.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_status(&resp, 200);
        assert_eq!(resp.bytes().unwrap().as_ref(), &manifest[..]);
        for blob in [shared, config, own] {
            let resp = reg.get(&format!("/v2/{repo}/blobs/{}", sha256(blob)));
            assert_status(&resp, 200);
            assert_eq!(resp.bytes().unwrap().as_ref(), blob, "{repo}:{tag}");
        }
    }
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (reg, board, shared) = (reg.clone(), board.clone(), shared.clone());
            std::thread::spawn(move || {
                let mut pulls = 0;
                for i in 0..5 {
                    // Each image shares one layer with every other client's, and has its own.
                    let own = bytes(&format!("client {c} image {i}"), 10_000 + i * 100);
                    let (repo, tag) = (format!("load/c{c}"), format!("{i}"));
                    let (manifest, config) = push_layers(&reg, &repo, &tag, &[&shared, &own]);
                    // The first image of each client is deleted again: its own layer and
                    // config become garbage while the others' stay.
                    if i == 0 {
                        let digest = sha256(&manifest);
                        assert_status(&reg.delete(&format!("/v2/{repo}/manifests/{digest}")), 202);
                        continue;
                    }
                    board
                        .lock()
                        .unwrap()
                        .push((repo, tag, manifest, config, own));
                    // Some other client's image, pulled whole.
                    let other = {
                        let board = board.lock().unwrap();
                        board[(c * 7 + i * 13) % board.len()].clone()
                    };
                    pull_whole(&reg, &shared, &other);
                    pulls += 1;
                }
                pulls
            })
        })
        .collect();
    let pulls: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(pulls, 16 * 4);
    // Past the grace, and one more collection after that.
    std::thread::sleep(Duration::from_millis(2_200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
    reg.env.ecrl_ok(&["gc", "-q"]);
    let pushed = board.lock().unwrap().clone();
    assert_eq!(pushed.len(), 16 * 4);
    for image in &pushed {
        pull_whole(&reg, &shared, image);
    }
    // The deleted images' own layers are gone from the store.
    for c in 0..16 {
        wait_gone(
            &reg,
            &sha256(&bytes(&format!("client {c} image 0"), 10_000)),
        );
    }
}

/// `ecrl fsck`: a byte flipped in one blob and another blob's file removed are found, each
/// with the images it breaks, and nothing is changed; `--repair` moves the corrupt blob
/// aside, drops the links, and marks the images, whose pulls then say so at once; pushing
/// an image again brings it back.
#[test]
fn fsck_finds_a_corrupt_and_a_missing_blob_and_repair_marks_what_they_break() {
    if !blobs_on_disk() {
        return;
    }
    let reg = Registry::start();
    let (l1, l2) = (bytes("layer one", 50_000), bytes("layer two", 40_000));
    let (m1, _) = push_layers(&reg, "app", "1", &[&l1]);
    let (m2, _) = push_layers(&reg, "app", "2", &[&l2]);
    let (m3, _) = push_layers(&reg, "other", "1", &[&l1]);
    let fsck = |args: &[&str]| {
        let mut all = vec!["fsck", "--output", "json"];
        all.extend_from_slice(args);
        let out = reg.env.ecrl(&all);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, clean) = fsck(&[]);
    assert_eq!(code, Some(0), "{clean}");
    assert_eq!(clean["problems"], json!([]));
    // Two layers, two configs (other:1 is app:1 again), two manifests.
    assert_eq!(clean["blobsChecked"], 6, "{clean}");

    // One byte of l1's file flipped; l2's file gone.
    let f1 = reg.blob_file(&sha256(&l1));
    let mut content = std::fs::read(&f1).unwrap();
    let middle = content.len() / 2;
    content[middle] ^= 0x40;
    std::fs::write(&f1, &content).unwrap();
    std::fs::remove_file(reg.blob_file(&sha256(&l2))).unwrap();

    let (code, found) = fsck(&[]);
    assert_eq!(code, Some(1), "{found}");
    let problems = found["problems"].as_array().unwrap();
    let of = |digest: &str| {
        problems
            .iter()
            .find(|p| p["digest"] == digest)
            .unwrap_or_else(|| panic!("no problem for {digest}: {found}"))
    };
    let corrupt = of(&sha256(&l1));
    assert_eq!(corrupt["kind"], "CORRUPT_BLOB");
    let images: Vec<&str> = corrupt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            format!("app@{} (1)", sha256(&m1)),
            format!("other@{} (1)", sha256(&m3))
        ]
    );
    let missing = of(&sha256(&l2));
    assert_eq!(missing["kind"], "MISSING_BLOB");
    assert_eq!(
        missing["images"],
        json!([format!("app@{} (2)", sha256(&m2))])
    );
    assert!(corrupt.get("repaired").is_none());
    // A check changes nothing.
    assert_eq!(std::fs::read(&f1).unwrap(), content);
    assert_status(&reg.get("/v2/app/manifests/1"), 200);

    let (code, repaired) = fsck(&["--repair"]);
    assert_eq!(code, Some(0), "{repaired}");
    assert!(!f1.exists());
    let quarantined = reg
        .data_dir()
        .join("quarantine")
        .join(format!("sha256-{}", &sha256(&l1)["sha256:".len()..]));
    assert_eq!(std::fs::read(&quarantined).unwrap(), content);
    for (repo, tag, lost) in [("app", "1", &l1), ("other", "1", &l1), ("app", "2", &l2)] {
        let resp = reg.get(&format!("/v2/{repo}/manifests/{tag}"));
        let body = expect_error(resp, 404, "MANIFEST_UNKNOWN");
        assert!(
            body.contains("lost content") && body.contains(&sha256(lost)),
            "{body}"
        );
    }
    // Known now: a check finds nothing new.
    let (code, after) = fsck(&[]);
    assert_eq!(code, Some(0), "{after}");

    // Pushed again, app:1 is whole.
    push_layers(&reg, "app", "1", &[&l1]);
    let resp = reg.get("/v2/app/manifests/1");
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), &m1[..]);
    let resp = reg.get(&format!("/v2/app/blobs/{}", sha256(&l1)));
    assert_eq!(resp.bytes().unwrap().as_ref(), &l1[..]);
}
