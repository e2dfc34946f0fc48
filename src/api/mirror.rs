//! `/v1/mirror/...`: other registries. Logging in to them, copying images to and from them
//! (`sync`, once or as a scheduled job), and replication rules with their per-image status.

use super::{ApiError, Empty, Endpoint, Method};
use crate::api::transfer::{StreamEndpoint, TransferEvent};
use serde::{Deserialize, Serialize};

// ---- logins --------------------------------------------------------------------------------

/// `POST /v1/mirror/login`: checks credentials against a registry and keeps them.
pub struct Login;

impl Endpoint for Login {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/login";
    type Request = LoginRequest;
    type Response = LoginInfo;
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// The registry as the user wrote it (`registry.example:5000`, `docker.io`).
    pub registry: String,
    pub username: String,
    pub password: String,
}

// The password never reaches a log line or `Debug` output.
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A registry ecrl holds credentials for (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LoginInfo {
    pub registry: String,
    pub username: String,
    /// `keyring` or `file`: where the secret is kept.
    pub store: String,
}

/// `POST /v1/mirror/logout`: forgets a registry's credentials.
pub struct Logout;

impl Endpoint for Logout {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/logout";
    type Request = RegistryRequest;
    type Response = LoginInfo;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryRequest {
    pub registry: String,
}

/// `GET /v1/mirror/logins`: the registries ecrl holds credentials for.
pub struct ListLogins;

impl Endpoint for ListLogins {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/mirror/logins";
    type Request = Empty;
    type Response = Logins;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Logins {
    pub logins: Vec<LoginInfo>,
}

// ---- sync ----------------------------------------------------------------------------------

/// What to copy where: the options of `ecrl mirror sync`, and of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncSpec {
    /// `team/app[:tag|@digest]` (this registry) or `host[:port]/team/app[:tag|@digest]`.
    pub source: String,
    /// Where to: a repository, here or remote, optionally with the tag to give the image.
    pub destination: String,
    /// Every tag of the source repository.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_tags: bool,
    /// The source's tags that match this regular expression (the whole tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// `os/arch[/variant]`: copy only these platforms of a multi-platform image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Images copied at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
    /// Leave out the images that refer to the copied ones (signatures, SBOMs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_referrers: bool,
}

/// `POST /v1/mirror/sync?...`: copies images; answers [`SyncEvent`] lines.
pub struct SyncImages;

impl StreamEndpoint for SyncImages {
    const PATH: &'static str = "/v1/mirror/sync";
    type Request = SyncRequest;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    /// The spec, as JSON (the query string carries it whole).
    pub spec: String,
    /// Say what would be copied; copy nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One line of a sync's event stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum SyncEvent {
    /// An image began to copy.
    ImageStarted {
        source: String,
        destination: String,
    },
    /// A blob of some image began to move (`name` is its digest).
    BlobStarted {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    BlobProgress {
        name: String,
        bytes: u64,
    },
    /// A blob is at the destination: `pushed` (sent now) or `exists` (it was there).
    BlobDone {
        name: String,
        digest: String,
        size: u64,
        status: crate::api::transfer::BlobStatus,
    },
    /// An image is done, one way or another.
    ImageDone(ImageSync),
    /// The final result.
    Done(Box<SyncResult>),
    /// The sync could not run at all.
    Error(ApiError),
}

impl SyncEvent {
    /// A blob's event as a push or pull reports it (the CLI shows both the same way).
    pub fn as_transfer(&self) -> Option<TransferEvent> {
        match self.clone() {
            SyncEvent::BlobStarted { name, size } => {
                Some(TransferEvent::BlobStarted { name, size })
            }
            SyncEvent::BlobProgress { name, bytes } => {
                Some(TransferEvent::BlobProgress { name, bytes })
            }
            SyncEvent::BlobDone {
                name,
                digest,
                size,
                status,
            } => Some(TransferEvent::BlobDone {
                name,
                digest,
                size,
                status,
            }),
            _ => None,
        }
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageSyncStatus {
    /// Copied now.
    Copied,
    /// The destination already had it: nothing was sent.
    Unchanged,
    /// A dry run found it missing or different at the destination.
    WouldCopy,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSync {
    pub source: String,
    pub destination: String,
    /// The digest copied (of the platform's manifest, when `--platform` narrowed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    pub status: ImageSyncStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub blobs_copied: u64,
    pub blobs_existing: u64,
    pub bytes_copied: u64,
    /// Images referring to it (signatures, SBOMs) copied along.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referrers_copied: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    pub source: String,
    pub destination: String,
    pub images: Vec<ImageSync>,
    pub copied: u64,
    pub unchanged: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The job made of it, for `--every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<SyncJob>,
}

// ---- jobs ----------------------------------------------------------------------------------

/// `POST /v1/mirror/jobs`: makes a sync a job that runs every `every` (and once now).
pub struct CreateJob;

impl Endpoint for CreateJob {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/jobs/create";
    type Request = CreateJobRequest;
    type Response = SyncJob;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateJobRequest {
    pub spec: SyncSpec,
    /// `30m`, `1h`, `1d`...
    pub every: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncJob {
    pub id: String,
    pub spec: SyncSpec,
    pub every_seconds: u64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<String>,
    /// `RUNNING`, `SUCCEEDED`, `FAILED` (some image failed, or the sync could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// What the last run did, in words (`3 copied, 47 unchanged`) or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_summary: Option<String>,
    pub next_run_at: String,
}

/// `GET /v1/mirror/jobs`.
pub struct ListJobs;

impl Endpoint for ListJobs {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/mirror/jobs";
    type Request = Empty;
    type Response = Jobs;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Jobs {
    pub jobs: Vec<SyncJob>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    pub id: String,
}

/// `POST /v1/mirror/jobs/delete`.
pub struct DeleteJob;

impl Endpoint for DeleteJob {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/jobs/delete";
    type Request = JobRequest;
    type Response = SyncJob;
}

/// `POST /v1/mirror/jobs/run?...`: runs a job now; answers [`SyncEvent`] lines.
pub struct RunJob;

impl StreamEndpoint for RunJob {
    const PATH: &'static str = "/v1/mirror/jobs/run";
    type Request = JobRequest;
}

// ---- replication ---------------------------------------------------------------------------

/// `POST /v1/mirror/replication`: sets the replication configuration (the document is
/// JSON or YAML, checked by the daemon).
pub struct PutReplication;

impl Endpoint for PutReplication {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/replication/put";
    type Request = PutReplicationRequest;
    type Response = crate::mirror::ReplicationConfiguration;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutReplicationRequest {
    pub document: String,
}

/// `GET /v1/mirror/replication`.
pub struct GetReplication;

impl Endpoint for GetReplication {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/mirror/replication";
    type Request = Empty;
    type Response = crate::mirror::ReplicationConfiguration;
}

/// `POST /v1/mirror/replication/delete`: removes every rule (queued copies still run).
pub struct DeleteReplication;

impl Endpoint for DeleteReplication {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/replication/delete";
    type Request = Empty;
    type Response = crate::mirror::ReplicationConfiguration;
}

/// `GET /v1/mirror/replication/status`: DescribeImageReplicationStatus.
pub struct ReplicationStatus;

impl Endpoint for ReplicationStatus {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/mirror/replication/status";
    type Request = ReplicationStatusRequest;
    type Response = ImageReplicationStatus;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatusRequest {
    pub repository_name: String,
    /// A tag or a digest; `latest` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReplicationStatus {
    pub repository_name: String,
    pub image_id: super::repos::ImageId,
    pub replication_statuses: Vec<DestinationStatus>,
}

/// One destination's copy of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// The remote registry (`host:port`).
    pub registry: String,
    /// The repository there.
    pub repository_name: String,
    /// `IN_PROGRESS`, `COMPLETE` or `FAILED`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    pub updated_at: String,
}

// ---- pull-through cache ---------------------------------------------------------------------

/// A pull-through cache rule, in ECR's names (CreatePullThroughCacheRule): pulls of
/// `ECR_REPOSITORY_PREFIX/REPO` are answered from `UPSTREAM/[UPSTREAM_PREFIX/]REPO` the first
/// time, then from this registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheRule {
    pub ecr_repository_prefix: String,
    /// The upstream registry (`host[:port]`, `docker.io`).
    pub upstream_registry_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_repository_prefix: Option<String>,
    /// Whose credentials are used for the upstream (a registry `ecrl login` or docker's
    /// config holds them for), when not the upstream's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_registry: Option<String>,
    /// How long a cached tag is served before it is checked against the upstream again.
    pub tag_ttl_seconds: u64,
    /// Also answers docker's `registry-mirrors` (Docker Hub names without a prefix).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub docker_hub_mirror: bool,
    pub registry_id: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/mirror/cache/create`.
pub struct CreateCacheRule;

impl Endpoint for CreateCacheRule {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/cache/create";
    type Request = CreateCacheRuleRequest;
    type Response = CacheRule;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCacheRuleRequest {
    pub ecr_repository_prefix: String,
    pub upstream_registry_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_repository_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_registry: Option<String>,
    /// `24h` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_ttl: Option<String>,
    #[serde(default)]
    pub docker_hub_mirror: bool,
}

/// `GET /v1/mirror/cache`.
pub struct ListCacheRules;

impl Endpoint for ListCacheRules {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/mirror/cache";
    type Request = Empty;
    type Response = CacheRules;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRules {
    pub pull_through_cache_rules: Vec<CacheRule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRuleRequest {
    pub ecr_repository_prefix: String,
}

/// `POST /v1/mirror/cache/delete`: the rule goes; what it cached stays.
pub struct DeleteCacheRule;

impl Endpoint for DeleteCacheRule {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/cache/delete";
    type Request = CacheRuleRequest;
    type Response = CacheRule;
}

/// `POST /v1/mirror/cache/validate`: reaches the upstream and checks the credentials.
pub struct ValidateCacheRule;

impl Endpoint for ValidateCacheRule {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/mirror/cache/validate";
    type Request = CacheRuleRequest;
    type Response = CacheRuleValidation;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheRuleValidation {
    pub ecr_repository_prefix: String,
    pub upstream_registry_url: String,
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
