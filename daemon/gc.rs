//! Online garbage collection: what no repository holds goes, while pushes and pulls go on.
//!
//! Mark: every digest a repository links or holds as a manifest (which covers index
//! children, referrers and their subjects, layers and configs), and the stored blobs the
//! `repo push` layer cache names. Sweep, each step safe on its own (a kill -9 between them
//! loses nothing referenced; the next collection finishes the job):
//! 1. blob links no manifest of their repository references, linked longer ago than an upload
//!    may live (`registry.upload_expiry`, 24 h) and the grace (uploads never followed by a
//!    manifest; a push links each blob as it lands and sends its manifest last), are
//!    unlinked; their content goes like that of a deleted image's blobs: after the grace,
//!    unless a push takes them back meanwhile;
//! 2. blob files nothing marks, written more than the grace ago, are removed, each under its
//!    digest's lock and checked again there, so a blob a push is committing and linking right
//!    then is never removed. Uploads in progress live outside the blob store.

use crate::app::AppState;
use crate::metadata::ExclusiveJob;
use crate::progress::Progress;
use ecrl::api::system::GcReport;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The last collection's report, for `ecrl daemon status`.
static LAST: std::sync::Mutex<Option<GcReport>> = std::sync::Mutex::new(None);
/// One collection at a time.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Another instance sharing the metadata is collecting now (its collection covers this
/// one's: the store and the metadata are the same).
#[derive(Debug)]
pub struct Elsewhere;

impl std::fmt::Display for Elsewhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "another ecrld sharing this registry is collecting garbage now; its collection \
             covers this registry's store",
        )
    }
}

impl std::error::Error for Elsewhere {}

pub fn last() -> Option<GcReport> {
    LAST.lock().ok().and_then(|l| l.clone())
}

pub async fn collect(
    state: &Arc<AppState>,
    dry_run: bool,
    progress: &Progress,
) -> anyhow::Result<GcReport> {
    let _one = ONE.lock().await;
    let Some(_claimed) = state.meta.exclusive(ExclusiveJob::Gc).await? else {
        return Err(Elsewhere.into());
    };
    let started = std::time::Instant::now();
    let mut report = GcReport {
        dry_run,
        started_at: ecrl::timestamp::now(),
        ..Default::default()
    };
    let grace = state.config.deleted_blob_grace;
    // A push links each blob as it lands and sends its manifest last: a link waits for its
    // manifest as long as an upload may live, and the grace besides.
    let link_age = grace.max(state.config.upload_expiry);
    let cutoff_ms = crate::metadata::now_millis() - link_age.as_millis() as i64;

    // 1. Links no manifest references.
    progress.step("unlinking", 0);
    let dangling = state.meta.unlink_dangling(cutoff_ms, dry_run).await?;
    for (repo, freed) in dangling {
        report.links_removed += freed.len() as u64;
        report.link_bytes += freed.iter().map(|(_, s)| *s).sum::<u64>();
        if !dry_run {
            tracing::info!(repository = %repo, links = freed.len(), "garbage collection: unlinked blobs no manifest references");
            state.release(&repo, freed);
        }
    }

    // 2. Files nothing marks. The walk reads names only, on a thread that runs when a core
    // would otherwise idle (pushes and pulls first); only the unmarked files are stat'ed.
    let mut marked = marked(state);
    // Blobs another instance freed are in their grace there: held here too.
    if state.meta.shared() {
        let since = crate::metadata::now_millis() - grace.as_millis() as i64;
        marked.extend(state.meta.released_since(since).await?);
    }
    let marked = Arc::new(marked);
    progress.step("walking the store", 0);
    let (total, unmarked) = {
        let store = state.store.clone();
        let marked = marked.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ecrld-gc".into())
            .spawn(move || {
                crate::storage::idle_priority();
                let walked = store.list().map(|names| {
                    let total = names.len();
                    let unmarked: Vec<_> = names
                        .into_iter()
                        .filter(|d| !marked.contains(d))
                        .map(|d| (d, store.file_info(&d)))
                        .collect();
                    (total, unmarked)
                });
                let _ = tx.send(walked);
            })?;
        rx.await??
    };
    let old_enough = |written: SystemTime| {
        SystemTime::now()
            .duration_since(written)
            .is_ok_and(|age| age >= grace)
    };
    report.blobs_held = (total - unmarked.len()) as u64;
    let mut candidates = Vec::new();
    for (digest, info) in unmarked {
        let Ok(Some((len, written))) = info else {
            // Gone meanwhile, or unreadable: nothing to collect now.
            continue;
        };
        if state.release_pending(&digest) {
            report.blobs_held += 1;
        } else if !old_enough(written) {
            report.blobs_kept_recent += 1;
        } else {
            candidates.push((digest, len));
        }
    }
    // As at start-up: when most blobs are held by nothing, the metadata is not the one they
    // belong to (a lost or replaced metadata.db), and they may be wanted.
    if candidates.len() * 2 > total && candidates.len() > 1 {
        tracing::warn!(
            unheld = candidates.len(),
            blobs = total,
            "garbage collection: most blobs in the store are held by no repository; metadata.db \
             may not be the one these blobs belong to: leaving them"
        );
        report.blobs_left_unexplained = candidates.len() as u64;
        candidates.clear();
    }
    progress.step("removing blobs", candidates.len() as u64);
    for (digest, len) in candidates {
        progress.add(1, len);
        if dry_run {
            report.blobs_removed += 1;
            report.bytes_removed += len;
            continue;
        }
        if state.remove_if_unused_since(&digest, grace).await {
            report.blobs_removed += 1;
            report.bytes_removed += len;
        } else {
            report.blobs_held += 1;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    if !dry_run {
        let metrics = &crate::metrics::METRICS;
        metrics.job("gc");
        metrics.gc_blobs_removed.inc_by(report.blobs_removed);
        metrics.gc_bytes_removed.inc_by(report.bytes_removed);
        tracing::info!(
            blobs = report.blobs_removed,
            bytes = report.bytes_removed,
            links = report.links_removed,
            ms = report.duration_ms,
            "garbage collection done"
        );
        if let Ok(mut last) = LAST.lock() {
            *last = Some(report.clone());
        }
        if report.blobs_removed > 0 || report.links_removed > 0 {
            let event = crate::metadata::events::NewEvent {
                kind: ecrl::api::events::EventKind::Gc,
                subject: "registry".into(),
                resources: Vec::new(),
                detail: serde_json::json!({
                    "blobs-removed": report.blobs_removed,
                    "bytes-removed": report.bytes_removed,
                    "links-removed": report.links_removed,
                    "duration-ms": report.duration_ms,
                }),
            };
            if let Err(e) = state.meta.record_event(event).await {
                tracing::warn!("cannot record the collection's event: {e}");
            }
        }
    }
    Ok(report)
}

/// Every digest something holds: repositories' links and manifests, and the layer cache.
fn marked(state: &AppState) -> HashSet<ecrl::names::Digest> {
    let index = state.meta.read();
    let mut marked = index.digests_in_use();
    marked.extend(index.layers.values().map(|(d, _)| *d));
    marked
}

/// Collects every `interval`, for as long as the daemon runs (the first a whole interval
/// after start).
pub async fn schedule(state: Arc<AppState>, interval: Duration) {
    let mut tick = crate::app::every(interval);
    while state.next_tick(&mut tick).await {
        match collect(&state, false, &Progress::default()).await {
            Ok(_) => {}
            Err(e) if e.is::<Elsewhere>() => tracing::debug!("{e}"),
            Err(e) => tracing::warn!("garbage collection failed: {e:#}"),
        }
    }
}
