//! Lifecycle policies over the control socket: ECR's PutLifecyclePolicy, GetLifecyclePolicy,
//! DeleteLifecyclePolicy, a preview answered at once, and a run now.

use super::{endpoint, service, Peer, Shared};
use crate::metadata::MetaError;
use axum::Router;
use ecrl::api::lifecycle::*;
use ecrl::api::{ApiError, ErrorCode};
use ecrl::lifecycle::LifecyclePolicy;
use ecrl::names::RepoName;
use ecrl::timestamp;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = service::<PutLifecyclePolicy, _, _>(router, put);
    let router = service::<GetLifecyclePolicy, _, _>(router, get);
    let router = service::<DeleteLifecyclePolicy, _, _>(router, delete);
    let router = service::<PreviewLifecyclePolicy, _, _>(router, preview);
    endpoint::<RunLifecyclePolicy, _, _>(router, run)
}

fn repo_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("repository name {name:?}: {e}"),
        )
    })
}

fn checked(text: &str) -> Result<LifecyclePolicy, ApiError> {
    LifecyclePolicy::parse(text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e.to_string()))
}

fn none_set(repo: &RepoName) -> ApiError {
    ApiError::new(
        ErrorCode::LifecyclePolicyNotFound,
        format!("repository {repo} has no lifecycle policy"),
    )
}

fn response(
    state: &Shared,
    repo: &RepoName,
    l: crate::metadata::lifecycle::Lifecycle,
) -> LifecyclePolicyResponse {
    LifecyclePolicyResponse {
        registry_id: state.meta.account_id().to_string(),
        repository_name: repo.to_string(),
        lifecycle_policy_text: l.text,
        last_evaluated_at: l.evaluated_at.map(timestamp::from_millis),
    }
}

/// The repository's policy, or why there is none.
fn current(
    state: &Shared,
    repo: &RepoName,
) -> Result<crate::metadata::lifecycle::Lifecycle, ApiError> {
    let index = state.meta.read();
    let record = index
        .repos
        .get(repo)
        .ok_or_else(|| ApiError::from(MetaError::RepoNotFound(repo.clone())))?;
    record.lifecycle.clone().ok_or_else(|| none_set(repo))
}

pub(crate) async fn put(
    state: Shared,
    r: PutLifecyclePolicyRequest,
) -> Result<LifecyclePolicyResponse, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    checked(&r.lifecycle_policy_text)?;
    state
        .meta
        .set_lifecycle_policy(repo.clone(), Some(r.lifecycle_policy_text))
        .await?;
    Ok(response(&state, &repo, current(&state, &repo)?))
}

pub(crate) async fn get(
    state: Shared,
    r: LifecyclePolicyRef,
) -> Result<LifecyclePolicyResponse, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    Ok(response(&state, &repo, current(&state, &repo)?))
}

pub(crate) async fn delete(
    state: Shared,
    r: LifecyclePolicyRef,
) -> Result<LifecyclePolicyResponse, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    current(&state, &repo)?;
    let old = state
        .meta
        .set_lifecycle_policy(repo.clone(), None)
        .await?
        .ok_or_else(|| none_set(&repo))?;
    Ok(response(&state, &repo, old))
}

pub(crate) async fn preview(
    state: Shared,
    r: PreviewLifecyclePolicyRequest,
) -> Result<LifecyclePolicyPreview, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    let text = match r.lifecycle_policy_text {
        Some(text) => text,
        None => current(&state, &repo)?.text,
    };
    let policy = checked(&text)?;
    let index = state.meta.read();
    let record = index
        .repos
        .get(&repo)
        .ok_or_else(|| ApiError::from(MetaError::RepoNotFound(repo.clone())))?;
    let plan = crate::lifecycle::plan(
        &state,
        &index,
        &repo,
        record,
        &policy,
        crate::metadata::now_millis(),
    );
    Ok(crate::lifecycle::preview(&state, &repo, &text, &plan))
}

async fn run(
    state: Shared,
    _: Peer,
    r: LifecyclePolicyRef,
) -> Result<LifecyclePolicyPreview, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    current(&state, &repo)?;
    crate::lifecycle::run(&state, &repo)
        .await?
        .ok_or_else(|| none_set(&repo))
}
