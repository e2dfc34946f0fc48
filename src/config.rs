//! The daemon's configuration: command-line options, environment variables, a YAML file and
//! defaults, in that order of precedence.
//!
//! The options live here rather than in `daemon/` because `ecrl daemon start` takes the same
//! ones and passes them on, and because the CLI resolves the same socket and data dir.

use crate::paths;
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const ENV_DATA_DIR: &str = "ECRL_DATA_DIR";
pub const ENV_SOCKET: &str = "ECRL_SOCKET";
pub const ENV_REGISTRY_ADDR: &str = "ECRL_REGISTRY_ADDR";
pub const ENV_CONFIG: &str = "ECRL_CONFIG";
pub const ENV_LOG_FORMAT: &str = "ECRL_LOG_FORMAT";
pub const ENV_ANONYMOUS: &str = "ECRL_ANONYMOUS";
pub const ENV_TLS: &str = "ECRL_TLS";
pub const ENV_TLS_ADDR: &str = "ECRL_TLS_ADDR";
pub const ENV_METRICS_ADDR: &str = "ECRL_METRICS_ADDR";
pub const ENV_TASK_ENDPOINT: &str = "ECRL_TASK_ENDPOINT";
pub const ENV_TLS_CERT: &str = "ECRL_TLS_CERT";
pub const ENV_TLS_KEY: &str = "ECRL_TLS_KEY";
pub const ENV_TLS_NAMES: &str = "ECRL_TLS_NAMES";
pub const ENV_ENCRYPTION: &str = "ECRL_ENCRYPTION";
/// `storage.read_cache`, from the environment (it takes precedence over the config file).
pub const ENV_READ_CACHE: &str = "ECRL_READ_CACHE";
/// `metadata.backend` and `metadata.postgres_url`, `metadata.postgres_ca`.
pub const ENV_METADATA_BACKEND: &str = "ECRL_METADATA_BACKEND";
pub const ENV_POSTGRES_URL: &str = "ECRL_POSTGRES_URL";
pub const ENV_POSTGRES_CA: &str = "ECRL_POSTGRES_CA";
/// `storage.backend` and `storage.s3.*`, from the environment.
pub const ENV_STORAGE_BACKEND: &str = "ECRL_STORAGE_BACKEND";
pub const ENV_S3_ENDPOINT: &str = "ECRL_S3_ENDPOINT";
pub const ENV_S3_BUCKET: &str = "ECRL_S3_BUCKET";
pub const ENV_S3_PREFIX: &str = "ECRL_S3_PREFIX";
pub const ENV_S3_REGION: &str = "ECRL_S3_REGION";
pub const ENV_S3_ADDRESSING: &str = "ECRL_S3_ADDRESSING";
/// The AWS SDKs' own variables, which S3 credentials and the region are read from as every
/// AWS tool reads them (they take precedence over the config file, as environment variables
/// do for every other setting).
pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub const ENV_AWS_REGION: &str = "AWS_REGION";
pub const ENV_AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// The S3 region when nothing names one (what the AWS SDKs assume, and what SeaweedFS and
/// MinIO accept).
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// The tracing filter both binaries read (`info`, `ecrld=debug`, ...).
pub const ENV_LOG: &str = "ECRL_LOG";

/// The region ARNs name when the config file names none.
pub const DEFAULT_REGION: &str = "local";

/// How long an upload session may sit unused (seconds): docker, podman and skopeo send a
/// layer's chunks back to back, so ten idle minutes mean the client is gone.
pub const DEFAULT_UPLOAD_IDLE_TIMEOUT: u64 = 10 * 60;
/// Upload sessions open at once: in all, and for one caller (a user, or an address without
/// credentials). A docker push keeps up to 5 open, a CI host's parallel jobs a few dozen.
pub const DEFAULT_MAX_UPLOADS: usize = 4096;
pub const DEFAULT_MAX_UPLOADS_PER_CLIENT: usize = 256;
/// Bytes all upload sessions may hold in memory between requests (each holds at most 64 KiB).
pub const DEFAULT_UPLOAD_MEMORY: usize = 64 << 20;

/// The registry's address when nothing else says.
pub const DEFAULT_REGISTRY_ADDR: &str = "127.0.0.1:5000";

/// The HTTPS registry's address when TLS is on and nothing else says.
pub const DEFAULT_TLS_ADDR: &str = "127.0.0.1:5443";
/// Where Prometheus metrics are served when `--metrics-addr` is given without an address.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9105";
/// Where tasks' containers find the task metadata endpoint and their role's credentials:
/// ECS's own address (ecrld puts it on the loopback interface).
pub const DEFAULT_TASK_ENDPOINT: &str = "169.254.170.2:80";

/// The registry address that turns plain HTTP off (only with TLS on).
pub const ADDR_NONE: &str = "none";

/// Options that `ecrld` and `ecrl daemon start` share.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct DaemonOptions {
    /// Where blobs and metadata live [default: ~/.local/share/ecrl]
    #[arg(long, env = ENV_DATA_DIR, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the registry listens on over plain HTTP (port 0 picks a free port; `none`
    /// turns plain HTTP off when --tls is on) [default: 127.0.0.1:5000]
    #[arg(long, env = ENV_REGISTRY_ADDR, value_name = "HOST:PORT")]
    pub registry_addr: Option<String>,

    /// Also serve the registry over HTTPS, on --tls-addr (`--tls=false` turns it off)
    /// [default: off]
    #[arg(
        long,
        env = ENV_TLS,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub tls: Option<bool>,

    /// Address the HTTPS registry listens on (port 0 picks a free port) [default: 127.0.0.1:5443]
    #[arg(long, env = ENV_TLS_ADDR, value_name = "HOST:PORT")]
    pub tls_addr: Option<String>,

    /// PEM certificate chain to serve HTTPS with, instead of one from ecrld's own CA (needs
    /// --tls-key)
    #[arg(long, env = ENV_TLS_CERT, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = ENV_TLS_KEY, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Extra DNS names or IP addresses the generated server certificate is valid for, besides
    /// localhost, 127.0.0.1 and ::1 (comma-separated)
    #[arg(long, env = ENV_TLS_NAMES, value_name = "NAME", value_delimiter = ',')]
    pub tls_names: Vec<String>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics (alone: on 127.0.0.1:9105;
    /// `none` turns them off) [default: off]
    #[arg(
        long,
        env = ENV_METRICS_ADDR,
        value_name = "HOST:PORT",
        num_args = 0..=1,
        default_missing_value = DEFAULT_METRICS_ADDR
    )]
    pub metrics_addr: Option<String>,

    /// Where tasks' containers reach the task metadata endpoint and their task role's
    /// credentials, IP:PORT (`none` turns it off) [default: 169.254.170.2:80]
    #[arg(long, env = ENV_TASK_ENDPOINT, value_name = "IP:PORT")]
    pub task_endpoint: Option<String>,

    /// YAML config file [default: ~/.config/ecrl/config.yaml when it exists]
    #[arg(long, env = ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr [default: text]
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// What the registry allows without credentials: none, pull (anyone may pull), or all
    /// (no registry authentication: throwaway local use only) [default: none]
    #[arg(long, env = ENV_ANONYMOUS, value_enum, value_name = "ACCESS")]
    pub anonymous: Option<Anonymous>,

    /// Encryption of blobs at rest, chosen when the data dir is created; a data dir keeps
    /// its mode, and asking for another one is an error [default: aes256-gcm for a new data
    /// dir, else the data dir's own]
    #[arg(long, env = ENV_ENCRYPTION, value_enum, value_name = "MODE")]
    pub encryption: Option<Encryption>,

    /// Where repositories, tags, users, policies and task definitions are kept: sqlite (in
    /// the data dir) or postgres (shared by several ecrld; needs --postgres-url)
    /// [default: sqlite]
    #[arg(long, env = ENV_METADATA_BACKEND, value_enum, value_name = "BACKEND")]
    pub metadata_backend: Option<MetadataBackend>,

    /// PostgreSQL connection URL for --metadata-backend postgres, e.g.
    /// postgres://ecrl:PASSWORD@db.example:5432/ecrl?sslmode=require
    #[arg(long, env = ENV_POSTGRES_URL, value_name = "URL", hide_env_values = true)]
    pub postgres_url: Option<SecretString>,

    /// PEM file of the CA that signed PostgreSQL's certificate (else the system's roots)
    #[arg(long, env = ENV_POSTGRES_CA, value_name = "FILE")]
    pub postgres_ca: Option<PathBuf>,

    /// Where blob content lives: the data dir, or an S3-compatible object store (--s3-*;
    /// credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN or the
    /// config file) [default: filesystem]
    #[arg(long, env = ENV_STORAGE_BACKEND, value_enum, value_name = "BACKEND")]
    pub storage_backend: Option<StorageBackend>,

    /// The S3 endpoint URL, e.g. http://127.0.0.1:8333 (SeaweedFS, Garage, MinIO) [default:
    /// AWS S3 in --s3-region]
    #[arg(long, env = ENV_S3_ENDPOINT, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// The bucket blobs are kept in (it must exist)
    #[arg(long, env = ENV_S3_BUCKET, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,

    /// A key prefix within the bucket, so that several registries can share one [default:
    /// none]
    #[arg(long, env = ENV_S3_PREFIX, value_name = "PREFIX")]
    pub s3_prefix: Option<String>,

    /// The bucket's region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]
    #[arg(long, env = ENV_S3_REGION, value_name = "REGION")]
    pub s3_region: Option<String>,

    /// How buckets are addressed: path (http://endpoint/bucket/key) or virtual-host
    /// (http://bucket.endpoint/key) [default: path with --s3-endpoint, virtual-host for AWS]
    #[arg(long, env = ENV_S3_ADDRESSING, value_enum, value_name = "STYLE")]
    pub s3_addressing: Option<S3Addressing>,
}

/// Where the daemon keeps its metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    /// SQLite in the data dir: one ecrld.
    #[default]
    Sqlite,
    /// PostgreSQL: any number of ecrld serve one registry.
    Postgres,
}

impl MetadataBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataBackend::Sqlite => "sqlite",
            MetadataBackend::Postgres => "postgres",
        }
    }
}

/// Where blob content is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under the data dir.
    #[default]
    Filesystem,
    /// An S3-compatible object store, which several ecrld instances can share.
    S3,
}

impl StorageBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Filesystem => "filesystem",
            StorageBackend::S3 => "s3",
        }
    }
}

/// A setting that may hold a password (a database URL): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretString {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretString(s.to_string()))
    }
}

/// How the daemon reaches its metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MetadataConfig {
    /// `metadata.db` in the data dir.
    #[default]
    Sqlite,
    Postgres {
        url: SecretString,
        /// A CA to trust for the server's certificate besides the system's.
        ca: Option<PathBuf>,
    },
}

/// How an S3 request names its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
pub enum S3Addressing {
    /// `http://endpoint/bucket/key`: what SeaweedFS, Garage and MinIO answer by default.
    #[value(name = "path")]
    #[serde(rename = "path")]
    Path,
    /// `http://bucket.endpoint/key`: what AWS S3 prefers.
    #[value(name = "virtual-host")]
    #[serde(rename = "virtual-host")]
    VirtualHost,
}

impl S3Addressing {
    pub fn as_str(self) -> &'static str {
        match self {
            S3Addressing::Path => "path",
            S3Addressing::VirtualHost => "virtual-host",
        }
    }
}

/// What the registry allows a request without credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Every request needs credentials.
    #[default]
    None,
    /// Anyone may pull (and list); pushing and deleting need credentials.
    Pull,
    /// No registry authentication at all.
    All,
}

impl Anonymous {
    /// As the flag and the config file spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Anonymous::None => "none",
            Anonymous::Pull => "pull",
            Anonymous::All => "all",
        }
    }
}

impl DaemonOptions {
    /// The options as the environment alone gives them (for commands that do not take them
    /// as flags but must find the same daemon).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let string = |name: &str| var(name).and_then(|v| v.into_string().ok());
        DaemonOptions {
            data_dir: var(ENV_DATA_DIR).map(PathBuf::from),
            registry_addr: string(ENV_REGISTRY_ADDR),
            tls: string(ENV_TLS).and_then(|v| parse_bool(&v)),
            tls_addr: string(ENV_TLS_ADDR),
            metrics_addr: string(ENV_METRICS_ADDR),
            task_endpoint: string(ENV_TASK_ENDPOINT),
            tls_cert: var(ENV_TLS_CERT).map(PathBuf::from),
            tls_key: var(ENV_TLS_KEY).map(PathBuf::from),
            tls_names: string(ENV_TLS_NAMES)
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            config: var(ENV_CONFIG).map(PathBuf::from),
            log_format: var(ENV_LOG_FORMAT)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| LogFormat::from_str(&v, true).ok()),
            anonymous: var(ENV_ANONYMOUS)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| Anonymous::from_str(&v, true).ok()),
            encryption: var(ENV_ENCRYPTION)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| Encryption::from_str(&v, true).ok()),
            metadata_backend: string(ENV_METADATA_BACKEND)
                .and_then(|v| MetadataBackend::from_str(&v, true).ok()),
            postgres_url: string(ENV_POSTGRES_URL).map(SecretString),
            postgres_ca: var(ENV_POSTGRES_CA).map(PathBuf::from),
            storage_backend: string(ENV_STORAGE_BACKEND)
                .and_then(|v| StorageBackend::from_str(&v, true).ok()),
            s3_endpoint: string(ENV_S3_ENDPOINT),
            s3_bucket: string(ENV_S3_BUCKET),
            s3_prefix: string(ENV_S3_PREFIX),
            s3_region: string(ENV_S3_REGION),
            s3_addressing: string(ENV_S3_ADDRESSING)
                .and_then(|v| S3Addressing::from_str(&v, true).ok()),
        }
    }
}

/// `true`/`false` as clap's boolish parser reads them (`1`, `yes`, `on`, ...).
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `ecrld`: the daemon's own command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ecrld",
    version,
    about = "The ecrl daemon: a local OCI registry and ECS task runner",
    long_about = "The ecrl daemon: a local OCI registry (Docker Registry HTTP API V2 / OCI \
        Distribution v1.1) and ECS task runner. It runs in the foreground; `ecrl daemon start` \
        runs it detached. It stops cleanly on SIGTERM or SIGINT.\n\n\
        Precedence of settings: flags, then environment variables, then the config file, then \
        defaults. Set ECRL_LOG (e.g. `debug`, `ecrld=trace`) to filter the log."
)]
pub struct EcrldArgs {
    #[command(flatten)]
    pub options: DaemonOptions,

    /// Control socket path [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]
    #[arg(long, env = ENV_SOCKET, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How blob content is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
pub enum Encryption {
    /// AES-256-GCM in fixed-size authenticated segments, under a master key kept in the OS
    /// keyring (or a 0600 key file in the config dir when there is no keyring).
    #[value(name = "aes256-gcm")]
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
    /// Plain bytes (data dirs made before encryption existed are this).
    #[value(name = "none")]
    #[serde(rename = "none")]
    None,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Aes256Gcm => "aes256-gcm",
            Encryption::None => "none",
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The config file as written. Unknown keys are errors, so a typo never passes silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// The region in ARNs (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`).
    pub region: Option<String>,
    /// The 12-digit account in ARNs and ECR's registryId (quoted or not).
    #[serde(default, deserialize_with = "string_or_number")]
    pub account_id: Option<String>,
    #[serde(default)]
    pub registry: RegistryFileConfig,
    #[serde(default)]
    pub storage: StorageFileConfig,
    #[serde(default)]
    pub metadata: MetadataFileConfig,
    #[serde(default)]
    pub mirror: MirrorFileConfig,
    #[serde(default)]
    pub lifecycle: LifecycleFileConfig,
    #[serde(default)]
    pub gc: GcFileConfig,
    #[serde(default)]
    pub metrics: MetricsFileConfig,
    #[serde(default)]
    pub events: EventsFileConfig,
    #[serde(default)]
    pub tasks: TasksFileConfig,
}

/// `tasks`: what tasks' containers are given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksFileConfig {
    /// `IP:PORT` of the task metadata endpoint and credentials provider; `none`: off.
    pub endpoint: Option<String>,
}

/// `events`: how long the event log keeps events, and the webhooks they are sent to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFileConfig {
    /// e.g. `7d` (the default), `24h`.
    pub retention: Option<String>,
    #[serde(default)]
    pub webhooks: Vec<WebhookFileConfig>,
}

/// One webhook: where events are POSTed, which ones, and how they are signed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFileConfig {
    /// Unique among the webhooks; its deliveries are tracked under it (default: its URL).
    pub name: Option<String>,
    pub url: String,
    /// Event types (`image-push`, `task`, ...; a detail-type such as `ECR Image Action`
    /// names its kinds); absent or empty: every event.
    #[serde(default)]
    pub types: Vec<String>,
    /// The HMAC-SHA256 key of the `X-Ecrl-Signature-256` header.
    pub secret: Option<SecretString>,
    /// An environment variable that holds the key instead.
    pub secret_env: Option<String>,
    /// How long one delivery may take (default 10s).
    pub timeout: Option<String>,
    /// Tries before a delivery is given up on (default 10).
    pub max_attempts: Option<u32>,
    /// The wait before the first retry, doubled each time up to 10 minutes (default 1s).
    pub retry_delay: Option<String>,
}

/// `events`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsConfig {
    pub retention: std::time::Duration,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention: std::time::Duration::from_secs(7 * 86_400),
            webhooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// Empty: every kind.
    pub types: Vec<crate::api::events::EventKind>,
    pub secret: Option<SecretString>,
    pub timeout: std::time::Duration,
    pub max_attempts: u32,
    pub retry_delay: std::time::Duration,
}

impl WebhookConfig {
    pub fn wants(&self, kind: crate::api::events::EventKind) -> bool {
        self.types.is_empty() || self.types.contains(&kind)
    }
}

/// `metrics`: Prometheus metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFileConfig {
    /// `host:port` to serve `/metrics` on; absent or `none`: off.
    pub addr: Option<String>,
}

/// `gc`: how often the daemon collects garbage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcFileConfig {
    /// e.g. `24h` (the default), `6h`.
    pub interval: Option<String>,
}

/// `lifecycle`: how often the daemon applies every repository's lifecycle policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleFileConfig {
    /// e.g. `1h` (the default), `30m`.
    pub interval: Option<String>,
}

/// `mirror`: how ecrld reaches other registries, and how replication retries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFileConfig {
    /// Per registry (`host:port` as in image references): a CA to trust, or insecure.
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RemoteFileConfig>,
    #[serde(default)]
    pub replication: ReplicationFileConfig,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RemoteFileConfig {
    /// A PEM file of CA certificates to trust for this registry (relative to the config file).
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP, and any certificate, allowed (docker's insecure-registries).
    pub insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationFileConfig {
    /// Images sent to destinations at once (default 4).
    pub workers: Option<usize>,
    /// Tries before an image's replication is FAILED (default 8).
    pub max_attempts: Option<u32>,
    /// The wait before the first retry, doubled each time up to 10 minutes (default 5s).
    pub retry_delay: Option<String>,
}

/// `mirror`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub registries: std::collections::BTreeMap<String, RemoteConfig>,
    pub replication_workers: usize,
    pub replication_max_attempts: u32,
    pub replication_retry_delay: std::time::Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteConfig {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            registries: Default::default(),
            replication_workers: 4,
            replication_max_attempts: 8,
            replication_retry_delay: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFileConfig {
    /// `aes256-gcm` or `none`: see [`Encryption`].
    pub encryption: Option<Encryption>,
    /// Bytes of blobs kept in the page cache for pulls: `auto` (an eighth of the machine's
    /// memory, at most 2 GiB), a size such as `512MiB`, or `0` for none.
    pub read_cache: Option<String>,
    /// `filesystem` (the default) or `s3`.
    pub backend: Option<StorageBackend>,
    #[serde(default)]
    pub s3: S3FileConfig,
}

/// `storage.s3`: the object store of `storage.backend: s3`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3FileConfig {
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub addressing: Option<S3Addressing>,
    /// Credentials, when the environment's AWS variables do not give them.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3FileConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("addressing", &self.addressing)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .finish()
    }
}

/// Where blob content is kept, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageConfig {
    #[default]
    Filesystem,
    S3(S3Config),
}

/// An S3-compatible object store, resolved (also what `ecrl storage migrate` sends the
/// daemon, over its owner-only socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Config {
    /// `None`: AWS S3 itself, in `region`.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Prepended to every key, without leading or trailing `/` (empty: none).
    pub prefix: String,
    pub region: String,
    pub addressing: S3Addressing,
    /// `None`: none given (the object store client looks further, e.g. instance metadata).
    pub credentials: Option<S3Credentials>,
}

impl S3Config {
    /// Where blobs go, in words (no secret in it): `s3://bucket/prefix at endpoint`.
    pub fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        match &self.endpoint {
            Some(endpoint) => format!("s3://{}{prefix} at {endpoint}", self.bucket),
            None => format!("s3://{}{prefix} (AWS, {})", self.bucket, self.region),
        }
    }
}

/// S3 credentials. Their `Debug` shows the access key id only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `metadata`: where repositories, users and task definitions are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFileConfig {
    pub backend: Option<MetadataBackend>,
    pub postgres_url: Option<SecretString>,
    pub postgres_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFileConfig {
    pub addr: Option<String>,
    /// Create a repository on the first push to it (default true).
    pub create_on_push: Option<bool>,
    /// How long an upload session may live, however busy, e.g. `24h`, `30m`, `90s`.
    pub upload_expiry: Option<String>,
    /// How long an upload session may sit with no request before it is removed.
    pub upload_idle_timeout: Option<String>,
    /// Upload sessions open at once, in all and for one caller.
    pub max_uploads: Option<usize>,
    pub max_uploads_per_client: Option<usize>,
    /// Bytes all upload sessions may hold in memory between requests (`64MiB`, `1GiB`, or
    /// a number of bytes).
    pub upload_memory: Option<String>,
    /// How long the content of a blob freed by a deleted image stays, for a push in progress
    /// that found it there to still use (default 15m).
    pub deleted_blob_grace: Option<String>,
    /// The most bytes pull-through caches may hold (`50GiB`); past it the cached images
    /// pulled least recently go. No bound when absent.
    pub cache_max_bytes: Option<String>,
    /// `none` (default), `pull` or `all`: what needs no credentials.
    pub anonymous: Option<Anonymous>,
    /// How long a client may take to send a request's head (default 10s).
    pub head_timeout: Option<String>,
    /// How long a request body may send nothing while the registry waits for it (60s).
    pub body_timeout: Option<String>,
    /// How long a keep-alive connection may wait for its next request (60s).
    pub idle_timeout: Option<String>,
    /// How long a response may wait for a client that does not read it (60s).
    pub write_timeout: Option<String>,
    /// Connections open at once, over all listeners (default 4096; never more than the
    /// open-file limit leaves after a reserve for the store and database).
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address (default 4096).
    pub max_connections_per_client: Option<usize>,
    #[serde(default)]
    pub tls: TlsFileConfig,
}

/// `registry.tls`: HTTPS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFileConfig {
    pub enabled: Option<bool>,
    pub addr: Option<String>,
    /// A PEM certificate chain (relative to the config file).
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert` (relative to the config file).
    pub key: Option<PathBuf>,
    /// Extra DNS names and IP addresses for the generated server certificate.
    pub names: Option<Vec<String>>,
}

/// Parses `512KiB`, `64MiB`, `1GiB` (also `KB`, `MB`, `GB` as powers of 1024, and `K`, `M`,
/// `G`); a bare number is bytes.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// `storage.read_cache`: `auto` (`Some(None)`) or a size.
fn read_cache_size(text: &str) -> Option<Option<u64>> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Some(None);
    }
    parse_size(text).map(|n| Some(n as u64))
}

/// A value written as a string or as a bare number (`account_id: 123456789012`), as its text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Integer(i128),
        // Not an account id, but then the check says what one is.
        Float(f64),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::String(s) => s,
        Text::Integer(n) => n.to_string(),
        Text::Float(n) => n.to_string(),
    }))
}

/// Parses `500ms`, `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => return Some(std::time::Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3_600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(seconds))
}

/// Everything resolved: what the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// Where the registry listens over plain HTTP; `None` when plain HTTP is off.
    pub registry_addr: Option<String>,
    /// HTTPS, when it is on.
    pub tls: Option<TlsConfig>,
    pub log_format: LogFormat,
    pub create_on_push: bool,
    /// The longest an upload session lives, and the longest it may sit unused.
    pub upload_expiry: std::time::Duration,
    pub upload_idle_timeout: std::time::Duration,
    /// Caps on upload sessions open at once: in all, and for one caller.
    pub max_uploads: usize,
    pub max_uploads_per_client: usize,
    /// Bytes upload sessions may hold in memory between requests.
    pub upload_memory: usize,
    /// `registry.cache_max_bytes`: what pull-through caches may hold, if bounded.
    pub cache_max_bytes: Option<u64>,
    /// The read cache's budget: `None` for `auto` (the daemon sizes it to the machine).
    pub read_cache: Option<u64>,
    /// How long a blob no image uses any more is kept before its content is removed.
    pub deleted_blob_grace: std::time::Duration,
    pub anonymous: Anonymous,
    /// The deadlines and caps of registry connections, as configured (the daemon lowers the
    /// caps to what its open-file limit allows).
    pub connections: ConnectionLimits,
    pub region: String,
    /// The account in ARNs, when the config file sets one; else the one the data dir was
    /// given at its first start.
    pub account_id: Option<String>,
    /// The encryption asked for (flag, environment or file); `None` takes the data dir's
    /// own mode, or encryption for a new data dir.
    pub encryption: Option<Encryption>,
    /// Where blob content is kept (`storage.backend`, `storage.s3`).
    pub storage: StorageConfig,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where metadata is kept.
    pub metadata: MetadataConfig,
    pub mirror: MirrorConfig,
    /// How often every repository's lifecycle policy is applied (`lifecycle.interval`).
    pub lifecycle_interval: std::time::Duration,
    /// How often garbage is collected (`gc.interval`).
    pub gc_interval: std::time::Duration,
    /// Where Prometheus metrics are served (`metrics.addr`); `None`: off.
    pub metrics_addr: Option<String>,
    /// The task metadata endpoint's address (`tasks.endpoint`); `None`: off.
    pub task_endpoint: Option<std::net::SocketAddr>,
    pub events: EventsConfig,
}

/// What bounds the registry's connections (`registry.*_timeout`, `registry.max_connections*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub head_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub write_timeout: std::time::Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

/// Connections the registry serves at once when the config file does not say.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Default for ConnectionLimits {
    fn default() -> Self {
        let secs = std::time::Duration::from_secs;
        ConnectionLimits {
            head_timeout: secs(10),
            body_timeout: secs(60),
            idle_timeout: secs(60),
            write_timeout: secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How the registry serves HTTPS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Where the HTTPS registry listens (`host:port`, port 0 allowed).
    pub addr: String,
    pub certificate: TlsCertificate,
}

/// Where the HTTPS registry's certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsCertificate {
    /// Issued at every start by ecrld's own CA, which lives in `ca_dir` (created at the first
    /// start), for localhost, 127.0.0.1, ::1, the listening address and `names`.
    Generated { ca_dir: PathBuf, names: Vec<String> },
    /// The user's own PEM certificate chain and private key.
    Files { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the postgres metadata backend needs a connection URL: --postgres-url, ECRL_POSTGRES_URL \
         or metadata.postgres_url in the config file (postgres://USER:PASSWORD@HOST:PORT/DB)"
    )]
    PostgresUrl,
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error(
        "socket path {} is {len} bytes long; Unix sockets allow at most {max}: choose a shorter --socket",
        path.display(), max = paths::MAX_SOCKET_PATH
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("invalid config file {}: {key}: {value:?} is not a duration such as 24h, 30m or 90s", path.display())]
    Duration {
        path: PathBuf,
        key: &'static str,
        value: String,
    },
    #[error("invalid config file {}: {key}: {value:?} is not a size such as 64MiB, 1GiB or 65536", path.display())]
    Size {
        path: PathBuf,
        key: &'static str,
        value: String,
    },
    #[error("invalid {name} {value:?}: expected auto, 0 or a size such as 512MiB or 1GiB")]
    EnvSize { name: &'static str, value: String },
    #[error("invalid config file {}: {key} must be more than 0", path.display())]
    Zero { path: PathBuf, key: &'static str },
    #[error(
        "invalid {setting} {value:?}: expected HOST:PORT such as 127.0.0.1:5000 \
         (port 0 picks a free one)"
    )]
    Address {
        setting: &'static str,
        value: String,
    },
    #[error(
        "plain HTTP is off (registry address `none`) and HTTPS is not on: nothing would serve \
         the registry; add --tls (ECRL_TLS=true, registry.tls.enabled: true) or give \
         --registry-addr HOST:PORT"
    )]
    NothingToServe,
    #[error(
        "a TLS certificate ({}) needs its private key too: give --tls-key FILE (ECRL_TLS_KEY, \
         registry.tls.key)", cert.display()
    )]
    TlsCertWithoutKey { cert: PathBuf },
    #[error(
        "a TLS private key ({}) needs its certificate too: give --tls-cert FILE (ECRL_TLS_CERT, \
         registry.tls.cert)", key.display()
    )]
    TlsKeyWithoutCert { key: PathBuf },
    #[error(
        "TLS name {name:?} is neither a DNS name nor an IP address (--tls-names, \
         ECRL_TLS_NAMES, registry.tls.names)"
    )]
    TlsName { name: String },
    #[error(
        "invalid config file {}: account_id {value:?} is not an AWS account id: 12 digits, \
         such as 123456789012 (quote one that starts with 0: '012345678901')", path.display()
    )]
    AccountId { path: PathBuf, value: String },
    #[error(
        "the s3 storage backend needs {what}: give {flag} ({env}, storage.s3.{key} in the \
         config file)"
    )]
    S3Missing {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
        key: &'static str,
    },
    #[error(
        "S3 credentials are incomplete: {given} is set but {missing} is not (from the \
         environment, or storage.s3 in the config file)"
    )]
    S3Credentials {
        given: &'static str,
        missing: &'static str,
    },
    #[error("invalid S3 endpoint {value:?}: expected a URL such as http://127.0.0.1:8333")]
    S3Endpoint { value: String },
}

impl FileConfig {
    /// Reads and parses a config file. An empty file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).or_else(|e| {
            // A file of nothing but comments is an empty config, not an error.
            match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                Ok(serde_yaml::Value::Null) => Ok(FileConfig::default()),
                _ => Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }),
            }
        })
    }

    /// Relative paths in a config file are relative to the file's directory.
    fn resolve_relative(&mut self, file: &Path) {
        let base = file.parent().unwrap_or(Path::new("."));
        for remote in self.mirror.registries.values_mut() {
            if let Some(p) = remote.ca_file.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
        let tls = &mut self.registry.tls;
        for p in [
            &mut self.data_dir,
            &mut self.socket,
            &mut tls.cert,
            &mut tls.key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// Resolves options (already merged with the environment by clap, or by
/// [`DaemonOptions::from_env`]) against the config file and the defaults.
pub fn resolve(
    options: &DaemonOptions,
    socket: Option<&Path>,
) -> Result<DaemonConfig, ConfigError> {
    let (file, config_file) = match &options.config {
        Some(path) => (FileConfig::load(path)?, Some(path.clone())),
        None => match paths::default_config_file().filter(|p| p.is_file()) {
            Some(path) => (FileConfig::load(&path)?, Some(path)),
            None => (FileConfig::default(), None),
        },
    };
    let mut file = file;
    if let Some(path) = &config_file {
        file.resolve_relative(path);
    }

    let data_dir = options
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(paths::default_data_dir);
    let data_dir = paths::absolute(&data_dir);
    let socket = socket
        .map(Path::to_path_buf)
        .or(file.socket)
        .unwrap_or_else(|| paths::default_socket(&data_dir));
    let socket = paths::absolute(&socket);
    let len = socket.as_os_str().len();
    if len > paths::MAX_SOCKET_PATH {
        return Err(ConfigError::SocketPathTooLong { path: socket, len });
    }
    let duration = |key: &'static str, value: &Option<String>, default: u64| match value {
        None => Ok(std::time::Duration::from_secs(default)),
        Some(value) => parse_duration(value).ok_or_else(|| ConfigError::Duration {
            path: config_file.clone().unwrap_or_default(),
            key,
            value: value.clone(),
        }),
    };
    let upload_expiry = duration(
        "registry.upload_expiry",
        &file.registry.upload_expiry,
        24 * 3_600,
    )?;
    let deleted_blob_grace = duration(
        "registry.deleted_blob_grace",
        &file.registry.deleted_blob_grace,
        15 * 60,
    )?;
    let upload_idle_timeout = duration(
        "registry.upload_idle_timeout",
        &file.registry.upload_idle_timeout,
        DEFAULT_UPLOAD_IDLE_TIMEOUT,
    )?;
    let upload_memory = match &file.registry.upload_memory {
        None => DEFAULT_UPLOAD_MEMORY,
        Some(value) => parse_size(value).ok_or_else(|| ConfigError::Size {
            path: config_file.clone().unwrap_or_default(),
            key: "registry.upload_memory",
            value: value.clone(),
        })?,
    };
    let cache_max_bytes = match &file.registry.cache_max_bytes {
        None => None,
        Some(value) => Some(parse_size(value).ok_or_else(|| ConfigError::Size {
            path: config_file.clone().unwrap_or_default(),
            key: "registry.cache_max_bytes",
            value: value.clone(),
        })? as u64),
    };
    // The environment's value first, then the file's; a bad one names where it came from.
    let read_cache = match std::env::var(ENV_READ_CACHE).ok().filter(|v| !v.is_empty()) {
        Some(value) => read_cache_size(&value).ok_or(ConfigError::EnvSize {
            name: ENV_READ_CACHE,
            value,
        })?,
        None => match &file.storage.read_cache {
            None => None,
            Some(value) => read_cache_size(value).ok_or_else(|| ConfigError::Size {
                path: config_file.clone().unwrap_or_default(),
                key: "storage.read_cache",
                value: value.clone(),
            })?,
        },
    };
    let at_least_one = |key: &'static str, value: Option<usize>, default: usize| match value {
        Some(0) => Err(ConfigError::Zero {
            path: config_file.clone().unwrap_or_default(),
            key,
        }),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let max_uploads = at_least_one(
        "registry.max_uploads",
        file.registry.max_uploads,
        DEFAULT_MAX_UPLOADS,
    )?;
    let max_uploads_per_client = at_least_one(
        "registry.max_uploads_per_client",
        file.registry.max_uploads_per_client,
        DEFAULT_MAX_UPLOADS_PER_CLIENT,
    )?;
    let connections = {
        let defaults = ConnectionLimits::default();
        let r = &file.registry;
        let path = config_file.clone().unwrap_or_default();
        let timeout = |key: &'static str, value: &Option<String>, default: std::time::Duration| {
            let d = duration(key, value, default.as_secs())?;
            if d.is_zero() {
                return Err(ConfigError::Zero {
                    path: path.clone(),
                    key,
                });
            }
            Ok(d)
        };
        let count = |key: &'static str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(ConfigError::Zero {
                path: path.clone(),
                key,
            }),
            value => Ok(value.unwrap_or(default)),
        };
        ConnectionLimits {
            head_timeout: timeout(
                "registry.head_timeout",
                &r.head_timeout,
                defaults.head_timeout,
            )?,
            body_timeout: timeout(
                "registry.body_timeout",
                &r.body_timeout,
                defaults.body_timeout,
            )?,
            idle_timeout: timeout(
                "registry.idle_timeout",
                &r.idle_timeout,
                defaults.idle_timeout,
            )?,
            write_timeout: timeout(
                "registry.write_timeout",
                &r.write_timeout,
                defaults.write_timeout,
            )?,
            max_connections: count(
                "registry.max_connections",
                r.max_connections,
                defaults.max_connections,
            )?,
            max_connections_per_client: count(
                "registry.max_connections_per_client",
                r.max_connections_per_client,
                defaults.max_connections_per_client,
            )?,
        }
    };
    let registry_addr = options
        .registry_addr
        .clone()
        .or(file.registry.addr)
        .unwrap_or_else(|| DEFAULT_REGISTRY_ADDR.to_string());
    let registry_addr = (!registry_addr.eq_ignore_ascii_case(ADDR_NONE)).then_some(registry_addr);
    if let Some(addr) = registry_addr.as_deref().filter(|a| !valid_address(a)) {
        return Err(ConfigError::Address {
            setting: "registry address (--registry-addr, ECRL_REGISTRY_ADDR, registry.addr)",
            value: addr.to_string(),
        });
    }
    let metrics_addr = options
        .metrics_addr
        .clone()
        .or(file.metrics.addr)
        .filter(|a| !a.eq_ignore_ascii_case(ADDR_NONE));
    if let Some(addr) = metrics_addr.as_deref().filter(|a| !valid_address(a)) {
        return Err(ConfigError::Address {
            setting: "metrics address (--metrics-addr, ECRL_METRICS_ADDR, metrics.addr)",
            value: addr.to_string(),
        });
    }
    let task_endpoint = options
        .task_endpoint
        .clone()
        .or(file.tasks.endpoint)
        .unwrap_or_else(|| DEFAULT_TASK_ENDPOINT.to_string());
    let task_endpoint = if task_endpoint.eq_ignore_ascii_case(ADDR_NONE) {
        None
    } else {
        Some(
            task_endpoint
                .parse::<std::net::SocketAddr>()
                .map_err(|_| ConfigError::Address {
                    setting: "task endpoint (--task-endpoint, ECRL_TASK_ENDPOINT, tasks.endpoint: an IP address and a port)",
                    value: task_endpoint.clone(),
                })?,
        )
    };
    let tls = resolve_tls(options, file.registry.tls)?;
    if let Some(tls) = tls.as_ref().filter(|t| !valid_address(&t.addr)) {
        return Err(ConfigError::Address {
            setting: "HTTPS address (--tls-addr, ECRL_TLS_ADDR, registry.tls.addr)",
            value: tls.addr.clone(),
        });
    }
    if registry_addr.is_none() && tls.is_none() {
        return Err(ConfigError::NothingToServe);
    }
    let mirror = {
        let defaults = MirrorConfig::default();
        let r = &file.mirror.replication;
        let path = config_file.clone().unwrap_or_default();
        let mut registries = std::collections::BTreeMap::new();
        for (name, remote) in &file.mirror.registries {
            let host = crate::remote::parse_registry(name).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: format!("mirror.registries.{name:?}: {e}"),
            })?;
            registries.insert(
                host,
                RemoteConfig {
                    ca_file: remote.ca_file.clone(),
                    insecure: remote.insecure.unwrap_or(false),
                },
            );
        }
        MirrorConfig {
            registries,
            replication_workers: at_least_one(
                "mirror.replication.workers",
                r.workers,
                defaults.replication_workers,
            )?,
            replication_max_attempts: at_least_one(
                "mirror.replication.max_attempts",
                r.max_attempts.map(|n| n as usize),
                defaults.replication_max_attempts as usize,
            )?
            .min(1000) as u32,
            replication_retry_delay: duration(
                "mirror.replication.retry_delay",
                &r.retry_delay,
                defaults.replication_retry_delay.as_secs(),
            )?,
        }
    };
    let lifecycle_interval = duration("lifecycle.interval", &file.lifecycle.interval, 3_600)?
        .max(std::time::Duration::from_secs(1));
    let gc_interval = duration("gc.interval", &file.gc.interval, 24 * 3_600)?
        .max(std::time::Duration::from_secs(1));
    let storage = resolve_storage(options, file.storage.backend, file.storage.s3)?;
    let events = resolve_events(file.events, config_file.clone().unwrap_or_default())?;
    let account_id = match file.account_id {
        Some(id) if !(id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())) => {
            return Err(ConfigError::AccountId {
                path: config_file.clone().unwrap_or_default(),
                value: id,
            })
        }
        id => id,
    };
    let metadata = match options
        .metadata_backend
        .or(file.metadata.backend)
        .unwrap_or_default()
    {
        MetadataBackend::Sqlite => MetadataConfig::Sqlite,
        MetadataBackend::Postgres => MetadataConfig::Postgres {
            url: options
                .postgres_url
                .clone()
                .or(file.metadata.postgres_url)
                .ok_or(ConfigError::PostgresUrl)?,
            ca: options.postgres_ca.clone().or(file.metadata.postgres_ca),
        },
    };
    Ok(DaemonConfig {
        metadata,
        account_id,
        create_on_push: file.registry.create_on_push.unwrap_or(true),
        anonymous: options
            .anonymous
            .or(file.registry.anonymous)
            .unwrap_or_default(),
        region: file.region.unwrap_or_else(|| DEFAULT_REGION.to_string()),
        connections,
        upload_expiry,
        upload_idle_timeout,
        max_uploads,
        max_uploads_per_client,
        upload_memory,
        cache_max_bytes,
        read_cache,
        deleted_blob_grace,
        data_dir,
        socket,
        registry_addr,
        tls,
        log_format: options.log_format.or(file.log_format).unwrap_or_default(),
        encryption: options.encryption.or(file.storage.encryption),
        storage,
        config_file: config_file.map(|p| paths::absolute(&p)),
        mirror,
        lifecycle_interval,
        gc_interval,
        metrics_addr,
        task_endpoint,
        events,
    })
}

/// A URL without the password it may carry (`REDACTED` in its place).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// `events`: the retention and each webhook checked (a URL, known types, a unique name, a
/// secret that is there).
fn resolve_events(file: EventsFileConfig, path: PathBuf) -> Result<EventsConfig, ConfigError> {
    use crate::api::events::EventKind;
    let invalid = |message: String| ConfigError::Parse {
        path: path.clone(),
        message,
    };
    let parse = |key: &str, value: &Option<String>, default: u64| match value {
        None => Ok(std::time::Duration::from_secs(default)),
        Some(text) => parse_duration(text).ok_or_else(|| {
            invalid(format!(
                "{key}: {text:?} is not a duration such as 24h, 30m or 90s"
            ))
        }),
    };
    let retention = parse("events.retention", &file.retention, 7 * 86_400)?;
    if retention.is_zero() {
        return Err(invalid("events.retention must be more than 0".into()));
    }
    let mut webhooks: Vec<WebhookConfig> = Vec::new();
    for (i, hook) in file.webhooks.into_iter().enumerate() {
        let key = format!("events.webhooks[{i}]");
        let url = hook.url.trim().to_string();
        let parsed = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if parsed.is_none() {
            return Err(invalid(format!(
                "{key}.url: {url:?} is not an http:// or https:// URL"
            )));
        }
        // Named by its URL when not named: without a password it may carry (the name shows
        // in listings, logs, metrics and a header).
        let name = hook.name.unwrap_or_else(|| redact_url(&url));
        if name.is_empty() || name.len() > 256 {
            return Err(invalid(format!("{key}.name: 1-256 characters")));
        }
        if webhooks.iter().any(|w| w.name == name) {
            return Err(invalid(format!(
                "{key}: another webhook is named {name:?} (give each a name of its own)"
            )));
        }
        let mut types = Vec::new();
        for text in &hook.types {
            let kinds = EventKind::parse_all(text).ok_or_else(|| {
                invalid(format!(
                    "{key}.types: unknown event type {text:?}; the types are {}",
                    EventKind::names()
                ))
            })?;
            for kind in kinds {
                if !types.contains(&kind) {
                    types.push(kind);
                }
            }
        }
        let secret = match (hook.secret, hook.secret_env) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "{key}: give secret or secret_env, not both"
                )))
            }
            (Some(secret), None) => Some(secret),
            (None, Some(var)) => match std::env::var(&var) {
                Ok(value) if !value.is_empty() => Some(SecretString(value)),
                _ => {
                    return Err(invalid(format!(
                        "{key}.secret_env: the environment variable {var} is not set"
                    )))
                }
            },
            (None, None) => None,
        };
        if secret.as_ref().is_some_and(|s| s.0.is_empty()) {
            return Err(invalid(format!("{key}.secret is empty")));
        }
        let timeout = parse(&format!("{key}.timeout"), &hook.timeout, 10)?;
        if timeout.is_zero() {
            return Err(invalid(format!("{key}.timeout must be more than 0")));
        }
        webhooks.push(WebhookConfig {
            name,
            url,
            types,
            secret,
            timeout,
            max_attempts: hook.max_attempts.unwrap_or(10).clamp(1, 1000),
            retry_delay: parse(&format!("{key}.retry_delay"), &hook.retry_delay, 1)?
                .max(std::time::Duration::from_millis(100)),
        });
    }
    Ok(EventsConfig {
        retention,
        webhooks,
    })
}

/// The blob store's backend by the usual precedence (flags and `ECRL_*`, then the file);
/// credentials from the AWS variables, then the file.
fn resolve_storage(
    options: &DaemonOptions,
    backend: Option<StorageBackend>,
    file: S3FileConfig,
) -> Result<StorageConfig, ConfigError> {
    if options.storage_backend.or(backend).unwrap_or_default() == StorageBackend::Filesystem {
        return Ok(StorageConfig::Filesystem);
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = options
        .s3_endpoint
        .clone()
        .or(file.endpoint)
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty());
    if let Some(endpoint) = &endpoint {
        let ok = endpoint
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && !rest.is_empty());
        if !ok {
            return Err(ConfigError::S3Endpoint {
                value: endpoint.clone(),
            });
        }
    }
    let bucket = options
        .s3_bucket
        .clone()
        .or(file.bucket)
        .filter(|b| !b.trim().is_empty())
        .ok_or(ConfigError::S3Missing {
            what: "a bucket",
            flag: "--s3-bucket",
            env: ENV_S3_BUCKET,
            key: "bucket",
        })?;
    let prefix = options
        .s3_prefix
        .clone()
        .or(file.prefix)
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    let region = options
        .s3_region
        .clone()
        .or(file.region)
        .or_else(|| env(ENV_AWS_REGION))
        .or_else(|| env(ENV_AWS_DEFAULT_REGION))
        .unwrap_or_else(|| DEFAULT_S3_REGION.to_string());
    let addressing = options
        .s3_addressing
        .or(file.addressing)
        .unwrap_or(match endpoint {
            Some(_) => S3Addressing::Path,
            None => S3Addressing::VirtualHost,
        });
    // The environment's pair wins as a whole over the file's, so that a key id from one place
    // is never signed with a secret from another.
    let (id, secret, token) = match env(ENV_AWS_ACCESS_KEY_ID) {
        Some(id) => (
            Some(id),
            env(ENV_AWS_SECRET_ACCESS_KEY),
            env(ENV_AWS_SESSION_TOKEN),
        ),
        None => (
            file.access_key_id,
            env(ENV_AWS_SECRET_ACCESS_KEY).or(file.secret_access_key),
            env(ENV_AWS_SESSION_TOKEN).or(file.session_token),
        ),
    };
    let credentials = match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::S3Credentials {
                given: "an access key id",
                missing: "its secret access key",
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::S3Credentials {
                given: "a secret access key",
                missing: "its access key id",
            })
        }
    };
    Ok(StorageConfig::S3(S3Config {
        endpoint,
        bucket: bucket.trim().to_string(),
        prefix,
        region,
        addressing,
        credentials,
    }))
}

/// `HOST:PORT` with a port number, an IP address or a host name (`[::1]:5000` for IPv6): what
/// a listener can bind, checked before the daemon creates anything.
fn valid_address(text: &str) -> bool {
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok()
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// HTTPS settings by the same precedence; `None` when TLS is off (other TLS settings are then
/// not used, so `enabled: false` turns a configured HTTPS off without deleting it).
fn resolve_tls(
    options: &DaemonOptions,
    file: TlsFileConfig,
) -> Result<Option<TlsConfig>, ConfigError> {
    if !options.tls.or(file.enabled).unwrap_or(false) {
        return Ok(None);
    }
    let addr = options
        .tls_addr
        .clone()
        .or(file.addr)
        .unwrap_or_else(|| DEFAULT_TLS_ADDR.to_string());
    let cert = options.tls_cert.clone().or(file.cert);
    let key = options.tls_key.clone().or(file.key);
    let names = if options.tls_names.is_empty() {
        file.names.unwrap_or_default()
    } else {
        options.tls_names.clone()
    };
    let mut checked = Vec::new();
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if rustls::pki_types::ServerName::try_from(name).is_err() {
            return Err(ConfigError::TlsName {
                name: name.to_string(),
            });
        }
        if !checked
            .iter()
            .any(|n: &String| n.eq_ignore_ascii_case(name))
        {
            checked.push(name.to_string());
        }
    }
    let certificate = match (cert, key) {
        (Some(cert), Some(key)) => TlsCertificate::Files {
            cert: paths::absolute(&cert),
            key: paths::absolute(&key),
        },
        (Some(cert), None) => return Err(ConfigError::TlsCertWithoutKey { cert }),
        (None, Some(key)) => return Err(ConfigError::TlsKeyWithoutCert { key }),
        (None, None) => TlsCertificate::Generated {
            ca_dir: paths::default_tls_dir(),
            names: checked,
        },
    };
    Ok(Some(TlsConfig { addr, certificate }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "data_dir: data\nregistry:\n  addr: 127.0.0.1:6000\n  anonymous: all\nlog_format: json\n",
        );
        let opts = DaemonOptions {
            config: Some(path.clone()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/tmp/s.sock"))).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("data"));
        assert_eq!(cfg.registry_addr.as_deref(), Some("127.0.0.1:6000"));
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(cfg.anonymous, Anonymous::All);

        let opts = DaemonOptions {
            config: Some(path),
            registry_addr: Some("127.0.0.1:7000".into()),
            data_dir: Some("/tmp/elsewhere".into()),
            log_format: Some(LogFormat::Text),
            anonymous: Some(Anonymous::Pull),
            ..Default::default()
        };
        let cfg = resolve(&opts, None).unwrap();
        assert_eq!(cfg.registry_addr.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.anonymous, Anonymous::Pull);
    }

    #[test]
    fn addresses_are_checked_when_the_config_resolves() {
        for ok in [
            "127.0.0.1:0",
            "[::1]:5000",
            "localhost:5000",
            "0.0.0.0:65535",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "bogus",
            "127.0.0.1",
            ":5000",
            "host:99999",
            "a b:1",
            "::1:5000",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "registry:\n  adress: 127.0.0.1:1\n");
        let opts = DaemonOptions {
            config: Some(path.clone()),
            ..Default::default()
        };
        let err = resolve(&opts, None).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn encryption_from_flag_beats_file_and_defaults_to_the_data_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DaemonOptions {
            config: Some(write(dir.path(), "")),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.encryption, None);

        let path = write(dir.path(), "storage:\n  encryption: none\n");
        let mut opts = DaemonOptions {
            config: Some(path),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.encryption, Some(Encryption::None));
        opts.encryption = Some(Encryption::Aes256Gcm);
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.encryption, Some(Encryption::Aes256Gcm));

        let path = write(dir.path(), "storage:\n  encryption: aes128\n");
        let opts = DaemonOptions {
            config: Some(path),
            ..Default::default()
        };
        let err = resolve(&opts, None).unwrap_err().to_string();
        assert!(err.contains("aes128"), "{err}");
        let path = write(dir.path(), "storage:\n  encrypt: none\n");
        let opts = DaemonOptions {
            config: Some(path),
            ..Default::default()
        };
        let err = resolve(&opts, None).unwrap_err().to_string();
        assert!(err.contains("encrypt"), "{err}");
    }

    #[test]
    fn storage_backend_from_flags_beats_file_and_defaults_to_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |text: &str| DaemonOptions {
            config: Some(write(dir.path(), text)),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts(""), Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.storage, StorageConfig::Filesystem);
        // S3 settings alone do not turn the backend on.
        let cfg = resolve(
            &opts("storage:\n  s3:\n    bucket: b\n"),
            Some(Path::new("/s")),
        )
        .unwrap();
        assert_eq!(cfg.storage, StorageConfig::Filesystem);

        let text = "storage:\n  backend: s3\n  s3:\n    endpoint: http://127.0.0.1:8333/\n    \
                    bucket: ecrl\n    prefix: /team/reg/\n    region: eu-west-1\n    \
                    access_key_id: AKIAFILE\n    secret_access_key: filesecret\n";
        let cfg = resolve(&opts(text), Some(Path::new("/s"))).unwrap();
        let StorageConfig::S3(s3) = cfg.storage else {
            panic!("not s3")
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("ecrl", "team/reg")
        );
        assert_eq!(s3.region, "eu-west-1");
        assert_eq!(s3.addressing, S3Addressing::Path, "path with an endpoint");
        // The file's credentials apply unless the environment names a key (the process
        // environment is shared by tests, so only the file's are checked here).
        if std::env::var_os(ENV_AWS_ACCESS_KEY_ID).is_none() {
            let creds = s3.credentials.clone().unwrap();
            assert_eq!(creds.access_key_id, "AKIAFILE");
            let debug = format!("{:?} {:?}", creds, cfg.config_file);
            assert!(!debug.contains("filesecret"), "{debug}");
        }
        assert_eq!(s3.describe(), "s3://ecrl/team/reg at http://127.0.0.1:8333");

        // Flags beat the file.
        let mut o = opts(text);
        o.s3_bucket = Some("other".into());
        o.s3_prefix = Some(String::new());
        o.s3_addressing = Some(S3Addressing::VirtualHost);
        let StorageConfig::S3(s3) = resolve(&o, Some(Path::new("/s"))).unwrap().storage else {
            panic!("not s3")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("other", ""));
        assert_eq!(s3.addressing, S3Addressing::VirtualHost);
        o.storage_backend = Some(StorageBackend::Filesystem);
        assert_eq!(
            resolve(&o, Some(Path::new("/s"))).unwrap().storage,
            StorageConfig::Filesystem
        );

        // What is missing or wrong is named with where to set it.
        let err = resolve(&opts("storage:\n  backend: s3\n"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--s3-bucket") && err.contains(ENV_S3_BUCKET),
            "{err}"
        );
        let err = resolve(
            &opts("storage:\n  backend: s3\n  s3:\n    bucket: b\n    endpoint: localhost:9\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("localhost:9"), "{err}");
        if std::env::var_os(ENV_AWS_ACCESS_KEY_ID).is_none()
            && std::env::var_os(ENV_AWS_SECRET_ACCESS_KEY).is_none()
        {
            let err = resolve(
                &opts("storage:\n  backend: s3\n  s3:\n    bucket: b\n    access_key_id: A\n"),
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("secret access key"), "{err}");
        }
        for bad in [
            "storage:\n  backend: nfs\n",
            "storage:\n  s3:\n    buckt: b\n",
        ] {
            let err = resolve(&opts(bad), None).unwrap_err().to_string();
            assert!(err.contains("nfs") || err.contains("buckt"), "{err}");
        }
    }

    #[test]
    fn account_id_is_twelve_digits_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |text: &str| DaemonOptions {
            config: Some(write(dir.path(), text)),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts(""), Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.account_id, None, "unset: the data dir's own");
        let cfg = resolve(
            &opts("region: us-east-1\naccount_id: '012345678901'\n"),
            Some(Path::new("/s")),
        )
        .unwrap();
        assert_eq!(cfg.account_id.as_deref(), Some("012345678901"));
        assert_eq!(cfg.region, "us-east-1");
        let cfg = resolve(&opts("account_id: 123456789012\n"), Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.account_id.as_deref(), Some("123456789012"), "unquoted");
        let cfg = resolve(&opts("account_id: 012345678901\n"), Some(Path::new("/s"))).unwrap();
        assert_eq!(
            cfg.account_id.as_deref(),
            Some("012345678901"),
            "a leading 0 kept"
        );
        for bad in ["'12345'", "'1234567890123'", "'12345678901a'", "-1", "1.5"] {
            let err = resolve(
                &opts(&format!("account_id: {bad}\n")),
                Some(Path::new("/s")),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("12 digits") && err.contains("account_id"),
                "{err}"
            );
        }
    }

    #[test]
    fn connection_limits_come_from_the_file_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |path| DaemonOptions {
            config: Some(path),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts(write(dir.path(), "")), Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.connections, ConnectionLimits::default());
        assert_eq!(
            cfg.connections.head_timeout,
            std::time::Duration::from_secs(10)
        );
        let path = write(
            dir.path(),
            "registry:\n  head_timeout: 2s\n  body_timeout: 3\n  idle_timeout: 1m\n  \
             write_timeout: 4s\n  max_connections: 100\n  max_connections_per_client: 10\n",
        );
        let c = resolve(&opts(path), Some(Path::new("/s")))
            .unwrap()
            .connections;
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            (
                c.head_timeout,
                c.body_timeout,
                c.idle_timeout,
                c.write_timeout
            ),
            (secs(2), secs(3), secs(60), secs(4))
        );
        assert_eq!((c.max_connections, c.max_connections_per_client), (100, 10));
        for bad in [
            "head_timeout: 0s",
            "max_connections: 0",
            "idle_timeout: soon",
        ] {
            let path = write(dir.path(), &format!("registry:\n  {bad}\n"));
            let err = resolve(&opts(path), None).unwrap_err().to_string();
            let key = bad.split(':').next().unwrap();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("90"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("30m"),
            Some(std::time::Duration::from_secs(1_800))
        );
        assert_eq!(
            parse_duration("24h"),
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_duration("2d"),
            Some(std::time::Duration::from_secs(172_800))
        );
        assert_eq!(
            parse_duration("250ms"),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5w"), None);
    }

    #[test]
    fn empty_file_is_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "\n# nothing\n");
        let opts = DaemonOptions {
            config: Some(path),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.registry_addr.as_deref(), Some(DEFAULT_REGISTRY_ADDR));
        assert_eq!(cfg.tls, None);
    }

    #[test]
    fn overlong_socket_is_refused() {
        let long = format!("/tmp/{}/s.sock", "x".repeat(120));
        let dir = tempfile::tempdir().unwrap();
        let opts = DaemonOptions {
            data_dir: Some("/d".into()),
            config: Some(write(dir.path(), "")),
            ..Default::default()
        };
        let err = resolve(&opts, Some(Path::new(&long))).unwrap_err();
        assert!(matches!(err, ConfigError::SocketPathTooLong { .. }));
    }

    fn tls_options(config: &Path) -> DaemonOptions {
        DaemonOptions {
            config: Some(config.to_path_buf()),
            data_dir: Some("/d".into()),
            ..Default::default()
        }
    }

    #[test]
    fn tls_is_off_unless_asked_and_follows_the_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "registry:\n  tls:\n    addr: 127.0.0.1:7443\n");
        let cfg = resolve(&tls_options(&path), Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.tls, None, "an address alone does not turn TLS on");

        let path = write(
            dir.path(),
            "registry:\n  tls:\n    enabled: true\n    names: [registry.lan, 10.1.2.3]\n",
        );
        let cfg = resolve(&tls_options(&path), Some(Path::new("/s"))).unwrap();
        let tls = cfg.tls.expect("tls on");
        assert_eq!(tls.addr, DEFAULT_TLS_ADDR);
        assert_eq!(
            tls.certificate,
            TlsCertificate::Generated {
                ca_dir: paths::default_tls_dir(),
                names: vec!["registry.lan".into(), "10.1.2.3".into()],
            }
        );
        assert_eq!(cfg.registry_addr.as_deref(), Some(DEFAULT_REGISTRY_ADDR));

        // Flags beat the file: off wins over the file's on, names replace the file's.
        let mut opts = tls_options(&path);
        opts.tls = Some(false);
        assert_eq!(resolve(&opts, Some(Path::new("/s"))).unwrap().tls, None);
        opts.tls = None;
        opts.tls_addr = Some("127.0.0.1:0".into());
        opts.tls_names = vec!["other.lan".into()];
        let tls = resolve(&opts, Some(Path::new("/s"))).unwrap().tls.unwrap();
        assert_eq!(tls.addr, "127.0.0.1:0");
        assert!(
            matches!(&tls.certificate, TlsCertificate::Generated { names, .. } if names == &["other.lan"])
        );
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file_and_come_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "registry:\n  tls:\n    enabled: true\n    cert: certs/server.pem\n    key: certs/server.key\n",
        );
        let tls = resolve(&tls_options(&path), Some(Path::new("/s")))
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(
            tls.certificate,
            TlsCertificate::Files {
                cert: dir.path().join("certs/server.pem"),
                key: dir.path().join("certs/server.key"),
            }
        );

        let path = write(
            dir.path(),
            "registry:\n  tls:\n    enabled: true\n    cert: server.pem\n",
        );
        let err = resolve(&tls_options(&path), Some(Path::new("/s"))).unwrap_err();
        assert!(
            matches!(err, ConfigError::TlsCertWithoutKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--tls-key"), "{err}");

        let mut opts = tls_options(&write(dir.path(), ""));
        opts.tls = Some(true);
        opts.tls_key = Some("k.pem".into());
        let err = resolve(&opts, Some(Path::new("/s"))).unwrap_err();
        assert!(
            matches!(err, ConfigError::TlsKeyWithoutCert { .. }),
            "{err}"
        );
    }

    #[test]
    fn plain_http_can_be_turned_off_only_with_tls_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = tls_options(&write(dir.path(), ""));
        opts.registry_addr = Some("none".into());
        let err = resolve(&opts, Some(Path::new("/s"))).unwrap_err();
        assert!(matches!(err, ConfigError::NothingToServe), "{err}");
        opts.tls = Some(true);
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.registry_addr, None);
        assert!(cfg.tls.is_some());
    }

    #[test]
    fn tls_names_must_be_dns_names_or_ips_and_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = tls_options(&write(dir.path(), ""));
        opts.tls = Some(true);
        opts.tls_names = vec!["ok.example".into(), "not a name".into()];
        let err = resolve(&opts, Some(Path::new("/s"))).unwrap_err();
        assert!(err.to_string().contains("not a name"), "{err}");

        let path = write(dir.path(), "registry:\n  tls:\n    enable: true\n");
        let err = resolve(&tls_options(&path), None).unwrap_err().to_string();
        assert!(err.contains("enable"), "{err}");
    }

    #[test]
    fn tls_env_values_read_like_flags() {
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
