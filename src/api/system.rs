//! `/v1/system/*`: what the daemon is and how to stop it.

use super::{Empty, Endpoint, Method};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `GET /v1/system/info`.
pub struct Info;

impl Endpoint for Info {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/system/info";
    type Request = Empty;
    type Response = SystemInfo;
}

/// Where blob content is kept, and whether that answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageInfo {
    /// `filesystem` or `s3`.
    pub backend: crate::config::StorageBackend,
    /// The data dir, or `s3://bucket/prefix at endpoint`.
    pub location: String,
    /// Why the backend does not answer; absent when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `storage.read_cache` at work (all of it page cache, which the kernel may reclaim).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadCacheInfo {
    /// The most blob bytes it keeps.
    pub budget_bytes: u64,
    /// Bytes of blobs it filled and holds.
    pub held_bytes: u64,
    /// How many blobs those are.
    pub blobs: u64,
    /// Memory prepared for the next fills (the reserve).
    pub prepared_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    /// The daemon's version (the crate version).
    pub version: String,
    /// The control API version it speaks.
    pub api_version: u32,
    pub pid: u32,
    /// RFC 3339 time the daemon started.
    pub started_at: String,
    pub uptime_seconds: u64,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// The plain-HTTP registry's listening address (`host:port`), as bound (port 0
    /// resolved); absent when plain HTTP is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_address: Option<String>,
    /// The HTTPS registry's listening address, when HTTPS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_tls_address: Option<String>,
    /// Where Prometheus metrics are served (`host:port`, as bound), when they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// ecrld's CA certificate (PEM), which clients must trust, when HTTPS is on with a
    /// certificate from ecrld's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_path: Option<PathBuf>,
    /// The user's certificate file, when HTTPS is on with the user's own certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_path: Option<PathBuf>,
    /// The DNS names and IP addresses the generated HTTPS certificate is valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_names: Vec<String>,
    /// Bytes of blob content in the store (each blob counted once).
    pub bytes_stored: u64,
    /// What the registry allows without credentials (`none`, `pull`, `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_anonymous: Option<crate::config::Anonymous>,
    /// How blobs are stored at rest (`aes256-gcm` or `none`); absent from daemons that
    /// predate encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::config::Encryption>,
    /// Where the master key of an encrypted data dir is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_store: Option<KeyStore>,
    /// The key file, when the key is kept in one (`keyStore: file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Where metadata is kept: `sqlite` or `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_backend: Option<String>,
    /// The metadata database: the SQLite file, or PostgreSQL's `host:port/database` (never
    /// the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_location: Option<String>,
    /// Why the metadata database did not answer, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_error: Option<String>,
    /// Where blobs are kept (absent from daemons older than the S3 backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageInfo>,
    /// The read cache: which blobs ecrld keeps in the page cache for pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_cache: Option<ReadCacheInfo>,
    /// The last garbage collection since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gc: Option<GcReport>,
    /// The daemon's log file when it was started by `ecrl daemon start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// The container engine tasks run on, when it answers: e.g. `Docker Engine 20.10.24` or
    /// `Podman Engine 4.3.1`, with the Engine API version in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Why the engine did not answer (tasks cannot run until it does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    /// How task-level cpu and memory hold a task's containers: together, in a cgroup for
    /// each task, or (with the reason) only each container by its own limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_limits: Option<String>,
}

impl SystemInfo {
    /// Its times as ecrl prints times ([`crate::timestamp`]).
    pub fn with_printed_times(mut self) -> Self {
        crate::timestamp::reformat_in_place(&mut self.started_at);
        self
    }
}

/// Where a data dir's master key lives.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyStore {
    /// The OS keyring (Secret Service on Linux).
    Keyring,
    /// A 0600 file in the config dir (no keyring on this machine).
    File,
}

impl KeyStore {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStore::Keyring => "keyring",
            KeyStore::File => "file",
        }
    }
}

/// `POST /v1/system/shutdown`: stop accepting, finish in-flight requests, exit.
pub struct Shutdown;

impl Endpoint for Shutdown {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/system/shutdown";
    type Request = Empty;
    type Response = ShutdownResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownResponse {
    /// The pid of the daemon that is stopping; the caller may wait for it to be gone.
    pub pid: u32,
}

/// `POST /v1/system/gc`: a garbage collection now (`ecrl gc`).
pub struct CollectGarbage;

impl Endpoint for CollectGarbage {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/system/gc";
    type Request = GcRequest;
    type Response = GcReport;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    /// Count what would go; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a garbage collection freed (or, dry, would free).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: u64,
    /// Blob files no repository holds, older than the grace: removed.
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    /// Blob links no manifest references, older than `registry.upload_expiry` (and the
    /// grace): unlinked (their content goes after the grace unless a push takes them back).
    pub links_removed: u64,
    pub link_bytes: u64,
    /// Blob files no repository holds but younger than the grace, kept for a push in progress.
    pub blobs_kept_recent: u64,
    /// Blob files held.
    pub blobs_held: u64,
    /// Blob files nothing holds, left because they are most of the store (the metadata does
    /// not look like theirs: see the daemon's log).
    #[serde(default)]
    pub blobs_left_unexplained: u64,
}

/// `POST /v1/system/fsck`: every blob re-read and checked, and the metadata against the disk
/// (`ecrl fsck`).
pub struct CheckStore;

impl Endpoint for CheckStore {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/system/fsck";
    type Request = FsckRequest;
    type Response = FsckReport;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsckRequest {
    /// Quarantine corrupt blobs, drop links to lost ones, mark the images that lost content.
    #[serde(default)]
    pub repair: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FsckReport {
    pub repair: bool,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub duration_ms: u64,
    pub problems: Vec<FsckProblem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FsckProblem {
    /// `CORRUPT_BLOB` (its content is not its digest, or does not decrypt), `MISSING_BLOB` (a
    /// repository links it, no file holds it), `MISSING_REFERENCE` (a manifest references
    /// what its repository does not hold).
    pub kind: String,
    pub digest: String,
    pub detail: String,
    /// The images it breaks: `repo@digest (tags)`.
    pub images: Vec<String>,
    /// What `--repair` did about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

/// `POST /v1/system/gc/stream?dryRun=...`: a collection, with its progress as it goes, as
/// [`StoreEvent`] lines ending with `done` (the [`GcReport`]) or `error`.
pub struct CollectGarbageStream;

impl super::transfer::StreamEndpoint for CollectGarbageStream {
    const PATH: &'static str = "/v1/system/gc/stream";
    type Request = GcRequest;
}

/// `POST /v1/system/fsck/stream?repair=...`: `ecrl fsck` with its progress, as
/// [`StoreEvent`] lines ending with `done` (the [`FsckReport`]) or `error`. The check stops
/// when the client goes away.
pub struct CheckStoreStream;

impl super::transfer::StreamEndpoint for CheckStoreStream {
    const PATH: &'static str = "/v1/system/fsck/stream";
    type Request = FsckRequest;
}

/// One line of a collection's or a check's event stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum StoreEvent<R> {
    Progress(StoreProgress),
    Done(R),
    Error(super::ApiError),
}

/// How far a collection or a check has got (sent a few times a second, when it moved).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreProgress {
    /// What it is doing: `unlinking`, `walking the store`, `removing blobs`, `checking
    /// blobs`, `checking repositories`, `repairing`.
    pub step: String,
    /// Items of the step done, of `total` (0 while unknown).
    pub done: u64,
    pub total: u64,
    /// Bytes of the step done (blobs read, or removed).
    pub bytes: u64,
}

/// `POST /v1/storage/migrate`: `ecrl storage migrate`: the registry's blobs copied into an
/// object store and/or its metadata into PostgreSQL, after which this daemon refuses writes
/// until it is started again on those backends.
pub struct MigrateStorage;

impl Endpoint for MigrateStorage {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/storage/migrate";
    type Request = MigrateRequest;
    type Response = MigrateReport;
}

/// Where to move the registry: either or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::config::S3Config>,
    /// An empty PostgreSQL database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<crate::config::SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_ca: Option<PathBuf>,
}

/// What a move copied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MigrateReport {
    /// The object store the blobs went to (no secret in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// Blobs copied (each read, checked against its digest and written), and those the
    /// object store held already.
    pub blobs_copied: u64,
    pub blobs_present: u64,
    pub bytes_copied: u64,
    /// The PostgreSQL database the metadata went to (`host:port/database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// Rows copied per table.
    #[serde(default)]
    pub rows: std::collections::BTreeMap<String, u64>,
    pub duration_ms: u64,
}
