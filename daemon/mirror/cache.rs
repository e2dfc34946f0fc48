//! Pull-through cache rules (ECR's CreatePullThroughCacheRule): a pull of
//! `PREFIX/REPO:TAG` that this registry cannot answer is answered from the rule's upstream,
//! `UPSTREAM/[UPSTREAM_PREFIX/]REPO:TAG`, and kept.
//!
//! Manifests are fetched (and recorded before their blobs are here); each blob is fetched when
//! it is first pulled, streamed to that client while it is stored, and checked against its
//! digest before it is kept (a mismatch breaks the client's body off and keeps nothing).
//! Concurrent pulls of the same manifest or blob share one upstream fetch. A tag is checked
//! against the upstream at most once per its rule's TTL; a digest already here never is; when
//! the upstream fails, what is cached is served as it is.

use super::MirrorError;
use crate::app::AppState;
use crate::metadata::mirror::CachedTag;
use crate::metadata::{now_millis, Manifest};
use crate::storage::StoreError;
use crate::transfer::remote::{Remote, RemoteError, Verified};
use bytes::Bytes;
use ecrl::api::mirror::{CacheRule, CacheRuleValidation, CreateCacheRuleRequest};
use ecrl::manifest::Kind;
use ecrl::names::{Digest, Reference, RepoName};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Rules at most.
pub const MAX_RULES: usize = 50;
/// A tag is checked against its upstream this often, unless the rule says otherwise (ECR's).
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a freshness check may take before the cached tag is served as it is.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The upstream could not give what was asked, and nothing of it is cached.
    #[error("the pull-through cache's upstream {upstream} failed: {error}")]
    Upstream {
        upstream: String,
        error: RemoteError,
    },
    /// Neither here nor upstream.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for CacheError {
    fn from(e: StoreError) -> Self {
        CacheError::Store(e.to_string())
    }
}

impl From<crate::metadata::MetaError> for CacheError {
    fn from(e: crate::metadata::MetaError) -> Self {
        CacheError::Store(e.to_string())
    }
}

/// What is being fetched now, so that concurrent pulls share one fetch.
#[derive(Default)]
pub struct InFlight {
    manifests: super::keyed::KeyedLocks<(RepoName, String)>,
    /// A blob's fetch: `None` while it runs, then whether it is kept.
    blobs: Mutex<HashMap<Digest, watch::Receiver<Option<bool>>>>,
}

impl InFlight {
    /// The blobs being fetched now.
    pub fn fetching(&self) -> std::collections::HashSet<Digest> {
        self.blobs
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// The caches hold more: they are kept within `registry.cache_max_bytes`, if set.
fn grew(state: &Arc<AppState>) {
    crate::lifecycle::caches_grew(state);
}

/// ECR's prefix rule: lowercase components joined by `/`, 2 to 30 characters.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let valid = (2..=30).contains(&prefix.len())
        && prefix.parse::<RepoName>().is_ok()
        && !prefix.ends_with('/');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "repository prefix {prefix:?}: 2 to 30 characters of lowercase letters, digits and \
             separators, as a repository name"
        ))
    }
}

pub async fn create(
    state: &AppState,
    req: CreateCacheRuleRequest,
) -> Result<CacheRule, MirrorError> {
    let invalid = MirrorError::Invalid;
    check_prefix(&req.ecr_repository_prefix).map_err(invalid)?;
    let upstream = ecrl::remote::parse_registry(&req.upstream_registry_url)
        .map_err(|e| invalid(format!("upstream: {e}")))?;
    if state.own_hosts().contains(&upstream) {
        return Err(invalid(format!(
            "{upstream} is this registry: a cache cannot pull from itself"
        )));
    }
    if let Some(p) = &req.upstream_repository_prefix {
        p.parse::<RepoName>()
            .map_err(|e| invalid(format!("upstream repository prefix {p:?}: {e}")))?;
    }
    let credential_registry = match &req.credential_registry {
        Some(r) => {
            Some(ecrl::remote::parse_registry(r).map_err(|e| invalid(format!("--login: {e}")))?)
        }
        None => None,
    };
    let ttl = match &req.tag_ttl {
        None => DEFAULT_TAG_TTL,
        Some(text) => ecrl::config::parse_duration(text)
            .filter(|d| d.as_secs() > 0)
            .ok_or_else(|| invalid(format!("--tag-ttl {text:?}: a duration such as 1h or 24h")))?,
    };
    {
        let index = state.meta.read();
        let rules = &index.mirror.cache_rules;
        if rules.contains_key(&req.ecr_repository_prefix) {
            return Err(invalid(format!(
                "a cache rule for {} exists already: delete it first",
                req.ecr_repository_prefix
            )));
        }
        if rules.len() >= MAX_RULES {
            return Err(invalid(format!(
                "there are {MAX_RULES} cache rules already"
            )));
        }
        if req.docker_hub_mirror && rules.values().any(|r| r.docker_hub_mirror) {
            return Err(invalid(
                "another rule is the Docker Hub mirror already".into(),
            ));
        }
        // Images already pushed under the prefix would be shadowed: refused.
        let taken = index.repos.keys().find(|r| {
            r.as_str()
                .strip_prefix(req.ecr_repository_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if let Some(repo) = taken {
            return Err(invalid(format!(
                "repository {repo} exists under {}: a cache rule takes a prefix nothing was \
                 pushed under",
                req.ecr_repository_prefix
            )));
        }
    }
    let now = ecrl::timestamp::from_millis(now_millis());
    let rule = CacheRule {
        ecr_repository_prefix: req.ecr_repository_prefix,
        upstream_registry_url: upstream,
        upstream_repository_prefix: req.upstream_repository_prefix,
        credential_registry,
        tag_ttl_seconds: ttl.as_secs(),
        docker_hub_mirror: req.docker_hub_mirror,
        registry_id: state.meta.account_id().to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    state
        .meta
        .put_cache_rule(rule)
        .await
        .map_err(|e| invalid(e.to_string()))
}

pub fn list(state: &AppState) -> Vec<CacheRule> {
    state
        .meta
        .read()
        .mirror
        .cache_rules
        .values()
        .cloned()
        .collect()
}

pub async fn delete(state: &AppState, prefix: &str) -> Result<CacheRule, MirrorError> {
    state
        .meta
        .delete_cache_rule(prefix.to_string())
        .await
        .map_err(|e| MirrorError::Invalid(e.to_string()))?
        .ok_or_else(|| MirrorError::Invalid(format!("there is no cache rule for {prefix}")))
}

/// Reaches the rule's upstream with its credentials.
pub async fn validate(state: &AppState, prefix: &str) -> Result<CacheRuleValidation, MirrorError> {
    let rule = state
        .meta
        .read()
        .mirror
        .cache_rules
        .get(prefix)
        .cloned()
        .ok_or_else(|| MirrorError::Invalid(format!("there is no cache rule for {prefix}")))?;
    let failure = match upstream(state, &rule).await {
        Ok(remote) => remote.check_login().await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    Ok(CacheRuleValidation {
        ecr_repository_prefix: rule.ecr_repository_prefix,
        upstream_registry_url: rule.upstream_registry_url,
        is_valid: failure.is_none(),
        failure,
    })
}

async fn upstream(state: &AppState, rule: &CacheRule) -> Result<Arc<Remote>, MirrorError> {
    state
        .mirror
        .remote_as(
            &rule.upstream_registry_url,
            rule.credential_registry.as_deref(),
        )
        .await
}

/// The repository upstream that `repo` (under the rule's prefix) mirrors.
pub fn upstream_repo(rule: &CacheRule, repo: &RepoName) -> Option<RepoName> {
    let rest = repo
        .as_str()
        .strip_prefix(rule.ecr_repository_prefix.as_str())?
        .strip_prefix('/')?;
    let name = match &rule.upstream_repository_prefix {
        Some(p) => format!("{}/{rest}", p.trim_end_matches('/')),
        // Docker Hub's official images live under library/, as docker reads `alpine`.
        None if rule.upstream_registry_url == ecrl::remote::DOCKER_HUB && !rest.contains('/') => {
            format!("library/{rest}")
        }
        None => rest.to_string(),
    };
    name.parse().ok()
}

fn upstream_error(rule: &CacheRule, e: MirrorError) -> CacheError {
    match e {
        MirrorError::Remote(error) => CacheError::Upstream {
            upstream: rule.upstream_registry_url.clone(),
            error,
        },
        e => CacheError::Invalid(e.to_string()),
    }
}

/// What the registry must do before it answers a manifest request under a rule: nothing (it
/// is here and fresh), or fetch it.
pub fn needs_upstream(
    state: &AppState,
    rule: &CacheRule,
    repo: &RepoName,
    reference: &Reference,
) -> bool {
    let index = state.meta.read();
    let Some(r) = index.repos.get(repo) else {
        return true;
    };
    match reference {
        Reference::Digest(d) => !r.manifests.contains_key(d),
        Reference::Tag(t) => {
            if !r.tags.contains_key(t) {
                return true;
            }
            let ttl = rule.tag_ttl_seconds.saturating_mul(1000) as i64;
            match index.mirror.cache_tags.get(&(repo.clone(), t.clone())) {
                Some(CachedTag { checked_at, .. }) => now_millis() - checked_at >= ttl,
                None => true,
            }
        }
    }
}

/// Makes the manifest `reference` names in `repo` present and, for a tag, fresh: fetched from
/// the upstream when it is not here or its TTL passed. A cached one is served as it is when
/// the upstream fails.
pub async fn manifest(
    state: &Arc<AppState>,
    rule: &CacheRule,
    repo: &RepoName,
    reference: &Reference,
) -> Result<(), CacheError> {
    let up_repo = upstream_repo(rule, repo).ok_or_else(|| {
        CacheError::Invalid(format!(
            "{repo} is not a repository name upstream of the {} cache rule",
            rule.ecr_repository_prefix
        ))
    })?;
    // One fetch per manifest at a time; who waited finds it here.
    let _guard = state
        .mirror
        .in_flight
        .manifests
        .lock((repo.clone(), reference.to_string()))
        .await;
    if !needs_upstream(state, rule, repo, reference) {
        crate::metrics::METRICS.cache("manifest", crate::metrics::CacheOutcome::hit);
        return Ok(());
    }
    // Only a tag can be here and stale (a digest here is never fetched again).
    let cached: Option<Digest> = match reference {
        Reference::Tag(_) => state
            .meta
            .read()
            .repos
            .get(repo)
            .and_then(|r| r.manifest(reference))
            .map(|m| m.digest),
        Reference::Digest(_) => None,
    };
    let upstream_name = format!("{}/{up_repo}:{reference}", rule.upstream_registry_url);
    let stale = |why: &str| {
        crate::metrics::METRICS.cache("manifest", crate::metrics::CacheOutcome::stale);
        tracing::warn!(
            repository = %repo,
            reference = %reference,
            upstream = %upstream_name,
            "served the cached image as it is: the upstream {why}"
        );
    };
    let remote = match upstream(state, rule).await {
        Ok(r) => r,
        Err(e) if cached.is_some() => {
            stale(&format!("cannot be reached ({e})"));
            return Ok(());
        }
        Err(e) => return Err(upstream_error(rule, e)),
    };
    if let (Some(digest), Reference::Tag(tag)) = (cached, reference) {
        let head =
            tokio::time::timeout(CHECK_TIMEOUT, remote.manifest_head(&up_repo, tag.as_str())).await;
        match head {
            Ok(Ok(Some(h))) if h.digest == digest => {
                state.meta.cache_tag_checked(repo, tag).await?;
                crate::metrics::METRICS.cache("manifest", crate::metrics::CacheOutcome::hit);
                return Ok(());
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                stale("no longer has the tag");
                return Ok(());
            }
            Ok(Err(e)) => {
                stale(&format!("failed ({e})"));
                return Ok(());
            }
            Err(_) => {
                stale(&format!(
                    "did not answer within {}s",
                    CHECK_TIMEOUT.as_secs()
                ));
                return Ok(());
            }
        }
    }
    let fetched = match remote.manifest(&up_repo, &reference.to_string()).await {
        Ok(m) => {
            crate::metrics::METRICS.cache("manifest", crate::metrics::CacheOutcome::miss);
            m
        }
        Err(e) if cached.is_some() => {
            stale(&format!("failed ({e})"));
            return Ok(());
        }
        Err(RemoteError::NotFound(what)) => {
            return Err(CacheError::NotFound(format!(
                "{what} (pull-through cache {} -> {})",
                rule.ecr_repository_prefix, rule.upstream_registry_url
            )))
        }
        Err(error) => {
            return Err(CacheError::Upstream {
                upstream: rule.upstream_registry_url.clone(),
                error,
            })
        }
    };
    let (doc, media_type, kind) = ecrl::manifest::parse(Some(&fetched.media_type), &fetched.bytes)
        .map_err(|e| CacheError::Invalid(format!("{upstream_name}: {}", e.0)))?;
    let descriptors: Vec<&ecrl::manifest::Descriptor> = match kind {
        Kind::Image => doc
            .config
            .iter()
            .chain(doc.layers.iter().flatten())
            .collect(),
        Kind::Index => doc.manifests.iter().flatten().collect(),
    };
    let mut refs = Vec::new();
    let mut bytes = 0u64;
    for d in descriptors {
        if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
            continue;
        }
        let digest = d
            .parsed_digest("descriptor")
            .map_err(|e| CacheError::Invalid(format!("{upstream_name}: {}", e.0)))?;
        refs.push(digest);
        bytes += d.size.unwrap_or(0).max(0) as u64;
    }
    let size = fetched.bytes.len() as u64;
    {
        let _blob = state.lock_blob(&fetched.digest).await;
        if state
            .store
            .stat(&fetched.digest)
            .await
            .map_err(StoreError::Io)?
            .is_none()
        {
            state
                .store
                .put(fetched.bytes.clone(), Some(&fetched.digest))
                .await?;
        }
    }
    let subject = doc.subject.as_ref().and_then(|s| s.digest.parse().ok());
    let artifact_type = doc
        .artifact_type
        .clone()
        .or_else(|| doc.config.as_ref().and_then(|c| c.media_type.clone()));
    let record = Manifest {
        digest: fetched.digest,
        media_type,
        artifact_type,
        subject,
        size,
        image_size: size + bytes,
        refs,
        annotations: doc.annotations,
        pushed_at: now_millis(),
        last_pulled_at: None,
        bytes: fetched.bytes,
    };
    let tag = match reference {
        Reference::Tag(t) => Some((t.clone(), upstream_name.clone())),
        Reference::Digest(_) => None,
    };
    state.meta.put_cached_manifest(repo, record, tag).await?;
    grew(state);
    tracing::info!(
        repository = %repo,
        reference = %reference,
        upstream = %upstream_name,
        digest = %fetched.digest,
        "pull-through cache: fetched a manifest"
    );
    Ok(())
}

/// The size of a blob a cached manifest of `repo` references, when one does.
pub fn referenced_size(state: &AppState, repo: &RepoName, digest: &Digest) -> Option<u64> {
    let index = state.meta.read();
    let r = index.repos.get(repo)?;
    r.manifests
        .values()
        .filter(|m| m.refs.contains(digest))
        .find_map(|m| {
            let (doc, _, _) = ecrl::manifest::parse(Some(&m.media_type), &m.bytes).ok()?;
            doc.config
                .iter()
                .chain(doc.layers.iter().flatten())
                .find(|d| d.digest == digest.to_string())
                .and_then(|d| d.size)
                .filter(|s| *s >= 0)
                .map(|s| s as u64)
        })
}

/// How a blob pull under a rule is answered.
pub enum BlobAnswer {
    /// It is here now (linked into the repository): serve it from the store.
    Here,
    /// Being fetched for this client: the bytes as they arrive.
    Streaming(mpsc::Receiver<std::io::Result<Bytes>>),
}

/// Makes a blob that a cached manifest of `repo` references available: linked from the store
/// when it is there, else fetched from the upstream. The first puller gets it streamed as it
/// arrives (`stream` true); others wait for that fetch and read it from the store.
pub async fn blob(
    state: &Arc<AppState>,
    rule: &CacheRule,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
    stream: bool,
) -> Result<BlobAnswer, CacheError> {
    loop {
        // Here already (another repository, or a fetch that just ended): linked.
        {
            let _guard = state.lock_blob(digest).await;
            if state.store.stat(digest).await.map_err(StoreError::Io)? == Some(size) {
                state.meta.link_blob(repo, *digest, size).await?;
                grew(state);
                crate::metrics::METRICS.cache("blob", crate::metrics::CacheOutcome::hit);
                return Ok(BlobAnswer::Here);
            }
        }
        // Someone fetches it already (wait for them), or this pull does.
        let waiting: Result<watch::Receiver<Option<bool>>, watch::Sender<Option<bool>>> = {
            let mut map = state
                .mirror
                .in_flight
                .blobs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match map.get(digest) {
                Some(rx) => Ok(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(*digest, rx);
                    Err(tx)
                }
            }
        };
        let mut rx = match waiting {
            Ok(rx) => rx,
            Err(tx) => return start_fetch(state, rule, repo, digest, size, stream, tx).await,
        };
        {
            let done = rx.wait_for(|v| v.is_some()).await.map(|v| *v);
            match done {
                Ok(Some(true)) => continue,
                Err(_) => {
                    // Whoever began it went away before the fetch started (its client left
                    // while the upstream was being reached): forget it, and fetch here.
                    if let Ok(mut map) = state.mirror.in_flight.blobs.lock() {
                        if map.get(digest).is_some_and(|r| r.has_changed().is_err()) {
                            map.remove(digest);
                        }
                    }
                    continue;
                }
                Ok(_) => {
                    return Err(CacheError::Upstream {
                        upstream: rule.upstream_registry_url.clone(),
                        error: RemoteError::Protocol {
                            registry: rule.upstream_registry_url.clone(),
                            detail: format!("fetching blob {digest} failed"),
                        },
                    })
                }
            }
        }
    }
}

async fn start_fetch(
    state: &Arc<AppState>,
    rule: &CacheRule,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
    stream: bool,
    done: watch::Sender<Option<bool>>,
) -> Result<BlobAnswer, CacheError> {
    let finish =
        |state: &Arc<AppState>, digest: Digest, ok: bool, done: watch::Sender<Option<bool>>| {
            let _ = done.send(Some(ok));
            if let Ok(mut map) = state.mirror.in_flight.blobs.lock() {
                map.remove(&digest);
            }
        };
    let Some(up_repo) = upstream_repo(rule, repo) else {
        finish(state, *digest, false, done);
        return Err(CacheError::Invalid(format!("{repo} has no upstream name")));
    };
    let remote = match upstream(state, rule).await {
        Ok(r) => r,
        Err(e) => {
            finish(state, *digest, false, done);
            return Err(upstream_error(rule, e));
        }
    };
    let source = match remote.blob(&up_repo, digest, 0).await {
        Ok(s) => s,
        Err(error) => {
            finish(state, *digest, false, done);
            return Err(CacheError::Upstream {
                upstream: rule.upstream_registry_url.clone(),
                error,
            });
        }
    };
    let what = format!("{}/{up_repo}", rule.upstream_registry_url);
    let mut source = Verified::length(source, *digest, size, what);
    let (client_tx, client_rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let digest = *digest;
    // Who does not stream waits for the fetch's end.
    let mut ended = done.subscribe();
    // The fetch runs on its own: a client that goes away does not stop it (others wait on it,
    // and the blob is kept for the next pull).
    let fetch_state = state.clone();
    let fetch_repo = repo.clone();
    tokio::spawn(async move {
        let state = fetch_state;
        let repo = fetch_repo;
        let id = match state.store.upload_start().await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(%digest, "pull-through cache: cannot store a blob: {e}");
                finish(&state, digest, false, done);
                return;
            }
        };
        let (store_tx, store_rx) = mpsc::channel::<Result<Bytes, String>>(4);
        let writer = {
            let state = state.clone();
            tokio::spawn(async move {
                let body = futures_util::stream::unfold(store_rx, |mut rx| async {
                    rx.recv().await.map(|item| (item, rx))
                });
                state.store.upload_write(&id, None, body).await
            })
        };
        let mut client = stream.then_some(client_tx);
        // The last chunk waits for the digest check: a client never gets a whole body that
        // was not what the digest names.
        let mut held: Option<Bytes> = None;
        let mut failure: Option<String> = None;
        let mut chunks = 0u64;
        while let Some(chunk) = source.next().await {
            match chunk {
                Ok(chunk) => {
                    chunks += 1;
                    if store_tx.send(Ok(chunk.clone())).await.is_err() {
                        failure = Some("the store stopped taking it".into());
                        break;
                    }
                    if let Some(previous) = held.replace(chunk) {
                        if let Some(c) = &client {
                            if c.send(Ok(previous)).await.is_err() {
                                client = None;
                            }
                        }
                    }
                }
                Err(e) => {
                    let _ = store_tx.send(Err(e.to_string())).await;
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        drop(store_tx);
        let written = writer.await;
        let kept = match (failure, written) {
            (None, Ok(Ok(_))) => {
                let _guard = state.lock_blob(&digest).await;
                match state.store.upload_finish(&id, &digest).await {
                    Ok(_) => state
                        .meta
                        .link_blob(&repo, digest, size)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            (Some(why), _) => {
                let _ = state.store.upload_cancel(&id).await;
                Err(why)
            }
            (None, Ok(Err(e))) => Err(e.to_string()),
            (None, Err(e)) => Err(e.to_string()),
        };
        match &kept {
            Ok(()) => {
                tracing::info!(repository = %repo, %digest, size, chunks, "pull-through cache: fetched a blob");
                crate::metrics::METRICS.cache("blob", crate::metrics::CacheOutcome::miss);
                grew(&state);
                // Its next pull (the first from the store, when the first client had it
                // streamed) is to be served from memory, as a hot blob's.
                state.store.warm_blob(&digest);
                if let (Some(c), Some(last)) = (&client, held.take()) {
                    let _ = c.send(Ok(last)).await;
                }
            }
            Err(why) => {
                tracing::warn!(repository = %repo, %digest, "pull-through cache: a blob was not kept: {why}");
                if let Some(c) = &client {
                    let _ = c
                        .send(Err(std::io::Error::other(format!(
                            "the upstream's blob {digest} was not kept: {why}"
                        ))))
                        .await;
                }
            }
        }
        finish(&state, digest, kept.is_ok(), done);
    });
    if stream {
        Ok(BlobAnswer::Streaming(client_rx))
    } else {
        // Wait for it, then serve it from the store.
        let _ = ended.wait_for(|v| v.is_some()).await;
        let here = state
            .meta
            .read()
            .repos
            .get(repo)
            .is_some_and(|r| r.blobs.contains_key(&digest));
        if here {
            Ok(BlobAnswer::Here)
        } else {
            Err(CacheError::Upstream {
                upstream: rule.upstream_registry_url.clone(),
                error: RemoteError::Protocol {
                    registry: rule.upstream_registry_url.clone(),
                    detail: format!("fetching blob {digest} failed"),
                },
            })
        }
    }
}

/// Makes a whole image under a rule present here, its manifests and every blob, for what
/// reads it from the store rather than through the registry (`ecrl repo pull`). Nothing to
/// do outside cache rules.
pub async fn ensure_image(
    state: &Arc<AppState>,
    repo: &RepoName,
    reference: &Reference,
) -> Result<(), CacheError> {
    let Some(rule) = state.meta.read().mirror.cache_rule_for(repo).cloned() else {
        return Ok(());
    };
    if needs_upstream(state, &rule, repo, reference) {
        manifest(state, &rule, repo, reference).await?;
    }
    let top = state
        .meta
        .read()
        .repos
        .get(repo)
        .and_then(|r| r.manifest(reference))
        .map(|m| m.digest);
    let Some(top) = top else {
        return Ok(());
    };
    let mut pending = vec![top];
    let mut seen = std::collections::HashSet::new();
    while let Some(digest) = pending.pop() {
        if !seen.insert(digest) || seen.len() > 1024 {
            continue;
        }
        let here = state
            .meta
            .read()
            .repos
            .get(repo)
            .and_then(|r| r.manifests.get(&digest).cloned());
        let m = match here {
            Some(m) => m,
            None => {
                manifest(state, &rule, repo, &Reference::Digest(digest)).await?;
                match state
                    .meta
                    .read()
                    .repos
                    .get(repo)
                    .and_then(|r| r.manifests.get(&digest).cloned())
                {
                    Some(m) => m,
                    None => continue,
                }
            }
        };
        let (doc, _, kind) = ecrl::manifest::parse(Some(&m.media_type), &m.bytes)
            .map_err(|e| CacheError::Invalid(e.0))?;
        match kind {
            Kind::Index => pending.extend(
                doc.manifests
                    .iter()
                    .flatten()
                    .filter_map(|d| d.digest.parse::<Digest>().ok()),
            ),
            Kind::Image => {
                for d in doc.config.iter().chain(doc.layers.iter().flatten()) {
                    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    let (Ok(blob), Some(size)) = (d.digest.parse::<Digest>(), d.size) else {
                        continue;
                    };
                    let linked = state
                        .meta
                        .read()
                        .repos
                        .get(repo)
                        .is_some_and(|r| r.blobs.contains_key(&blob));
                    if !linked {
                        self::blob(state, &rule, repo, &blob, size.max(0) as u64, false).await?;
                    }
                }
            }
        }
    }
    Ok(())
}
