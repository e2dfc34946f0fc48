//! `/v1/system/*`: the daemon describes itself and stops on request.

use super::{endpoint, ndjson, Peer, Shared};
use crate::progress::Progress;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use ecrl::api::system::{
    CheckStore, CheckStoreStream, CollectGarbage, CollectGarbageStream, FsckReport, FsckRequest,
    GcReport, GcRequest, Info, Shutdown, ShutdownResponse, StoreEvent, SystemInfo,
};
use ecrl::api::transfer::StreamEndpoint;
use ecrl::api::{ApiError, Empty, ErrorCode};
use std::sync::Arc;

/// How long a status waits for the container engine's answer. podman assembles its `info`
/// on each request (storage, cgroups, networks) and took more than 2 s on a loaded 2-core
/// machine; a stuck engine still cannot hang a status for long.
const ENGINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = endpoint::<Info, _, _>(router, info);
    let router = endpoint::<CollectGarbage, _, _>(router, gc);
    let router = endpoint::<CheckStore, _, _>(router, fsck);
    let router = endpoint::<ecrl::api::system::MigrateStorage, _, _>(router, migrate);
    let router = router
        .route(CollectGarbageStream::PATH, post(gc_stream))
        .route(CheckStoreStream::PATH, post(fsck_stream));
    endpoint::<Shutdown, _, _>(router, shutdown)
}

/// How often a followed job's progress is sent (when it moved).
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("{e:#}"))
}

async fn fsck(state: Shared, _peer: Peer, r: FsckRequest) -> Result<FsckReport, ApiError> {
    crate::fsck::run(&state, r.repair, &Progress::default())
        .await
        .map_err(internal)
}

async fn migrate(
    state: Shared,
    _peer: Peer,
    r: ecrl::api::system::MigrateRequest,
) -> Result<ecrl::api::system::MigrateReport, ApiError> {
    crate::migrate::migrate(&state, r)
        .await
        .map_err(|e| match e {
            crate::migrate::MigrateError::Invalid(why) => {
                ApiError::new(ErrorCode::InvalidParameter, why)
            }
            e @ crate::migrate::MigrateError::Busy => {
                ApiError::new(ErrorCode::ServiceUnavailable, e.to_string())
            }
            crate::migrate::MigrateError::Failed(e) => internal(e),
        })
}

async fn gc(state: Shared, _peer: Peer, r: GcRequest) -> Result<GcReport, ApiError> {
    crate::gc::collect(&state, r.dry_run, &Progress::default())
        .await
        .map_err(internal)
}

async fn gc_stream(State(state): State<Shared>, Query(r): Query<GcRequest>) -> Response {
    follow(move |progress| async move { crate::gc::collect(&state, r.dry_run, &progress).await })
}

async fn fsck_stream(State(state): State<Shared>, Query(r): Query<FsckRequest>) -> Response {
    follow(move |progress| async move { crate::fsck::run(&state, r.repair, &progress).await })
}

/// Runs a store job and streams its progress, then its result. The job stops when the client
/// goes away (each of its steps is safe to stop after, as after a kill).
fn follow<R, F, Fut>(work: F) -> Response
where
    R: serde::Serialize + Send + 'static,
    F: FnOnce(Arc<Progress>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let progress = Arc::new(Progress::default());
    let job = work(progress.clone());
    tokio::spawn(async move {
        tokio::pin!(job);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let last = loop {
            tokio::select! {
                done = &mut job => break match done {
                    Ok(report) => StoreEvent::Done(report),
                    Err(e) => StoreEvent::Error(internal(e)),
                },
                _ = tick.tick() => {
                    if let Some(p) = progress.take_changed() {
                        if tx.send(StoreEvent::Progress(p)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        };
        let _ = tx.send(last).await;
    });
    ndjson(rx)
}

async fn info(state: Shared, _peer: Peer, _: Empty) -> Result<SystemInfo, ApiError> {
    let backend = state.store.backend_status().await;
    // A store that does not answer is reported as such below, not as a failed status.
    let bytes_stored = match backend.error {
        Some(_) => 0,
        None => state
            .store
            .bytes_stored()
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
    };
    let storage = ecrl::api::system::StorageInfo {
        backend: backend.backend,
        location: backend.location,
        error: backend.error,
    };
    let log_file = state.config.data_dir.join(ecrl::paths::LOG_FILE);
    // The engine is asked briefly: a status must not hang on a stuck engine.
    let (engine, engine_error, task_limits) =
        match tokio::time::timeout(ENGINE_TIMEOUT, state.runtime.info()).await {
            Ok(Ok(info)) => (
                Some(format!("{} (API {})", info.name, info.api_version)),
                None,
                Some(match info.task_cgroups {
                    Ok(how) => how,
                    Err(why) => format!("each container by its own limits only: {why}"),
                }),
            ),
            Ok(Err(e)) => (None, Some(e.to_string()), None),
            Err(_) => (
                None,
                Some(format!(
                    "the engine did not answer within {} s",
                    ENGINE_TIMEOUT.as_secs()
                )),
                None,
            ),
        };
    let encryption = state.store.encryption();
    let metadata_error = match tokio::time::timeout(ENGINE_TIMEOUT, state.meta.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "the metadata database did not answer within {} s",
            ENGINE_TIMEOUT.as_secs()
        )),
    };
    Ok(SystemInfo {
        metadata_backend: Some(state.meta.backend().to_string()),
        metadata_location: Some(state.meta.location().to_string()),
        metadata_error,
        version: ecrl::VERSION.to_string(),
        api_version: ecrl::api::API_VERSION,
        pid: std::process::id(),
        started_at: ecrl::timestamp::format(state.started_at),
        uptime_seconds: state.started.elapsed().as_secs(),
        data_dir: state.config.data_dir.clone(),
        socket: state.config.socket.clone(),
        registry_address: state.registry_addr.map(|a| a.to_string()),
        registry_tls_address: state.tls.as_ref().map(|t| t.addr.to_string()),
        metrics_address: state.metrics_addr.map(|a| a.to_string()),
        tls_ca_path: state.tls.as_ref().and_then(|t| t.ca_cert.clone()),
        tls_cert_path: state.tls.as_ref().and_then(|t| t.cert_file.clone()),
        tls_names: state
            .tls
            .as_ref()
            .map(|t| t.names.clone())
            .unwrap_or_default(),
        bytes_stored,
        registry_anonymous: Some(state.config.anonymous),
        encryption: Some(encryption.mode),
        key_store: encryption.key.as_ref().map(|k| k.store),
        key_file: encryption.key.as_ref().and_then(|k| k.file.clone()),
        storage: Some(storage),
        read_cache: Some(state.store.read_cache()),
        last_gc: crate::gc::last(),
        log_file: log_file.is_file().then_some(log_file),
        engine,
        engine_error,
        task_limits,
    })
}

async fn shutdown(state: Shared, peer: Peer, _: Empty) -> Result<ShutdownResponse, ApiError> {
    tracing::info!(uid = peer.uid, "shutdown requested over the control socket");
    // Cancelling lets this response finish: the servers drain in-flight requests.
    state.shutdown.cancel();
    Ok(ShutdownResponse {
        pid: std::process::id(),
    })
}
