//! Image push, pull and load for the CLI: streams in, streams out.
//!
//! A push reads the archive from the request body (or from the Docker engine) on a blocking
//! thread and answers newline-delimited events; a pull answers the archive itself; a load
//! writes the archive into the Docker engine and answers events.

use super::{ndjson, ControlError, Shared};
use crate::runtime::RuntimeError;
use crate::transfer::{export, import, TransferError};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use ecrl::api::transfer::*;
use ecrl::api::{ApiError, ErrorCode};
use ecrl::names::{Reference, RepoName, Tag};
use futures_util::StreamExt;
use tokio::sync::mpsc;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route(PushImage::PATH, post(push))
        .route(PullImage::PATH, post(pull))
        .route(LoadImage::PATH, post(load))
}

/// The engine's errors as a transfer's: a missing image is the client's to fix.
fn engine_error(e: RuntimeError) -> TransferError {
    match e {
        RuntimeError::NotFound(m) => TransferError::NotFound(m),
        RuntimeError::Unreachable(m) | RuntimeError::Failed(m) => TransferError::Docker(m),
    }
}

fn invalid(e: impl std::fmt::Display) -> ControlError {
    ControlError(ApiError::new(ErrorCode::InvalidParameter, e.to_string()))
}

async fn push(
    State(state): State<Shared>,
    Query(request): Query<PushRequest>,
    body: Body,
) -> Result<Response, ControlError> {
    let repo: RepoName = request.repository_name.parse().map_err(invalid)?;
    let tag = match &request.image_tag {
        Some(t) => Some(t.parse::<Tag>().map_err(invalid)?),
        None => None,
    };
    let gzip = match request.compression.as_deref() {
        None | Some("gzip") => true,
        Some("none") => false,
        Some(other) => {
            return Err(invalid(format!(
                "compression {other:?}: expected gzip or none"
            )))
        }
    };
    if !state.config.create_on_push && !state.meta.read().repos.contains_key(&repo) {
        return Err(ControlError(ApiError::new(
            ErrorCode::RepositoryNotFound,
            format!(
                "repository {repo} does not exist and registry.create_on_push is off; \
                 create it with 'ecrl repo create {repo}'"
            ),
        )));
    }
    let source = request
        .source_name
        .clone()
        .or_else(|| request.source_path.clone())
        .or_else(|| {
            request
                .docker_image
                .as_ref()
                .map(|n| format!("docker://{n}"))
        })
        .unwrap_or_else(|| "the archive".into());
    let options = import::PushOptions {
        repo,
        tag,
        gzip,
        source,
    };
    let (tx, rx) = mpsc::channel(64);
    if let Some(path) = &request.source_path {
        let file = std::fs::File::open(path).map_err(|e| {
            ControlError(ApiError::new(
                ErrorCode::SourceUnreadable,
                format!("ecrld cannot read {path}: {e}"),
            ))
        })?;
        let events = tx.clone();
        tokio::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || {
                import::import_file(state, file, options, events)
            })
            .await
            .unwrap_or_else(|e| Err(TransferError::Io(std::io::Error::other(e))));
            if let Some(event) = outcome_event(outcome) {
                let _ = tx.send(event).await;
            }
        });
        return Ok(ndjson(rx));
    }
    let source: Body = match &request.docker_image {
        Some(name) => {
            let stream = state
                .runtime
                .export_image(name)
                .await
                .map_err(|e| ControlError(engine_error(e).into()))?;
            Body::from_stream(stream)
        }
        None => body,
    };
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(
        source
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other)),
    ));
    let events = tx.clone();
    let task_state = state.clone();
    tokio::spawn(async move {
        let outcome = tokio::task::spawn_blocking(move || {
            import::import(task_state, reader, options, events)
        })
        .await
        .unwrap_or_else(|e| Err(TransferError::Io(std::io::Error::other(e))));
        if let Some(event) = outcome_event(outcome) {
            let _ = tx.send(event).await;
        }
    });
    Ok(ndjson(rx))
}

/// The last event of a push; none when the client is gone.
fn outcome_event(outcome: Result<TransferResult, TransferError>) -> Option<TransferEvent> {
    match outcome {
        Ok(result) => {
            tracing::info!(
                repository = %result.repository_name,
                digest = %result.image_digest,
                pushed = result.blobs_pushed,
                existing = result.blobs_existing,
                "image pushed"
            );
            Some(TransferEvent::Done(result))
        }
        Err(TransferError::Cancelled) => None,
        Err(e) => {
            tracing::warn!("image push failed: {e}");
            Some(TransferEvent::Error(e.into()))
        }
    }
}

async fn parse_pull(
    state: &Shared,
    request: &PullRequest,
) -> Result<(RepoName, Reference, export::Plan), ControlError> {
    let repo: RepoName = request.repository_name.parse().map_err(invalid)?;
    let reference: Reference = request
        .reference
        .as_deref()
        .unwrap_or("latest")
        .parse()
        .map_err(invalid)?;
    // An image under a pull-through cache rule is fetched whole first: archives are written
    // from the store.
    crate::mirror::cache::ensure_image(state, &repo, &reference)
        .await
        .map_err(|e| {
            use crate::mirror::cache::CacheError;
            let code = match &e {
                CacheError::NotFound(_) => ErrorCode::ImageNotFound,
                CacheError::Upstream { .. } => ErrorCode::RemoteFailed,
                CacheError::Invalid(_) => ErrorCode::InvalidParameter,
                CacheError::Store(_) => ErrorCode::Internal,
            };
            ControlError(ApiError::new(code, e.to_string()))
        })?;
    let format =
        export::Format::parse(request.format.as_deref()).map_err(|e| ControlError(e.into()))?;
    let plan = export::plan(
        state,
        &repo,
        &reference,
        format,
        request.platform.as_deref(),
    )
    .map_err(|e| ControlError(e.into()))?;
    export::check_platform(state, &plan)
        .await
        .map_err(|e| ControlError(e.into()))?;
    Ok((repo, reference, plan))
}

async fn pull(
    State(state): State<Shared>,
    Query(request): Query<PullRequest>,
) -> Result<Response, ControlError> {
    let (repo, _, plan) = parse_pull(&state, &request).await?;
    let size = plan.size;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let handle = tokio::runtime::Handle::current();
    let writer_state = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = export::ChannelWriter::new(tx.clone());
        if let Err(e) = export::write(writer_state, handle, &plan, &mut out) {
            tracing::warn!(repository = %repo, "image pull failed: {e}");
            // The body breaks off: the client sees an incomplete archive, not a short one.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
        headers.insert(CONTENT_SIZE_HEADER, v);
    }
    Ok(response)
}

async fn load(
    State(state): State<Shared>,
    Query(mut request): Query<PullRequest>,
) -> Result<Response, ControlError> {
    request.format = Some("docker-archive".into());
    let (repo, reference, plan) = parse_pull(&state, &request).await?;
    // Reach the engine before anything streams, so "dockerd is not running" is a plain error.
    state
        .runtime
        .info()
        .await
        .map_err(|e| ControlError(engine_error(e).into()))?;
    let (tx, rx) = mpsc::channel(16);
    let result = TransferResult {
        repository_name: repo.to_string(),
        image_tag: match &reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        },
        image_digest: plan.digest.to_string(),
        image_manifest_media_type: plan.media_type.clone(),
        image_size_in_bytes: plan.size,
        blobs_pushed: 0,
        blobs_existing: 0,
        docker_reference: plan.docker_reference.clone(),
    };
    tokio::spawn(async move {
        let (archive_tx, archive_rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let handle = tokio::runtime::Handle::current();
        let writer_state = state.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = export::ChannelWriter::new(archive_tx);
            export::write(writer_state, handle, &plan, &mut out)
        });
        let archive = futures_util::stream::unfold(archive_rx, |mut rx| async {
            match rx.recv().await {
                Some(Ok(chunk)) => Some((chunk, rx)),
                _ => None,
            }
        });
        let loaded = state
            .runtime
            .load_image(archive.boxed())
            .await
            .map_err(engine_error);
        let written = writer
            .await
            .unwrap_or_else(|e| Err(TransferError::Io(std::io::Error::other(e))));
        let event = match loaded.and(written) {
            Ok(()) => TransferEvent::Done(result),
            Err(e) => TransferEvent::Error(e.into()),
        };
        let _ = tx.send(event).await;
    });
    Ok(ndjson(rx))
}
