//! The registry's side of pull-through cache rules: before a pull under a rule is answered,
//! what it needs is fetched from the upstream (see `mirror::cache`); pushes under a rule are
//! refused. Access: an import needs `ecr:BatchImportUpstreamImage`, and a new repository
//! `ecr:CreateRepository`, as on ECR.

use super::{RegistryError, Result, Shared, CONTENT_DIGEST};
use crate::auth::{Action, Principal};
use crate::mirror::cache::{self, BlobAnswer, CacheError};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use ecrl::api::mirror::CacheRule;
use ecrl::names::{Digest, Reference, RepoName};
use oci_spec::distribution::ErrorCode;

/// Checks an action for the caller of the request being served.
pub type Allow<'a> = &'a (dyn Fn(Action, Option<&RepoName>) -> Result<Principal> + Send + Sync);

fn rule_for(state: &Shared, repo: &RepoName) -> Option<CacheRule> {
    state.meta.read().mirror.cache_rule_for(repo).cloned()
}

impl From<CacheError> for RegistryError {
    fn from(e: CacheError) -> Self {
        let (status, code) = match &e {
            CacheError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown),
            // A 4xx with the registry's error body: clients print its message (for a 5xx they
            // print only the status, and retry).
            CacheError::Upstream { .. } => (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown),
            CacheError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::NameInvalid),
            CacheError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unsupported),
        };
        RegistryError::new(status, code, e.to_string())
    }
}

/// The repository a pull names, as the cache reads it: docker's `registry-mirrors` setting
/// sends Docker Hub names (`library/alpine`) with no prefix, which the Docker Hub mirror rule
/// (if there is one) takes when nothing here answers to them.
pub fn alias(state: &Shared, repo: RepoName) -> RepoName {
    let index = state.meta.read();
    if index.repos.contains_key(&repo) || index.mirror.cache_rule_for(&repo).is_some() {
        return repo;
    }
    let Some(rule) = index
        .mirror
        .cache_rules
        .values()
        .find(|r| r.docker_hub_mirror)
    else {
        return repo;
    };
    format!("{}/{repo}", rule.ecr_repository_prefix)
        .parse()
        .unwrap_or(repo)
}

/// A push under a cache rule: refused, the cache's content is the upstream's.
pub fn refuse_push(state: &Shared, repo: &RepoName) -> Result<()> {
    match rule_for(state, repo) {
        Some(rule) => Err(RegistryError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!(
                "{repo} is under the pull-through cache rule {} (of {}): its images come from \
                 there; push to the upstream, or to a repository outside {}/",
                rule.ecr_repository_prefix, rule.upstream_registry_url, rule.ecr_repository_prefix
            ),
        )),
        None => Ok(()),
    }
}

/// Checks the import's own actions; `Ok(false)` when the caller may not import but the
/// content is here to serve as it is.
fn may_import(state: &Shared, repo: &RepoName, allow: Allow<'_>, cached: bool) -> Result<bool> {
    let principal = match allow(Action::BatchImportUpstreamImage, Some(repo)) {
        Ok(p) => p,
        Err(_) if cached => return Ok(false),
        Err(e) => return Err(e),
    };
    let exists = state.meta.read().repos.contains_key(repo);
    // An anonymous pull that `--anonymous pull` lets through imports as a pull does.
    if !exists && principal != Principal::Anonymous {
        allow(Action::CreateRepository, Some(repo))?;
    }
    Ok(true)
}

/// Before a manifest pull: under a rule, what is not here (or a tag past its TTL) is fetched.
pub async fn manifest(
    state: &Shared,
    repo: &RepoName,
    reference: &Reference,
    allow: Allow<'_>,
) -> Result<()> {
    let Some(rule) = rule_for(state, repo) else {
        return Ok(());
    };
    if !cache::needs_upstream(state, &rule, repo, reference) {
        return Ok(());
    }
    let cached = match reference {
        Reference::Tag(t) => state
            .meta
            .read()
            .repos
            .get(repo)
            .is_some_and(|r| r.tags.contains_key(t)),
        Reference::Digest(_) => false,
    };
    if !may_import(state, repo, allow, cached)? {
        return Ok(());
    }
    Ok(cache::manifest(state, &rule, repo, reference).await?)
}

/// A blob pull under a rule of a blob not here yet that a cached manifest references: its
/// size for a HEAD, else fetched (and streamed to this client as it arrives). `None` when the
/// ordinary handler answers.
pub async fn blob(
    state: &Shared,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
    allow: Allow<'_>,
) -> Result<Option<Response>> {
    let Some(rule) = rule_for(state, repo) else {
        return Ok(None);
    };
    let linked = state
        .meta
        .read()
        .repos
        .get(repo)
        .is_some_and(|r| r.blobs.contains_key(digest) || r.manifests.contains_key(digest));
    if linked {
        return Ok(None);
    }
    // Only what a cached manifest names is fetched: the cache is no open proxy of the
    // upstream's blobs.
    let Some(size) = cache::referenced_size(state, repo, digest) else {
        return Ok(None);
    };
    let answer = |status: StatusCode, body: Body| {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
            h.insert(CONTENT_DIGEST, v);
        }
        response
    };
    if head {
        return Ok(Some(answer(StatusCode::OK, Body::empty())));
    }
    may_import(state, repo, allow, false)?;
    // A ranged read waits for the whole blob, then is served from the store.
    let stream = !headers.contains_key(header::RANGE);
    match cache::blob(state, &rule, repo, digest, size, stream).await? {
        BlobAnswer::Here => Ok(None),
        BlobAnswer::Streaming(body) => {
            let chunks = futures_util::stream::unfold(body, |mut rx| async {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(Some(answer(StatusCode::OK, Body::from_stream(chunks))))
        }
    }
}
