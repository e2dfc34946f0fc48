//! Mirroring for the CLI: logins to remote registries, syncs (streamed), sync jobs, and
//! replication rules and status.

use super::{endpoint, ndjson, service, ControlError, Peer, Shared};
use crate::mirror::{cache, jobs, replication, sync, MirrorError};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use ecrl::api::mirror::*;
use ecrl::api::transfer::StreamEndpoint;
use ecrl::api::{ApiError, Empty, ErrorCode};
use ecrl::names::{Reference, RepoName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = endpoint::<Login, _, _>(router, login);
    let router = endpoint::<Logout, _, _>(router, logout);
    let router = endpoint::<ListLogins, _, _>(router, list_logins);
    let router = endpoint::<CreateJob, _, _>(router, create_job);
    let router = endpoint::<ListJobs, _, _>(router, list_jobs);
    let router = endpoint::<DeleteJob, _, _>(router, delete_job);
    let router = service::<PutReplication, _, _>(router, put_replication);
    let router = service::<GetReplication, _, _>(router, get_replication);
    let router = endpoint::<DeleteReplication, _, _>(router, delete_replication);
    let router = service::<ReplicationStatus, _, _>(router, replication_status);
    let router = service::<CreateCacheRule, _, _>(router, create_cache_rule);
    let router = service::<ListCacheRules, _, _>(router, list_cache_rules);
    let router = service::<DeleteCacheRule, _, _>(router, delete_cache_rule);
    let router = service::<ValidateCacheRule, _, _>(router, validate_cache_rule);
    router
        .route(SyncImages::PATH, post(sync_stream))
        .route(RunJob::PATH, post(run_job))
}

fn registry(text: &str) -> Result<String, ApiError> {
    ecrl::remote::parse_registry(text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e.to_string()))
}

async fn login(state: Shared, _: Peer, req: LoginRequest) -> Result<LoginInfo, ApiError> {
    let registry = registry(&req.registry)?;
    if state.own_hosts().contains(&registry) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "{registry} is this registry: its clients log in with \
                 'ecrl get-login-password | docker login -u AWS --password-stdin {registry}'"
            ),
        ));
    }
    let info = state
        .mirror
        .login(&registry, &req.username, &req.password)
        .await?;
    tracing::info!(registry = %info.registry, user = %info.username, store = %info.store, "logged in to a remote registry");
    Ok(info)
}

async fn logout(state: Shared, _: Peer, req: RegistryRequest) -> Result<LoginInfo, ApiError> {
    let registry = registry(&req.registry)?;
    Ok(state.mirror.logout(&registry).await?)
}

async fn list_logins(state: Shared, _: Peer, _: Empty) -> Result<Logins, ApiError> {
    let logins = state.mirror.logins.clone();
    let list = tokio::task::spawn_blocking(move || logins.list())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(MirrorError::from)?;
    Ok(Logins { logins: list })
}

async fn create_job(state: Shared, _: Peer, req: CreateJobRequest) -> Result<SyncJob, ApiError> {
    Ok(jobs::create(&state, req.spec, &req.every).await?)
}

async fn list_jobs(state: Shared, _: Peer, _: Empty) -> Result<Jobs, ApiError> {
    Ok(Jobs {
        jobs: jobs::list(&state),
    })
}

async fn delete_job(state: Shared, _: Peer, req: JobRequest) -> Result<SyncJob, ApiError> {
    Ok(jobs::delete(&state, &req.id).await?)
}

pub(crate) async fn put_replication(
    state: Shared,
    req: PutReplicationRequest,
) -> Result<ecrl::mirror::ReplicationConfiguration, ApiError> {
    Ok(replication::put(&state, &req.document).await?)
}

pub(crate) async fn get_replication(
    state: Shared,
    _: Empty,
) -> Result<ecrl::mirror::ReplicationConfiguration, ApiError> {
    Ok(replication::get(&state))
}

async fn delete_replication(
    state: Shared,
    _: Peer,
    _: Empty,
) -> Result<ecrl::mirror::ReplicationConfiguration, ApiError> {
    let before = replication::get(&state);
    state
        .meta
        .put_replication(Default::default())
        .await
        .map_err(ApiError::from)?;
    Ok(before)
}

pub(crate) async fn replication_status(
    state: Shared,
    req: ReplicationStatusRequest,
) -> Result<ImageReplicationStatus, ApiError> {
    let invalid =
        |e: ecrl::names::NameError| ApiError::new(ErrorCode::InvalidParameter, e.to_string());
    let repo: RepoName = req.repository_name.parse().map_err(invalid)?;
    let reference: Reference = req
        .reference
        .as_deref()
        .unwrap_or("latest")
        .parse()
        .map_err(invalid)?;
    if !state.meta.read().repos.contains_key(&repo) {
        return Err(ApiError::new(
            ErrorCode::RepositoryNotFound,
            format!("repository {repo} does not exist"),
        ));
    }
    replication::status(&state, &repo, &reference).map_err(|e| match e {
        MirrorError::Remote(crate::transfer::remote::RemoteError::NotFound(m)) => {
            ApiError::new(ErrorCode::ImageNotFound, m)
        }
        e => e.into(),
    })
}

pub(crate) async fn create_cache_rule(
    state: Shared,
    req: CreateCacheRuleRequest,
) -> Result<CacheRule, ApiError> {
    let rule = cache::create(&state, req).await?;
    tracing::info!(
        prefix = %rule.ecr_repository_prefix,
        upstream = %rule.upstream_registry_url,
        "pull-through cache rule created"
    );
    Ok(rule)
}

pub(crate) async fn list_cache_rules(state: Shared, _: Empty) -> Result<CacheRules, ApiError> {
    Ok(CacheRules {
        pull_through_cache_rules: cache::list(&state),
    })
}

pub(crate) async fn delete_cache_rule(
    state: Shared,
    req: CacheRuleRequest,
) -> Result<CacheRule, ApiError> {
    Ok(cache::delete(&state, &req.ecr_repository_prefix).await?)
}

pub(crate) async fn validate_cache_rule(
    state: Shared,
    req: CacheRuleRequest,
) -> Result<CacheRuleValidation, ApiError> {
    Ok(cache::validate(&state, &req.ecr_repository_prefix).await?)
}

/// Streams a sync's events: the work stops when the client goes away (Ctrl-C).
fn stream_sync<F, Fut>(work: F) -> Response
where
    F: FnOnce(mpsc::Sender<SyncEvent>, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<SyncResult, MirrorError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    {
        let tx = tx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => cancel.cancel(),
                _ = cancel.cancelled() => {}
            }
        });
    }
    tokio::spawn(async move {
        let outcome = work(tx.clone(), cancel.clone()).await;
        let last = match outcome {
            Ok(result) => SyncEvent::Done(Box::new(result)),
            Err(e) => SyncEvent::Error(e.into()),
        };
        let _ = tx.send(last).await;
        // The watcher's work is done.
        cancel.cancel();
    });
    ndjson(rx)
}

async fn sync_stream(
    State(state): State<Shared>,
    Query(request): Query<SyncRequest>,
) -> Result<Response, ControlError> {
    let spec: SyncSpec = serde_json::from_str(&request.spec).map_err(|e| {
        ControlError(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("invalid sync request: {e}"),
        ))
    })?;
    // A spec that cannot run is an error answer, not a stream.
    sync::plan(&state, &spec).map_err(|e| ControlError(e.into()))?;
    let dry_run = request.dry_run;
    Ok(stream_sync(move |tx, cancel| async move {
        let cancel = {
            let child = state.shutdown.child_token();
            let c = child.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                c.cancel();
            });
            child
        };
        sync::run(&state, &spec, dry_run, Some(tx), cancel).await
    }))
}

async fn run_job(
    State(state): State<Shared>,
    Query(request): Query<JobRequest>,
) -> Result<Response, ControlError> {
    if !state.meta.read().mirror.jobs.contains_key(&request.id) {
        return Err(ControlError(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "there is no mirror job {} ('ecrl mirror jobs' lists them)",
                request.id
            ),
        )));
    }
    Ok(stream_sync(move |tx, cancel| async move {
        jobs::run(&state, &request.id, Some(tx), cancel).await
    }))
}
