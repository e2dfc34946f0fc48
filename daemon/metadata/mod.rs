//! Repositories, tags, manifests and per-repository blob links, task definitions and tasks:
//! SQLite (WAL) for durability, an in-memory index in front of it for reads.
//!
//! One writer thread owns the connection and commits concurrent writes together (group
//! commit: one fsync for a batch). Each write checks and updates the index as it runs, inside
//! the batch's transaction; the caller hears back only after the commit. Reads never touch
//! SQLite. This module must not call storage, the registry or the network.

mod auth;
mod clusters;
mod copy;
mod db;
pub mod events;
mod follow;
mod fsck;
pub mod lifecycle;
pub mod mirror;
mod pg;
mod schema;
mod secrets;
mod tasks;

pub use auth::{getrandom, open_with_token_secret, seal_with_token_secret, AuthIndex};
pub use clusters::{ClusterRecord, ClusterRefusal};
pub use pg::location as postgres_location;
pub use secrets::{SealedVersion, SecretRecord};
pub use tasks::TaskFamily;

use bytes::Bytes;
use db::Db;
use ecrl::config::MetadataConfig;
use ecrl::names::{Digest, Reference, RepoName, Tag};
use rusqlite::params;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("repository {0} does not exist")]
    RepoNotFound(RepoName),
    /// No owner access key has this id.
    #[error("the owner has no access key {0}; 'ecrl auth key list' shows the ones it has")]
    KeyNotFound(String),
    #[error("repository {0} already exists")]
    RepoExists(RepoName),
    #[error("repository {0} is not empty")]
    RepoNotEmpty(RepoName),
    #[error("the image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the tag is immutable")]
    TagImmutable { repo: RepoName, tag: Tag },
    #[error("manifest {digest} is not in repository {repo}")]
    ManifestNotFound { repo: RepoName, digest: Digest },
    /// A manifest being recorded references something the repository no longer holds (an
    /// image deleted meanwhile freed it).
    #[error("{digest}, which the manifest references, is not in repository {repo}: push it first")]
    ReferenceMissing { repo: RepoName, digest: Digest },
    /// A manifest an index (a multi-platform image) of the repository references: deleting
    /// it would break the index.
    #[error("manifest {digest} is part of the multi-platform image {index} in {repo}: delete that first")]
    ManifestInUse {
        repo: RepoName,
        digest: Digest,
        index: Digest,
    },
    /// `family:revision` names no stored revision.
    #[error("task definition {0} does not exist")]
    TaskDefinitionNotFound(String),
    /// Only INACTIVE revisions can be deleted (`family:revision`).
    #[error("only INACTIVE task definitions can be deleted; deregister {0} first ('ecrl task deregister {0}')")]
    TaskDefinitionActive(String),
    /// No task has this id.
    #[error("task {0} does not exist")]
    TaskNotFound(String),
    #[error("user {0} does not exist")]
    UserNotFound(String),
    #[error("user {0} already exists")]
    UserExists(String),
    /// A policy that is not there (the message says which).
    #[error("{0}")]
    PolicyNotFound(String),
    #[error("metadata database: {0}")]
    Db(String),
    /// The database cannot be reached: clients may retry.
    #[error("the metadata database is unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> Self {
        MetaError::Db(e.to_string())
    }
}

pub use ecrl::mutability::TagMutability;

/// A repository as the index holds it.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub created_at: i64,
    pub mutability: TagMutability,
    /// The filters of a `_WITH_EXCLUSION` mutability (tag wildcards).
    pub mutability_exclusions: Vec<String>,
    pub resource_tags: BTreeMap<String, String>,
    pub tags: BTreeMap<Tag, Digest>,
    pub manifests: HashMap<Digest, Arc<Manifest>>,
    pub blobs: HashMap<Digest, u64>,
    /// The repository policy's document, when one is set.
    pub policy: Option<String>,
    /// The lifecycle policy, when one is set.
    pub lifecycle: Option<lifecycle::Lifecycle>,
    /// Images `ecrl fsck --repair` found to have lost content, with why: their pulls say so.
    pub damaged: HashMap<Digest, String>,
}

impl Repo {
    /// The manifest a tag points at, or the one a digest names, when the repository holds it.
    pub fn manifest(&self, reference: &Reference) -> Option<&Arc<Manifest>> {
        let digest = match reference {
            Reference::Tag(tag) => self.tags.get(tag)?,
            Reference::Digest(digest) => digest,
        };
        self.manifests.get(digest)
    }

    /// An immutable tag (by the repository's mutability and its exclusions) is not moved to
    /// another manifest (ECR's ImageTagAlreadyExistsException); a new tag, or the same
    /// manifest again, is fine.
    pub fn check_tag(&self, name: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), MetaError> {
        if self.tags.get(tag).is_some_and(|d| d != digest)
            && self
                .mutability
                .is_immutable(&self.mutability_exclusions, tag.as_str())
        {
            return Err(MetaError::TagImmutable {
                repo: name.clone(),
                tag: tag.clone(),
            });
        }
        Ok(())
    }
}

/// A manifest as the index holds it, with its bytes (manifests are at most 4 MiB and are
/// what every pull asks for first).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub size: u64,
    /// The manifest plus the blobs it references (layers and config), as ECR counts it.
    pub image_size: u64,
    /// Blobs and manifests it references.
    pub refs: Vec<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    pub bytes: Bytes,
}

#[derive(Debug, Default)]
pub struct Index {
    pub repos: BTreeMap<RepoName, Repo>,
    /// (uncompressed digest, compression) → the stored compressed blob and its size.
    pub layers: HashMap<(Digest, String), (Digest, u64)>,
    /// Task-definition families by name, each with its revisions.
    pub task_families: BTreeMap<String, TaskFamily>,
    /// Tasks by id (the last segment of the task ARN).
    pub tasks: BTreeMap<String, ecrl::api::tasks::Task>,
    /// ECS clusters by name (`default` is not among them: it always exists).
    pub clusters: BTreeMap<String, ClusterRecord>,
    /// ECS services by ARN.
    pub services: BTreeMap<String, ecrl::api::services::Service>,
    /// Resource tags of ECS resources by ARN (see [`clusters`]).
    pub ecs_tags: BTreeMap<String, Vec<ecrl::taskdef::Tag>>,
    pub auth: AuthIndex,
    pub mirror: mirror::MirrorIndex,
    /// The webhooks events are queued for.
    pub events: events::EventSetup,
    /// The secret store, by name.
    pub secrets: BTreeMap<String, SecretRecord>,
}

impl Index {
    /// True when any repository links the blob or holds it as a manifest.
    pub fn blob_in_use(&self, digest: &Digest) -> bool {
        self.repos
            .values()
            .any(|r| r.blobs.contains_key(digest) || r.manifests.contains_key(digest))
    }

    /// Every digest some repository holds, as a blob or as a manifest.
    pub fn digests_in_use(&self) -> HashSet<Digest> {
        self.repos
            .values()
            .flat_map(|r| r.blobs.keys().chain(r.manifests.keys()))
            .copied()
            .collect()
    }
}

/// Unlinks the `candidates` the repository links and none of its manifests references.
fn unlink_unreferenced(
    conn: &Db,
    repo: &RepoName,
    entry: &mut Repo,
    candidates: &[Digest],
) -> Result<Vec<(Digest, u64)>, MetaError> {
    let referenced: HashSet<&Digest> = entry.manifests.values().flat_map(|m| &m.refs).collect();
    let free: Vec<(Digest, u64)> = candidates
        .iter()
        .filter(|d| !referenced.contains(d))
        .filter_map(|d| entry.blobs.get(d).map(|size| (*d, *size)))
        .collect();
    for (digest, _) in &free {
        exec(
            conn,
            "DELETE FROM blob_links WHERE repo = ?1 AND digest = ?2",
            params![repo.as_str(), digest.to_string()],
        )?;
        exec(
            conn,
            "INSERT INTO released_blobs (digest, released_at) VALUES (?1, ?2) ON CONFLICT (digest) DO UPDATE SET released_at = excluded.released_at",
            params![digest.to_string(), now_millis()],
        )?;
        entry.blobs.remove(digest);
    }
    Ok(free)
}

type Reply = Box<dyn FnOnce(Result<(), Failure>) + Send>;
/// A manifest's content from the blob store (the index keeps every manifest's bytes).
type ManifestBytes = Box<dyn Fn(&Digest) -> std::io::Result<Bytes> + Send>;
/// A write: run inside the batch's transaction (`Some`), or told that the batch could not
/// begin (`None`). Returns whether it succeeded and how to answer its caller once the
/// transaction's fate is known.
type Job = Box<dyn FnOnce(Option<(&Db, &mut Index)>) -> (bool, Reply) + Send>;

/// What the writer is asked to do.
enum Work {
    /// A write (the listener's wake-up is an empty one: the index then holds what others
    /// committed).
    Job(Job),
    /// A lookup found nothing (PostgreSQL): answered once the index holds what other
    /// instances committed before it asked. When they committed nothing since the last batch,
    /// one read of the change log's head says so, without the registry-wide write lock or
    /// the index's: a flood of 404s costs the other instances nothing.
    Refresh(Reply),
}

impl Work {
    fn into_job(self) -> Job {
        match self {
            Work::Job(job) => job,
            Work::Refresh(reply) => Box::new(move |_| (true, reply)),
        }
    }
}

/// The jobs only one instance runs at a time.
#[derive(Debug, Clone, Copy)]
pub enum ExclusiveJob {
    Gc,
    Lifecycle,
    Replication,
    Sync,
    Webhooks,
    Services,
}

impl ExclusiveJob {
    /// Its PostgreSQL advisory-lock key (a constant other tools may look for).
    fn key(self) -> i64 {
        0x6563_726c_0010
            + match self {
                ExclusiveJob::Gc => 0,
                ExclusiveJob::Lifecycle => 1,
                ExclusiveJob::Replication => 2,
                ExclusiveJob::Sync => 3,
                ExclusiveJob::Webhooks => 4,
                ExclusiveJob::Services => 5,
            }
    }
}

/// A claimed [`ExclusiveJob`]: released when dropped.
pub struct Exclusive(#[allow(dead_code)] Option<pg::Exclusive>);

pub struct Metadata {
    /// Set (to why) once the registry moved to other backends ([`Metadata::move_to_postgres`],
    /// [`Metadata::freeze`]): every later write is refused, so nothing lands where the moved
    /// registry no longer looks.
    moved: Arc<std::sync::Mutex<Option<String>>>,
    backend: &'static str,
    /// PostgreSQL's URL, CA and this instance's name, for connections besides the writer's.
    postgres: Option<(String, Option<std::path::PathBuf>, String)>,
    location: String,
    account_id: String,
    token_secret: [u8; 32],
    index: Arc<RwLock<Index>>,
    jobs: mpsc::Sender<Work>,
    pulls: Mutex<HashMap<(RepoName, Digest), i64>>,
    /// The event log's own connection.
    event_store: Arc<events::EventStore>,
    /// Told after every write that committed (event followers and webhook delivery wait on
    /// it; on PostgreSQL they also look every second for other instances' events).
    changed: Arc<tokio::sync::Notify>,
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Metadata {
    /// Opens (creating and migrating) `metadata.db` under the data dir and loads the index.
    /// `manifest_bytes` returns a manifest's content from the blob store.
    #[cfg(test)]
    pub fn open(
        data_dir: &Path,
        manifest_bytes: impl Fn(&Digest) -> std::io::Result<Bytes> + Send + 'static,
    ) -> Result<Self, MetaError> {
        Self::open_with(&MetadataConfig::Sqlite, data_dir, manifest_bytes)
    }

    /// Opens the metadata where `config` says: SQLite under the data dir, or PostgreSQL
    /// (migrated, and followed for other instances' changes).
    pub fn open_with(
        config: &MetadataConfig,
        data_dir: &Path,
        manifest_bytes: impl Fn(&Digest) -> std::io::Result<Bytes> + Send + 'static,
    ) -> Result<Self, MetaError> {
        let (conn, follow) = match config {
            MetadataConfig::Sqlite => (schema::open_sqlite(&data_dir.join("metadata.db"))?, None),
            MetadataConfig::Postgres { url, ca } => {
                let instance = uuid::Uuid::new_v4().simple().to_string();
                let mut client = pg::connect(&url.0, ca.as_deref(), &instance)?;
                schema::migrate_pg(&mut client)?;
                let conn = Db::Pg(Box::new(db::Pg::new(client)));
                // Read before the load: a change committed in between is applied again,
                // which is harmless; one missed would not be.
                let seen = follow::last_seq(&conn)?;
                let follow = follow::Follow {
                    instance,
                    seen,
                    url: url.0.clone(),
                    ca: ca.clone(),
                    full_reload: false,
                    pruned_at: std::time::Instant::now(),
                };
                (conn, Some(follow))
            }
        };
        let account_id = account_id(&conn)?;
        let token_secret = auth::token_secret(&conn)?;
        let index = Arc::new(RwLock::new(load(&conn, &manifest_bytes)?));
        let (tx, rx) = mpsc::channel::<Work>();
        let writer_index = index.clone();
        if let Some(follow) = &follow {
            let jobs = tx.clone();
            pg::listen(
                follow.url.clone(),
                follow.ca.clone(),
                follow.instance.clone(),
                move || {
                    // An empty job: the writer catches up before every batch.
                    let job: Job = Box::new(|_| (true, Box::new(|_| {})));
                    jobs.send(Work::Job(job)).is_ok()
                },
            )
            .map_err(|e| MetaError::Db(e.to_string()))?;
        }
        let follow_conn = follow
            .as_ref()
            .map(|f| (f.url.clone(), f.ca.clone(), f.instance.clone()));
        let event_store = Arc::new(match &follow_conn {
            None => {
                let path = data_dir.join("metadata.db");
                events::EventStore::new(move || {
                    let conn = rusqlite::Connection::open(&path)?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    Ok(Db::Sqlite(conn))
                })
            }
            Some((url, ca, instance)) => {
                let (url, ca, instance) = (url.clone(), ca.clone(), instance.clone());
                events::EventStore::new(move || {
                    let client = pg::connect(&url, ca.as_deref(), &instance)?;
                    Ok(Db::Pg(Box::new(db::Pg::new(client))))
                })
            }
        });
        let manifest_bytes: ManifestBytes = Box::new(manifest_bytes);
        std::thread::Builder::new()
            .name("metadata-writer".into())
            .spawn(move || writer(conn, rx, writer_index, follow, manifest_bytes))
            .map_err(|e| MetaError::Db(e.to_string()))?;
        Ok(Metadata {
            moved: Arc::default(),
            account_id,
            token_secret,
            index,
            jobs: tx,
            pulls: Mutex::new(HashMap::new()),
            event_store,
            changed: Arc::default(),
            backend: match config {
                MetadataConfig::Sqlite => "sqlite",
                MetadataConfig::Postgres { .. } => "postgres",
            },
            postgres: follow_conn,
            location: match config {
                MetadataConfig::Sqlite => data_dir.join("metadata.db").display().to_string(),
                MetadataConfig::Postgres { url, .. } => pg::location(&url.0),
            },
        })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The database: the SQLite file, or PostgreSQL's `host:port/database`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// True when other instances share this metadata (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.backend == "postgres"
    }

    /// Claims `job` for this instance while the guard lives: `None` when another instance
    /// sharing the database holds it. Always granted on SQLite (one instance). Blocking: call
    /// it off the async threads (`spawn_blocking`) or through [`Metadata::exclusive`].
    fn try_exclusive(&self, job: ExclusiveJob) -> Result<Option<Exclusive>, MetaError> {
        match &self.postgres {
            None => Ok(Some(Exclusive(None))),
            Some((url, ca, instance)) => {
                Ok(
                    pg::try_exclusive(url.clone(), ca.clone(), instance.clone(), job.key())?
                        .map(|e| Exclusive(Some(e))),
                )
            }
        }
    }

    /// [`Metadata::try_exclusive`] from async code.
    pub async fn exclusive(
        self: &Arc<Self>,
        job: ExclusiveJob,
    ) -> Result<Option<Exclusive>, MetaError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.try_exclusive(job))
            .await
            .map_err(|e| MetaError::Db(e.to_string()))?
    }

    /// Copies the whole metadata into the empty PostgreSQL database at `url` (migrated to
    /// this version's schema first) and from then on refuses writes here: the registry lives
    /// on there. Returns the rows copied per table.
    pub async fn move_to_postgres(
        &self,
        url: String,
        ca: Option<std::path::PathBuf>,
    ) -> Result<copy::Copied, MetaError> {
        let moved = self.moved.clone();
        self.write(move |conn, _| {
            let mut client = pg::connect(&url, ca.as_deref(), "migrate")?;
            schema::migrate_pg(&mut client)?;
            let copied = copy::sqlite_to_postgres(conn, &mut client)?;
            *moved.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "this registry's metadata moved to PostgreSQL at {}: restart ecrld with \
                 --metadata-backend postgres (and its storage settings) to write again",
                pg::location(&url)
            ));
            Ok(copied)
        })
        .await
    }

    /// Refuses every write from now on, with `why` (the registry moved elsewhere). Waits for
    /// the writes before it to commit.
    pub async fn freeze(&self, why: String) -> Result<(), MetaError> {
        let moved = self.moved.clone();
        self.write(move |_, _| {
            *moved.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            Ok(())
        })
        .await
    }

    /// Brings the index up to what other instances committed before now (the writer applies
    /// the change log before every batch): for a lookup that found nothing, before it says
    /// so. Nothing to do on SQLite (one instance).
    pub async fn refresh(&self) {
        if !self.shared() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: Reply = Box::new(move |_| {
            let _ = tx.send(());
        });
        if self.jobs.send(Work::Refresh(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Asks the database something, through the writer: an error when it does not answer.
    pub async fn ping(&self) -> Result<(), MetaError> {
        self.write(|conn, _| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    /// The 12-digit account id in ARNs (ECR's registryId): the config file's `account_id`
    /// when it sets one, else the one this registry was given at its first start.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Uses `account_id` (the config file's) instead of the stored one, which is kept for
    /// when the setting goes again.
    pub fn with_account_id(mut self, account_id: Option<String>) -> Self {
        if let Some(id) = account_id {
            self.account_id = id;
        }
        self
    }

    /// The key that signs registry login tokens (made at first start, never shown).
    pub fn token_secret(&self) -> &[u8; 32] {
        &self.token_secret
    }

    /// A read view of the index. Hold it briefly: writes wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in the writer's next transaction. `f` checks and updates the index and
    /// issues the SQL; the result arrives after the transaction commits.
    async fn write<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Db, &mut Index) -> Result<T, MetaError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let moved = self.moved.clone();
        let f = move |conn: &Db, index: &mut Index| {
            if let Some(why) = moved.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                return Err(MetaError::Unavailable(why.clone()));
            }
            f(conn, index)
        };
        let job: Job = Box::new(
            move |target| match target.map(|(conn, index)| f(conn, index)) {
                None => (
                    true,
                    Box::new(move |result: Result<(), Failure>| {
                        let failure = result
                            .err()
                            .unwrap_or_else(|| Failure::Db("no transaction".into()));
                        let _ = tx.send(Err(failure.into()));
                    }),
                ),
                Some(Ok(value)) => (
                    true,
                    Box::new(move |commit: Result<(), Failure>| {
                        let _ = tx.send(commit.map(|()| value).map_err(MetaError::from));
                    }),
                ),
                Some(Err(e)) => (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(e));
                    }),
                ),
            },
        );
        self.jobs
            .send(Work::Job(job))
            .map_err(|_| MetaError::Db("the metadata writer has stopped".into()))?;
        let result = rx
            .await
            .map_err(|_| MetaError::Db("the metadata writer has stopped".into()))?;
        if result.is_ok() {
            self.changed.notify_waiters();
        }
        result
    }

    /// The event log's connection (reads, and the webhooks' outbox).
    pub fn event_store(&self) -> &Arc<events::EventStore> {
        &self.event_store
    }

    /// Told after each write that committed.
    pub fn changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.changed
    }

    /// The region of the ARNs events name, and the webhooks (by name, with the kinds each
    /// wants) that events are queued for from now.
    pub fn configure_events(
        &self,
        region: String,
        hooks: Vec<(String, Vec<ecrl::api::events::EventKind>)>,
    ) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        index.events = events::EventSetup {
            hooks,
            region,
            account: self.account_id.clone(),
        };
    }

    /// Records an event on its own (one no other write carries: a collection's summary).
    pub async fn record_event(&self, event: events::NewEvent) -> Result<(), MetaError> {
        self.write(move |conn, index| events::record(conn, index, event))
            .await
    }

    /// Creates a repository; `exclusions` are the filters of a `_WITH_EXCLUSION` mutability
    /// (checked by the caller).
    pub async fn create_repo(
        &self,
        name: RepoName,
        mutability: TagMutability,
        exclusions: Vec<String>,
        resource_tags: BTreeMap<String, String>,
    ) -> Result<Repo, MetaError> {
        self.write(move |conn, index| {
            if index.repos.contains_key(&name) {
                return Err(MetaError::RepoExists(name));
            }
            let repo = insert_repo(conn, index, &name, mutability, resource_tags)?;
            if exclusions.is_empty() {
                return Ok(repo);
            }
            set_mutability(conn, index, &name, mutability, exclusions)
        })
        .await
    }

    /// Sets a repository's tag mutability and its exclusions (checked by the caller), as
    /// ECR's PutImageTagMutability.
    pub async fn put_mutability(
        &self,
        name: RepoName,
        mutability: TagMutability,
        exclusions: Vec<String>,
    ) -> Result<Repo, MetaError> {
        self.write(move |conn, index| set_mutability(conn, index, &name, mutability, exclusions))
            .await
    }

    /// Replaces a repository's resource tags (ECR's TagResource and UntagResource).
    pub async fn set_repo_tags(
        &self,
        name: RepoName,
        tags: BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let Some(repo) = index.repos.get_mut(&name) else {
                return Err(MetaError::RepoNotFound(name));
            };
            conn.execute(
                "UPDATE repositories SET resource_tags = ?2 WHERE name = ?1",
                rusqlite::params![
                    name.as_str(),
                    serde_json::to_string(&tags).unwrap_or_else(|_| "{}".into())
                ],
            )?;
            repo.resource_tags = tags;
            Ok(())
        })
        .await
    }

    /// Makes sure a repository exists before a push: creates it when `create` is set.
    pub async fn ensure_repo(&self, name: &RepoName, create: bool) -> Result<(), MetaError> {
        if self.read().repos.contains_key(name) {
            return Ok(());
        }
        if !create {
            return Err(MetaError::RepoNotFound(name.clone()));
        }
        let name = name.clone();
        self.write(move |conn, index| {
            if !index.repos.contains_key(&name) {
                insert_repo(conn, index, &name, TagMutability::Mutable, BTreeMap::new())?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes a repository; one that holds images needs `force`. Returns the digests it
    /// linked, for the caller to collect blobs nobody else uses.
    pub async fn delete_repo(&self, name: RepoName, force: bool) -> Result<Vec<Digest>, MetaError> {
        self.write(move |conn, index| {
            let repo = index
                .repos
                .get(&name)
                .ok_or_else(|| MetaError::RepoNotFound(name.clone()))?;
            if !force && !repo.manifests.is_empty() {
                return Err(MetaError::RepoNotEmpty(name));
            }
            exec(
                conn,
                "DELETE FROM repositories WHERE name = ?1",
                [name.as_str()],
            )?;
            let repo = index.repos.remove(&name).unwrap_or_default();
            index.auth.epoch += 1;
            let event = events::repository_action(&index.events, "DELETE", &name);
            events::record(conn, index, event)?;
            Ok(repo
                .blobs
                .into_keys()
                .chain(repo.manifests.into_keys())
                .collect())
        })
        .await
    }

    /// Links a stored blob into a repository (which must exist). True when the repository did
    /// not link it before.
    pub async fn link_blob(
        &self,
        repo: &RepoName,
        digest: Digest,
        size: u64,
    ) -> Result<bool, MetaError> {
        if self
            .read()
            .repos
            .get(repo)
            .is_some_and(|r| r.blobs.get(&digest) == Some(&size))
        {
            return Ok(false);
        }
        self.pushed_blob(repo, digest, size).await
    }

    /// [`Metadata::link_blob`] for a blob a client just pushed: a link the repository had
    /// already is dated now, as a new one would be. A push announces a manifest to come, and
    /// garbage collection leaves links alone for `upload_expiry` after they were made; an
    /// old link a client pushed again must get that time too.
    pub async fn pushed_blob(
        &self,
        repo: &RepoName,
        digest: Digest,
        size: u64,
    ) -> Result<bool, MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            let entry = index
                .repos
                .get_mut(&repo)
                .ok_or_else(|| MetaError::RepoNotFound(repo.clone()))?;
            exec(
                conn,
                "INSERT INTO blob_links (repo, digest, size, linked_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (repo, digest) DO UPDATE SET size = excluded.size, linked_at = excluded.linked_at",
                params![repo.as_str(), digest.to_string(), size as i64, now_millis()],
            )?;
            Ok(entry.blobs.insert(digest, size).is_none())
        })
        .await
    }

    /// Removes a blob's link from a repository, unless an image there uses it. `Ok(true)`
    /// when it was linked, `Ok(false)` when not, `Err` naming the images that use it.
    pub async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: Digest,
    ) -> Result<Result<bool, Vec<Digest>>, MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            let Some(entry) = index.repos.get_mut(&repo) else {
                return Ok(Ok(false));
            };
            let users: Vec<Digest> = entry
                .manifests
                .values()
                .filter(|m| m.refs.contains(&digest))
                .map(|m| m.digest)
                .collect();
            if !users.is_empty() {
                return Ok(Err(users));
            }
            if entry.blobs.remove(&digest).is_none() {
                return Ok(Ok(false));
            }
            exec(
                conn,
                "DELETE FROM blob_links WHERE repo = ?1 AND digest = ?2",
                params![repo.as_str(), digest.to_string()],
            )?;
            Ok(Ok(true))
        })
        .await
    }

    /// Records a manifest (its content already stored) and optionally points a tag at it.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: Manifest,
        tag: Option<Tag>,
    ) -> Result<(), MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            let entry = index
                .repos
                .get_mut(&repo)
                .ok_or_else(|| MetaError::RepoNotFound(repo.clone()))?;
            if let Some(tag) = &tag {
                entry.check_tag(&repo, tag, &manifest.digest)?;
            }
            // Checked against the repository as it is now: an image deleted since the caller
            // looked may have freed a blob this manifest needs.
            if let Some(missing) = manifest
                .refs
                .iter()
                .find(|d| !entry.blobs.contains_key(*d) && !entry.manifests.contains_key(*d))
            {
                return Err(MetaError::ReferenceMissing {
                    repo: repo.clone(),
                    digest: *missing,
                });
            }
            let digest = manifest.digest;
            // Pushed again whole: whatever fsck found it lost is back.
            fsck::clear_damaged(conn, &repo, entry, &digest)?;
            let (media_type, artifact_type) =
                (manifest.media_type.clone(), manifest.artifact_type.clone());
            let mut changed = false;
            if let std::collections::hash_map::Entry::Vacant(slot) = entry.manifests.entry(digest) {
                insert_manifest_row(conn, &repo, &manifest)?;
                slot.insert(Arc::new(manifest));
                changed = true;
            }
            if let Some(tag) = &tag {
                changed |= entry.tags.get(tag) != Some(&digest);
                exec(
                    conn,
                    "INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                    params![repo.as_str(), tag.as_str(), digest.to_string(), now_millis()],
                )?;
                entry.tags.insert(tag.clone(), digest);
            }
            mirror::enqueue(conn, index, &repo, &digest, tag.as_ref());
            // The same image pushed again changes nothing: no event.
            if changed {
                let event = events::image_action(
                    &index.events,
                    "PUSH",
                    &repo,
                    &digest,
                    tag.as_ref(),
                    &media_type,
                    artifact_type.as_deref(),
                );
                events::record(conn, index, event)?;
            }
            Ok(())
        })
        .await
    }

    /// Points an existing tag or a new one at a manifest the repository holds.
    pub async fn tag_manifest(
        &self,
        repo: &RepoName,
        digest: Digest,
        tag: Tag,
    ) -> Result<(), MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            let entry = index
                .repos
                .get_mut(&repo)
                .ok_or_else(|| MetaError::RepoNotFound(repo.clone()))?;
            if !entry.manifests.contains_key(&digest) {
                return Err(MetaError::ManifestNotFound { repo, digest });
            }
            entry.check_tag(&repo, &tag, &digest)?;
            exec(
                conn,
                "INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                params![repo.as_str(), tag.as_str(), digest.to_string(), now_millis()],
            )?;
            let moved = entry.tags.insert(tag.clone(), digest) != Some(digest);
            let manifest = entry.manifests.get(&digest).cloned();
            mirror::enqueue(conn, index, &repo, &digest, Some(&tag));
            if let Some(manifest) = manifest.filter(|_| moved) {
                let event = events::image_action(
                    &index.events,
                    "PUSH",
                    &repo,
                    &digest,
                    Some(&tag),
                    &manifest.media_type,
                    manifest.artifact_type.as_deref(),
                );
                events::record(conn, index, event)?;
            }
            Ok(())
        })
        .await
    }

    /// Removes a tag. Returns the digest it pointed at.
    pub async fn delete_tag(&self, repo: &RepoName, tag: Tag) -> Result<Option<Digest>, MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            let Some(entry) = index.repos.get_mut(&repo) else {
                return Ok(None);
            };
            let removed = entry.tags.remove(&tag);
            if let Some(digest) = removed {
                exec(
                    conn,
                    "DELETE FROM tags WHERE repo = ?1 AND tag = ?2",
                    params![repo.as_str(), tag.as_str()],
                )?;
                let manifest = entry.manifests.get(&digest).cloned();
                if let Some(manifest) = manifest {
                    let mut event = events::image_action(
                        &index.events,
                        "DELETE",
                        &repo,
                        &digest,
                        Some(&tag),
                        &manifest.media_type,
                        manifest.artifact_type.as_deref(),
                    );
                    // The image stays, by its digest (and any other tag).
                    event.detail["ecrl-image-kept"] = true.into();
                    events::record(conn, index, event)?;
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Removes a manifest and every tag that points at it, and unlinks the blobs it
    /// referenced that no other manifest of the repository does: answers those blobs, with
    /// their sizes, or `None` when the repository did not hold the manifest.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: Digest,
    ) -> Result<Option<Vec<(Digest, u64)>>, MetaError> {
        self.delete_manifest_by(repo, digest, "user").await
    }

    /// [`Metadata::delete_manifest`], with who deleted it for the event (`user`, `lifecycle`).
    pub async fn delete_manifest_by(
        &self,
        repo: &RepoName,
        digest: Digest,
        cause: &'static str,
    ) -> Result<Option<Vec<(Digest, u64)>>, MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            let Some(entry) = index.repos.get_mut(&repo) else {
                return Ok(None);
            };
            if let Some(index) = entry
                .manifests
                .values()
                .find(|m| m.digest != digest && m.refs.contains(&digest))
            {
                return Err(MetaError::ManifestInUse {
                    repo: repo.clone(),
                    digest,
                    index: index.digest,
                });
            }
            let Some(manifest) = entry.manifests.remove(&digest) else {
                return Ok(None);
            };
            let tags: Vec<Tag> = entry
                .tags
                .iter()
                .filter(|(_, d)| **d == digest)
                .map(|(t, _)| t.clone())
                .collect();
            for tag in &tags {
                entry.tags.remove(tag);
            }
            exec(
                conn,
                "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2",
                params![repo.as_str(), digest.to_string()],
            )?;
            let freed = unlink_unreferenced(conn, &repo, entry, &manifest.refs)?;
            let mut event = events::image_action(
                &index.events,
                "DELETE",
                &repo,
                &digest,
                tags.first(),
                &manifest.media_type,
                manifest.artifact_type.as_deref(),
            );
            event.detail["image-tags"] = tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().into();
            event.detail["ecrl-cause"] = cause.into();
            events::record(conn, index, event)?;
            Ok(Some(freed))
        })
        .await
    }

    /// Blob links no manifest of their repository references, linked before `before` (unix
    /// ms): what garbage collection unlinks (uploads never followed by a manifest). Unlinks
    /// them unless `dry_run`; answers them by repository, with their sizes.
    pub async fn unlink_dangling(
        &self,
        before: i64,
        dry_run: bool,
    ) -> Result<Vec<(RepoName, Vec<(Digest, u64)>)>, MetaError> {
        self.write(move |conn, index| {
            let mut out = Vec::new();
            let mut linked_at = conn.prepare_cached(
                "SELECT linked_at FROM blob_links WHERE repo = ?1 AND digest = ?2",
            )?;
            for (name, entry) in index.repos.iter_mut() {
                let referenced: HashSet<&Digest> = entry
                    .manifests
                    .values()
                    .flat_map(|m| m.refs.iter())
                    .collect();
                let mut old = Vec::new();
                for digest in entry.blobs.keys() {
                    if referenced.contains(digest) || entry.manifests.contains_key(digest) {
                        continue;
                    }
                    let at: i64 = linked_at
                        .query_row(params![name.as_str(), digest.to_string()], |r| r.get(0))
                        .unwrap_or(i64::MAX);
                    if at < before {
                        old.push(*digest);
                    }
                }
                if old.is_empty() {
                    continue;
                }
                let freed = if dry_run {
                    old.iter()
                        .filter_map(|d| entry.blobs.get(d).map(|s| (*d, *s)))
                        .collect()
                } else {
                    unlink_unreferenced(conn, name, entry, &old)?
                };
                out.push((name.clone(), freed));
            }
            Ok(out)
        })
        .await
    }

    /// The blobs freed by deletes whose content has not been removed yet (see
    /// [`Self::forget_released`]).
    pub async fn released(&self) -> Result<HashSet<Digest>, MetaError> {
        self.released_since(0).await
    }

    /// The blobs deleted images freed at or after `since` (unix ms): with several instances
    /// sharing the metadata, the ones whose grace (see `AppState::release`) may still be
    /// running on another instance.
    pub async fn released_since(&self, since: i64) -> Result<HashSet<Digest>, MetaError> {
        self.write(move |conn, _| {
            let mut query =
                conn.prepare("SELECT digest FROM released_blobs WHERE released_at >= ?1")?;
            let rows = query.query_map([since], |row| row.get::<_, String>(0))?;
            let mut out = HashSet::new();
            for row in rows {
                if let Ok(digest) = row?.parse() {
                    out.insert(digest);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Forgets freed blobs once their content is removed or linked again (`None`: all).
    pub async fn forget_released(&self, digests: Option<Vec<Digest>>) -> Result<(), MetaError> {
        self.write(move |conn, _| {
            match digests {
                None => {
                    exec(conn, "DELETE FROM released_blobs", [])?;
                }
                Some(digests) => {
                    for digest in digests {
                        exec(
                            conn,
                            "DELETE FROM released_blobs WHERE digest = ?1",
                            [digest.to_string()],
                        )?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Unlinks those of `candidates` that the repository links but none of its manifests
    /// references (blobs a failed push linked); returns them with their sizes.
    pub async fn release_blobs(
        &self,
        repo: &RepoName,
        candidates: Vec<Digest>,
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| match index.repos.get_mut(&repo) {
            Some(entry) => unlink_unreferenced(conn, &repo, entry, &candidates),
            None => Ok(Vec::new()),
        })
        .await
    }

    /// Remembers that the layer whose uncompressed digest is `diff_id` is stored, compressed
    /// with `compression`, as `digest`.
    pub async fn remember_layer(
        &self,
        diff_id: Digest,
        compression: &str,
        digest: Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let key = (diff_id, compression.to_string());
        if self.read().layers.get(&key) == Some(&(digest, size)) {
            return Ok(());
        }
        self.write(move |conn, index| {
            exec(
                conn,
                "INSERT INTO layer_cache (diff_id, compression, digest, size)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (diff_id, compression) DO UPDATE SET digest = excluded.digest, size = excluded.size",
                params![key.0.to_string(), key.1, digest.to_string(), size as i64],
            )?;
            index.layers.insert(key, (digest, size));
            Ok(())
        })
        .await
    }

    /// Notes a pull; written to the database in the background by [`Metadata::flush_pulls`].
    pub fn record_pull(&self, repo: &RepoName, digest: Digest) {
        if let Ok(mut pulls) = self.pulls.lock() {
            pulls.insert((repo.clone(), digest), now_millis());
        }
    }

    /// Writes the pull times noted since the last flush.
    pub async fn flush_pulls(&self) -> Result<(), MetaError> {
        let pulls = match self.pulls.lock() {
            Ok(mut p) if !p.is_empty() => std::mem::take(&mut *p),
            _ => return Ok(()),
        };
        self.write(move |conn, index| {
            let mut stmt = conn.prepare_cached(
                "UPDATE manifests SET last_pulled_at = ?3 WHERE repo = ?1 AND digest = ?2",
            )?;
            for ((repo, digest), at) in pulls {
                stmt.execute(params![repo.as_str(), digest.to_string(), at])?;
                if let Some(m) = index
                    .repos
                    .get_mut(&repo)
                    .and_then(|r| r.manifests.get_mut(&digest))
                {
                    Arc::make_mut(m).last_pulled_at = Some(at);
                }
            }
            Ok(())
        })
        .await
    }

    /// The pull time of a manifest, counting pulls not yet flushed.
    pub fn last_pulled(&self, repo: &RepoName, manifest: &Manifest) -> Option<i64> {
        self.pulls
            .lock()
            .ok()
            .and_then(|p| p.get(&(repo.clone(), manifest.digest)).copied())
            .or(manifest.last_pulled_at)
    }
}

fn account_id(conn: &Db) -> Result<String, MetaError> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'account_id'",
            [],
            |r| r.get(0),
        )
        .ok();
    if let Some(id) = existing {
        return Ok(id);
    }
    let random = uuid::Uuid::new_v4().as_u128();
    let id = format!("{:012}", random % 1_000_000_000_000);
    exec(
        conn,
        "INSERT INTO settings (key, value) VALUES ('account_id', ?1)",
        [&id],
    )?;
    Ok(id)
}

fn set_mutability(
    conn: &Db,
    index: &mut Index,
    name: &RepoName,
    mutability: TagMutability,
    exclusions: Vec<String>,
) -> Result<Repo, MetaError> {
    let Some(repo) = index.repos.get_mut(name) else {
        return Err(MetaError::RepoNotFound(name.clone()));
    };
    exec(
        conn,
        "UPDATE repositories SET tag_mutability = ?2, mutability_exclusions = ?3 WHERE name = ?1",
        params![
            name.as_str(),
            mutability.as_str(),
            serde_json::to_string(&exclusions).unwrap_or_else(|_| "[]".into())
        ],
    )?;
    repo.mutability = mutability;
    repo.mutability_exclusions = exclusions;
    Ok(repo.clone())
}

fn insert_repo(
    conn: &Db,
    index: &mut Index,
    name: &RepoName,
    mutability: TagMutability,
    resource_tags: BTreeMap<String, String>,
) -> Result<Repo, MetaError> {
    let created_at = now_millis();
    exec(
        conn,
        "INSERT INTO repositories (name, created_at, tag_mutability, resource_tags) VALUES (?1, ?2, ?3, ?4)",
        params![
            name.as_str(),
            created_at,
            mutability.as_str(),
            serde_json::to_string(&resource_tags).unwrap_or_else(|_| "{}".into())
        ],
    )?;
    let repo = Repo {
        created_at,
        mutability,
        resource_tags,
        ..Default::default()
    };
    index.repos.insert(name.clone(), repo.clone());
    let event = events::repository_action(&index.events, "CREATE", name);
    events::record(conn, index, event)?;
    Ok(repo)
}

/// Runs one statement, prepared once per connection (the writer runs the same few
/// statements thousands of times a second under load).
/// The row of a manifest just recorded in `repo`.
fn insert_manifest_row(conn: &Db, repo: &RepoName, manifest: &Manifest) -> rusqlite::Result<usize> {
    exec(
        conn,
        "INSERT INTO manifests (repo, digest, media_type, artifact_type, subject, size,
            image_size, refs, annotations, pushed_at, last_pulled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)",
        params![
            repo.as_str(),
            manifest.digest.to_string(),
            manifest.media_type,
            manifest.artifact_type,
            manifest.subject.map(|d| d.to_string()),
            manifest.size as i64,
            manifest.image_size as i64,
            serde_json::to_string(&manifest.refs).unwrap_or_default(),
            manifest
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_string(a).ok()),
            manifest.pushed_at,
        ],
    )
}

fn exec(conn: &Db, sql: &'static str, params: impl db::Args) -> rusqlite::Result<usize> {
    conn.execute(sql, params)
}

fn writer(
    mut conn: Db,
    jobs: mpsc::Receiver<Work>,
    index: Arc<RwLock<Index>>,
    mut follow: Option<follow::Follow>,
    manifest_bytes: ManifestBytes,
) {
    const MAX_BATCH: usize = 512;
    // While writes come from several clients at once (the last batch held more than one),
    // a batch waits this long for more before it commits: one WAL fsync then covers them.
    const GATHER: std::time::Duration = std::time::Duration::from_micros(400);
    let mut busy = false;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let deadline = std::time::Instant::now() + GATHER;
        while batch.len() < MAX_BATCH {
            let next = if busy {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                jobs.recv_timeout(left).ok()
            } else {
                jobs.try_recv().ok()
            };
            match next {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        busy = batch.len() > 1;
        if let Some(f) = follow.as_mut() {
            if batch.iter().all(|w| matches!(w, Work::Refresh(_))) && f.nothing_new(&conn) {
                for work in batch {
                    if let Work::Refresh(reply) = work {
                        reply(Ok(()));
                    }
                }
                continue;
            }
        }
        let batch: Vec<Job> = batch.into_iter().map(Work::into_job).collect();
        let mut replies = Vec::with_capacity(batch.len());
        // PostgreSQL: what other instances committed is read before the index is locked.
        let begun = match follow.as_mut() {
            None => exec(&conn, "BEGIN IMMEDIATE", [])
                .map(|_| None)
                .map_err(MetaError::from),
            Some(f) => f.ensure_connected(&mut conn).and_then(|()| {
                exec(&conn, "BEGIN", [])?;
                f.gather(&conn, &index, &manifest_bytes).map(Some)
            }),
        };
        let mut guard = index.write().unwrap_or_else(|e| e.into_inner());
        let begun = begun.map(|pending| {
            if let (Some(f), Some(pending)) = (follow.as_mut(), pending) {
                f.apply(pending, &mut guard);
            }
        });
        if let Err(e) = begun {
            let _ = conn.execute_batch("ROLLBACK");
            drop(guard);
            let failure = Failure::of(&conn, format!("cannot begin a transaction: {e}"));
            for job in batch {
                let (_, reply) = job(None);
                reply(Err(failure.clone()));
            }
            continue;
        }
        for job in batch {
            let _ = exec(&conn, "SAVEPOINT job", []);
            let (ok, reply) = job(Some((&conn, &mut guard)));
            let _ = if ok {
                exec(&conn, "RELEASE job", [])
            } else {
                exec(&conn, "ROLLBACK TO job", []).and_then(|_| exec(&conn, "RELEASE job", []))
            };
            replies.push((ok, reply));
        }
        let committed = exec(&conn, "COMMIT", [])
            .map(|_| ())
            .map_err(|e| Failure::of(&conn, e.to_string()));
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
            // The index ran ahead of a transaction that did not commit: rebuild it (for
            // PostgreSQL, before the next batch, once the database answers again).
            match follow.as_mut() {
                Some(f) => f.full_reload = true,
                None => match load(&conn, &|d: &Digest| {
                    Ok(guard
                        .repos
                        .values()
                        .find_map(|r| r.manifests.get(d).map(|m| m.bytes.clone()))
                        .unwrap_or_default())
                }) {
                    Ok(fresh) => {
                        let events = std::mem::take(&mut guard.events);
                        *guard = fresh;
                        guard.events = events;
                    }
                    Err(e) => tracing::error!("cannot reload metadata after a failed commit: {e}"),
                },
            }
        }
        drop(guard);
        for (ok, reply) in replies {
            reply(if ok { committed.clone() } else { Ok(()) });
        }
    }
}

/// Why a batch did not commit, as its callers hear it.
#[derive(Debug, Clone)]
enum Failure {
    Db(String),
    /// The database cannot be reached (PostgreSQL down or the connection lost).
    Unavailable(String),
}

impl Failure {
    fn of(conn: &Db, message: String) -> Failure {
        match conn {
            Db::Pg(pg) if pg.client().is_closed() => Failure::Unavailable(message),
            _ => Failure::Db(message),
        }
    }
}

impl From<Failure> for MetaError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Db(m) => MetaError::Db(m),
            Failure::Unavailable(m) => MetaError::Unavailable(m),
        }
    }
}

/// Runs `each` on every row of `sql` (`SELECT repo, digest, value FROM ...`) whose names
/// parse and whose repository the index holds: the repository, the digest, the value.
pub(super) fn per_repo_digest<T: rusqlite::types::FromSql>(
    conn: &Db,
    index: &mut Index,
    sql: &'static str,
    only: Option<&str>,
    mut each: impl FnMut(&mut Repo, Digest, T),
) -> Result<(), MetaError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, T>(2)?,
        ))
    })?;
    for row in rows {
        let (repo, digest, value) = row?;
        if let (Ok(repo), Ok(digest)) = (repo.parse::<RepoName>(), digest.parse::<Digest>()) {
            if let Some(r) = index.repos.get_mut(&repo) {
                each(r, digest, value);
            }
        }
    }
    Ok(())
}

/// Everything the database holds, as the index.
fn load(
    conn: &Db,
    manifest_bytes: &dyn Fn(&Digest) -> std::io::Result<Bytes>,
) -> Result<Index, MetaError> {
    let mut index = Index::default();
    load_repos(conn, &mut index, None, manifest_bytes, &HashMap::new())?;
    load_layers(conn, &mut index)?;
    tasks::load(conn, &mut index)?;
    clusters::load(conn, &mut index)?;
    secrets::load(conn, &mut index)?;
    auth::load(conn, &mut index)?;
    mirror::load(conn, &mut index)?;
    Ok(index)
}

/// Repositories with their links, manifests, tags and policies: all of them, or `only` one
/// (which the index must not hold when called). A manifest `known` holds is taken from there
/// rather than read from the store again.
fn load_repos(
    conn: &Db,
    index: &mut Index,
    only: Option<&str>,
    manifest_bytes: &dyn Fn(&Digest) -> std::io::Result<Bytes>,
    known: &HashMap<Digest, Arc<Manifest>>,
) -> Result<(), MetaError> {
    let mut stmt = conn.prepare(
        "SELECT name, created_at, tag_mutability, resource_tags, mutability_exclusions
         FROM repositories WHERE CAST(?1 AS TEXT) IS NULL OR name = ?1",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    for row in rows {
        let (name, created_at, mutability, tags, exclusions) = row?;
        let Ok(name) = name.parse::<RepoName>() else {
            continue;
        };
        index.repos.insert(
            name,
            Repo {
                created_at,
                mutability: TagMutability::parse(&mutability).unwrap_or_default(),
                mutability_exclusions: serde_json::from_str(&exclusions).unwrap_or_default(),
                resource_tags: serde_json::from_str(&tags).unwrap_or_default(),
                ..Default::default()
            },
        );
    }
    per_repo_digest(
        conn,
        index,
        "SELECT repo, digest, size FROM blob_links WHERE CAST(?1 AS TEXT) IS NULL OR repo = ?1",
        only,
        |repo, digest, size: i64| {
            repo.blobs.insert(digest, size as u64);
        },
    )?;
    let mut stmt = conn.prepare(
        "SELECT repo, digest, media_type, artifact_type, subject, size, image_size, refs,
                annotations, pushed_at, last_pulled_at FROM manifests
         WHERE CAST(?1 AS TEXT) IS NULL OR repo = ?1",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, i64>(9)?,
            r.get::<_, Option<i64>>(10)?,
        ))
    })?;
    for row in rows {
        let (
            repo,
            digest,
            media_type,
            artifact_type,
            subject,
            size,
            image_size,
            refs,
            annotations,
            pushed_at,
            last_pulled_at,
        ) = row?;
        let (Ok(repo), Ok(digest)) = (repo.parse::<RepoName>(), digest.parse::<Digest>()) else {
            continue;
        };
        let bytes = match known.get(&digest) {
            Some(m) => Ok(m.bytes.clone()),
            None => manifest_bytes(&digest),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%repo, %digest, "manifest content missing from the store: {e}");
                continue;
            }
        };
        if let Some(r) = index.repos.get_mut(&repo) {
            r.manifests.insert(
                digest,
                Arc::new(Manifest {
                    digest,
                    media_type,
                    artifact_type,
                    subject: subject.and_then(|s| s.parse().ok()),
                    size: size as u64,
                    image_size: image_size as u64,
                    refs: serde_json::from_str(&refs).unwrap_or_default(),
                    annotations: annotations.and_then(|a| serde_json::from_str(&a).ok()),
                    pushed_at,
                    last_pulled_at,
                    bytes,
                }),
            );
        }
    }
    let mut stmt = conn.prepare(
        "SELECT repo, tag, digest FROM tags WHERE CAST(?1 AS TEXT) IS NULL OR repo = ?1",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (repo, tag, digest) = row?;
        if let (Ok(repo), Ok(tag), Ok(digest)) = (
            repo.parse::<RepoName>(),
            tag.parse::<Tag>(),
            digest.parse::<Digest>(),
        ) {
            if let Some(r) = index.repos.get_mut(&repo) {
                if r.manifests.contains_key(&digest) {
                    r.tags.insert(tag, digest);
                }
            }
        }
    }
    auth::load_repo_policies(conn, index, only)?;
    lifecycle::load(conn, index, only)?;
    fsck::load(conn, index, only)?;
    Ok(())
}

/// The layers compressed on push (see `remember_layer`).
fn load_layers(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
    let mut stmt = conn.prepare("SELECT diff_id, compression, digest, size FROM layer_cache")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (diff_id, compression, digest, size) = row?;
        if let (Ok(diff_id), Ok(digest)) = (diff_id.parse::<Digest>(), digest.parse::<Digest>()) {
            index
                .layers
                .insert((diff_id, compression), (digest, size as u64));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn open(dir: &Path) -> Metadata {
        Metadata::open(dir, |_| Ok(Bytes::from_static(b"{}"))).unwrap()
    }

    fn manifest(n: u8) -> Manifest {
        Manifest {
            digest: Digest::from_bytes([n; 32]),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            size: 2,
            image_size: 2,
            refs: vec![],
            annotations: None,
            pushed_at: now_millis(),
            last_pulled_at: None,
            bytes: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn state_survives_reopening_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let account = {
            let meta = open(dir.path());
            meta.ensure_repo(&repo, true).await.unwrap();
            meta.link_blob(&repo, Digest::from_bytes([9; 32]), 42)
                .await
                .unwrap();
            meta.put_manifest(&repo, manifest(1), Some("v1".parse().unwrap()))
                .await
                .unwrap();
            meta.account_id().to_string()
        };
        let meta = open(dir.path());
        assert_eq!(meta.account_id(), account);
        let configured = open(dir.path()).with_account_id(Some("123456789012".into()));
        assert_eq!(configured.account_id(), "123456789012");
        drop(configured);
        let meta = open(dir.path()).with_account_id(None);
        assert_eq!(
            meta.account_id(),
            account,
            "the stored one, when unset again"
        );
        let index = meta.read();
        let r = &index.repos[&repo];
        assert_eq!(r.blobs[&Digest::from_bytes([9; 32])], 42);
        assert_eq!(
            r.tags[&"v1".parse::<Tag>().unwrap()],
            Digest::from_bytes([1; 32])
        );
        let conn = rusqlite::Connection::open(dir.path().join("metadata.db")).unwrap();
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::latest());
    }

    #[tokio::test]
    async fn concurrent_writes_commit_together_and_a_failing_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(open(dir.path()));
        let repo: RepoName = "r".parse().unwrap();
        meta.create_repo(
            repo.clone(),
            TagMutability::Immutable,
            Vec::new(),
            BTreeMap::new(),
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..64u8 {
            let (meta, repo) = (meta.clone(), repo.clone());
            tasks.push(tokio::spawn(async move {
                meta.link_blob(&repo, Digest::from_bytes([i; 32]), i as u64)
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        meta.put_manifest(&repo, manifest(1), Some("t".parse().unwrap()))
            .await
            .unwrap();
        let err = meta
            .put_manifest(&repo, manifest(2), Some("t".parse().unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, MetaError::TagImmutable { .. }));
        assert!(matches!(
            meta.create_repo(
                repo.clone(),
                TagMutability::Mutable,
                Vec::new(),
                BTreeMap::new()
            )
            .await,
            Err(MetaError::RepoExists(_))
        ));
        drop(meta);
        let meta = open(dir.path());
        let index = meta.read();
        assert_eq!(index.repos[&repo].blobs.len(), 64);
        assert_eq!(
            index.repos[&repo].manifests.len(),
            1,
            "the refused manifest left nothing"
        );
    }

    /// Deleting a manifest unlinks what it alone referenced, in the same write as the
    /// delete; a manifest recorded after that, naming a freed blob, is refused there rather
    /// than left pointing at content that is about to go.
    #[tokio::test]
    async fn a_deleted_manifest_frees_what_only_it_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let repo: RepoName = "team/app".parse().unwrap();
        meta.ensure_repo(&repo, true).await.unwrap();
        let (shared, own, loose) = (
            Digest::from_bytes([7; 32]),
            Digest::from_bytes([8; 32]),
            Digest::from_bytes([9; 32]),
        );
        for (d, size) in [(shared, 10), (own, 20), (loose, 30)] {
            meta.link_blob(&repo, d, size).await.unwrap();
        }
        let mut a = manifest(1);
        a.refs = vec![shared, own];
        let mut b = manifest(2);
        b.refs = vec![shared];
        meta.put_manifest(&repo, a, None).await.unwrap();
        meta.put_manifest(&repo, b, None).await.unwrap();

        let freed = meta
            .delete_manifest(&repo, Digest::from_bytes([1; 32]))
            .await;
        assert_eq!(freed.unwrap(), Some(vec![(own, 20)]));
        let linked: HashSet<Digest> = meta.read().repos[&repo].blobs.keys().copied().collect();
        // A blob no manifest ever referenced (a push in progress) is not the delete's to free.
        assert_eq!(linked, HashSet::from([shared, loose]));

        let mut c = manifest(3);
        c.refs = vec![shared, own];
        match meta.put_manifest(&repo, c, None).await {
            Err(MetaError::ReferenceMissing { digest, .. }) => assert_eq!(digest, own),
            other => panic!("{other:?}"),
        }
        assert!(!meta.read().repos[&repo]
            .manifests
            .contains_key(&Digest::from_bytes([3; 32])));
        assert_eq!(
            meta.release_blobs(&repo, vec![shared, loose])
                .await
                .unwrap(),
            vec![(loose, 30)],
            "shared is still referenced by b"
        );
    }
}
