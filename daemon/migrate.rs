//! Moving a single-machine registry onto the backends several instances share (`ecrl storage
//! migrate`): its blobs into an S3-compatible object store, its metadata into PostgreSQL, or
//! both, while it keeps serving pulls.
//!
//! 1. Every blob is read from the store here, checked against its digest on the way, and
//!    written to the object store (blobs it holds already are left: content-addressed).
//! 2. The metadata is copied whole into PostgreSQL inside the metadata writer's transaction,
//!    and from then on this daemon refuses writes (a push gets 503 saying where the registry
//!    went), so nothing lands where the moved registry no longer looks. A move of the blobs
//!    alone freezes the metadata the same way.
//! 3. Blobs pushed while step 1 ran are copied too.
//!
//! The daemon is then started again with the new settings. Calls storage and metadata only.

use crate::app::AppState;
use crate::storage::keys::OsKeyring;
use crate::storage::{BlobStore, StoreOptions};
use anyhow::Context;
use ecrl::api::system::{MigrateReport, MigrateRequest};
use ecrl::names::Digest;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a move did not happen, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The request asks for nothing, or for where the registry is already.
    #[error("{0}")]
    Invalid(&'static str),
    /// Another move is running on this daemon.
    #[error("a move of this registry is already running; wait for it to end")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Clears [`AppState::migrating`] however the move ends (a client that goes away drops it).
struct Running<'a>(&'a AppState);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.migrating.store(false, Ordering::Release);
    }
}

pub async fn migrate(
    state: &Arc<AppState>,
    request: MigrateRequest,
) -> Result<MigrateReport, MigrateError> {
    if request.s3.is_some() && state.store.on_object_store() {
        return Err(MigrateError::Invalid(
            "the blobs are in an object store already",
        ));
    }
    if request.postgres_url.is_some() && state.meta.shared() {
        return Err(MigrateError::Invalid(
            "the metadata is on PostgreSQL already",
        ));
    }
    if request.s3.is_none() && request.postgres_url.is_none() {
        return Err(MigrateError::Invalid(
            "nothing to move to: name an object store (--s3-bucket ...), a PostgreSQL database \
             (--postgres-url), or both",
        ));
    }
    if state.migrating.swap(true, Ordering::AcqRel) {
        return Err(MigrateError::Busy);
    }
    let _running = Running(state);
    Ok(run(state, request).await?)
}

async fn run(state: &Arc<AppState>, request: MigrateRequest) -> anyhow::Result<MigrateReport> {
    let started = std::time::Instant::now();
    let mut report = MigrateReport::default();
    let target = match &request.s3 {
        None => None,
        Some(s3) => {
            let options = StoreOptions {
                // The same mode as here: encrypted blobs stay encrypted (under a key of the
                // object store's own, made now and kept as this data dir's keys are).
                encryption: Some(state.store.encryption().mode),
                key_dir: ecrl::paths::default_config_dir().join("keys"),
                keyring: &OsKeyring,
                upload_memory: state.config.upload_memory,
                read_cache: 0,
            };
            let store = BlobStore::open_s3(&state.config.data_dir, s3, &options)
                .await
                .with_context(|| format!("opening {}", s3.describe()))?;
            report.s3 = Some(s3.describe());
            Some(store)
        }
    };
    if let Some(target) = &target {
        let store = state.store.clone();
        let all = tokio::task::spawn_blocking(move || store.list()).await??;
        copy_blobs(state, target, all, &mut report, true).await?;
    }
    match &request.postgres_url {
        Some(url) => {
            let copied = state
                .meta
                .move_to_postgres(url.0.clone(), request.postgres_ca.clone())
                .await?;
            report.postgres = Some(crate::metadata::postgres_location(&url.0));
            report.rows = copied
                .into_iter()
                .map(|(t, n)| (t.to_string(), n))
                .collect();
        }
        None => {
            state
                .meta
                .freeze(format!(
                    "this registry's blobs moved to {}: restart ecrld with --storage-backend s3 \
                     and its settings to write again",
                    report.s3.as_deref().unwrap_or("an object store")
                ))
                .await?
        }
    }
    if let Some(target) = &target {
        // What was pushed while the blobs were copied.
        let in_use: Vec<Digest> = state.meta.read().digests_in_use().into_iter().collect();
        copy_blobs(state, target, in_use, &mut report, false).await?;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        blobs = report.blobs_copied,
        bytes = report.bytes_copied,
        s3 = report.s3.as_deref().unwrap_or("-"),
        postgres = report.postgres.as_deref().unwrap_or("-"),
        "the registry moved; this daemon refuses writes until it is started on the new backends"
    );
    Ok(report)
}

/// Copies the `digests` the target does not hold, each checked against its digest
/// (counting the ones it holds when `count_present`).
async fn copy_blobs(
    state: &Arc<AppState>,
    target: &BlobStore,
    digests: Vec<Digest>,
    report: &mut MigrateReport,
    count_present: bool,
) -> anyhow::Result<()> {
    for digest in digests {
        if target.stat(&digest).await?.is_some() {
            report.blobs_present += u64::from(count_present);
            continue;
        }
        // Gone meanwhile (a collection): nothing to copy.
        let Some(size) = state.store.stat(&digest).await? else {
            continue;
        };
        let body = state.store.read(&digest, 0..size).await?;
        let id = target.upload_start().await?;
        target.upload_write(&id, None, body).await?;
        target
            .upload_finish(&id, &digest)
            .await
            .with_context(|| format!("copying blob {digest}"))?;
        report.blobs_copied += 1;
        report.bytes_copied += size;
    }
    Ok(())
}
