//! `ecrl mirror sync`: copies the images a source names (a tag, a digest, every tag or the
//! tags a pattern matches) to a destination, here or on another registry, any direction.
//! What the destination has is not sent again: an unchanged image costs one manifest
//! lookup on each side.

use super::copy::{Copier, CopyError, End, PlatformFilter};
use super::MirrorError;
use crate::app::AppState;
use ecrl::api::mirror::{ImageSync, ImageSyncStatus, SyncEvent, SyncResult, SyncSpec};
use ecrl::mirror::Location;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Images copied at once when the spec does not say.
pub const DEFAULT_JOBS: u32 = 4;
/// The most images copied at once.
pub const MAX_JOBS: u32 = 32;
/// Blobs of one image moved at once.
const BLOB_JOBS: usize = 4;

/// A spec read and checked.
pub struct Plan {
    pub source: Location,
    pub destination: Location,
    pub tags: Option<regex::Regex>,
    pub platforms: Vec<PlatformFilter>,
    pub jobs: u32,
}

/// Checks a spec against this registry, before anything runs (a job is checked when it is
/// made, so a bad one is refused then, not at its first run).
pub fn plan(state: &AppState, spec: &SyncSpec) -> Result<Plan, MirrorError> {
    let invalid = MirrorError::Invalid;
    let own = state.own_hosts();
    let source = Location::parse(&spec.source, &own).map_err(|e| invalid(format!("source {e}")))?;
    let destination = Location::parse(&spec.destination, &own)
        .map_err(|e| invalid(format!("destination {e}")))?;
    if matches!(
        (&source, &destination),
        (Location::Local { .. }, Location::Local { .. })
    ) {
        return Err(invalid(
            "both ends are this registry: use 'ecrl image tag' or 'ecrl repo push' instead, or \
             name a remote registry (host[:port]/repo)"
                .into(),
        ));
    }
    if destination.digest().is_some() {
        return Err(invalid(
            "the destination cannot name a digest: images keep theirs; give a repository and \
             optionally a tag"
                .into(),
        ));
    }
    let many = spec.all_tags || spec.tags.is_some();
    if spec.all_tags && spec.tags.is_some() {
        return Err(invalid("give --all-tags or --tags, not both".into()));
    }
    if many && (source.tag().is_some() || source.digest().is_some()) {
        return Err(invalid(
            "--all-tags and --tags take a repository as the source, without a tag or digest".into(),
        ));
    }
    if many && destination.tag().is_some() {
        return Err(invalid(
            "--all-tags and --tags keep each image's tag: the destination cannot name one".into(),
        ));
    }
    let tags = match &spec.tags {
        Some(pattern) => Some(
            regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    invalid(format!(
                        "--tags {pattern:?} is not a regular expression: {e}"
                    ))
                })?,
        ),
        None => None,
    };
    let platforms = spec
        .platforms
        .iter()
        .map(|p| p.parse::<PlatformFilter>().map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = spec.jobs.unwrap_or(DEFAULT_JOBS);
    if jobs == 0 || jobs > MAX_JOBS {
        return Err(invalid(format!("--jobs must be 1 to {MAX_JOBS}")));
    }
    if let Location::Local { repository, .. } = &destination {
        if !state.config.create_on_push && !state.meta.read().repos.contains_key(repository) {
            return Err(invalid(format!(
                "repository {repository} does not exist and registry.create_on_push is off; \
                 create it with 'ecrl repo create {repository}'"
            )));
        }
    }
    if let Location::Local { repository, .. } = &source {
        if !state.meta.read().repos.contains_key(repository) {
            return Err(MirrorError::Remote(
                crate::transfer::remote::RemoteError::NotFound(format!(
                    "repository {repository} does not exist"
                )),
            ));
        }
    }
    Ok(Plan {
        source,
        destination,
        tags,
        platforms,
        jobs,
    })
}

async fn end(state: &AppState, location: &Location) -> Result<End, MirrorError> {
    Ok(match location {
        Location::Local { repository, .. } => End::Local(repository.clone()),
        Location::Remote(r) => End::Remote {
            remote: state.mirror.remote(&r.registry).await?,
            repo: r.repository.clone(),
        },
    })
}

/// Runs a sync, sending progress to `events`; the result says what happened to each image.
pub async fn run(
    state: &Arc<AppState>,
    spec: &SyncSpec,
    dry_run: bool,
    events: Option<mpsc::Sender<SyncEvent>>,
    cancel: CancellationToken,
) -> Result<SyncResult, MirrorError> {
    let plan = plan(state, spec)?;
    let src = end(state, &plan.source).await?;
    let dst = end(state, &plan.destination).await?;

    // Which images: (source reference, destination reference).
    let images: Vec<(String, Option<String>)> = if let Some(digest) = plan.source.digest() {
        let dst_ref = plan.destination.tag().map(|t| t.to_string());
        vec![(digest.to_string(), dst_ref)]
    } else if spec.all_tags || plan.tags.is_some() {
        let mut tags: Vec<String> = match &src {
            End::Local(repo) => state
                .meta
                .read()
                .repos
                .get(repo)
                .map(|r| r.tags.keys().map(|t| t.to_string()).collect())
                .unwrap_or_default(),
            End::Remote { remote, repo } => remote.tags(repo).await?,
        };
        if let Some(re) = &plan.tags {
            tags.retain(|t| re.is_match(t));
        }
        // A remote's tag list is input like any other: names that are not tags are skipped.
        tags.retain(|t| t.parse::<ecrl::names::Tag>().is_ok());
        tags.sort();
        tags.dedup();
        tags.into_iter().map(|t| (t.clone(), Some(t))).collect()
    } else {
        let tag = plan
            .source
            .tag()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "latest".into());
        let dst_tag = plan
            .destination
            .tag()
            .map(|t| t.to_string())
            .unwrap_or_else(|| tag.clone());
        vec![(tag, Some(dst_tag))]
    };

    let copier = Copier {
        state: state.clone(),
        partials: state.mirror.partials.clone(),
        events: events.clone(),
        platforms: plan.platforms.clone(),
        referrers: !spec.no_referrers,
        blob_jobs: BLOB_JOBS,
        cancel: cancel.clone(),
    };
    let src_label = src.label();
    let dst_label = dst.label();
    let results: Vec<ImageSync> = futures_util::stream::iter(images)
        .map(|(src_ref, dst_ref)| {
            let copier = &copier;
            let (src, dst, events) = (&src, &dst, &events);
            let src_label = &src_label;
            let dst_label = &dst_label;
            async move {
                let join = |label: &str, r: &str| {
                    if r.starts_with("sha256:") {
                        format!("{label}@{r}")
                    } else {
                        format!("{label}:{r}")
                    }
                };
                let source = join(src_label, &src_ref);
                let destination = match &dst_ref {
                    Some(r) => join(dst_label, r),
                    None => dst_label.clone(),
                };
                if let Some(events) = events {
                    let _ = events
                        .send(SyncEvent::ImageStarted {
                            source: source.clone(),
                            destination: destination.clone(),
                        })
                        .await;
                }
                let outcome = async {
                    // An image of a pull-through cache here may lack the blobs no one pulled
                    // yet: they are fetched first (the copy reads the store).
                    if let (End::Local(repo), false) = (src, dry_run) {
                        if let Ok(reference) = src_ref.parse::<ecrl::names::Reference>() {
                            super::cache::ensure_image(state, repo, &reference)
                                .await
                                .map_err(|e| CopyError::Invalid(e.to_string()))?;
                        }
                    }
                    copier
                        .image(src, &src_ref, dst, dst_ref.as_deref(), dry_run)
                        .await
                }
                .await;
                let image = summary(source, destination, outcome, dry_run);
                match &image.status {
                    ImageSyncStatus::Failed => tracing::warn!(
                        source = %image.source,
                        destination = %image.destination,
                        "image sync failed: {}",
                        image.reason.as_deref().unwrap_or_default()
                    ),
                    ImageSyncStatus::Copied => tracing::info!(
                        source = %image.source,
                        destination = %image.destination,
                        blobs = image.blobs_copied,
                        bytes = image.bytes_copied,
                        "image copied"
                    ),
                    _ => {}
                }
                if let Some(events) = events {
                    let _ = events.send(SyncEvent::ImageDone(image.clone())).await;
                }
                image
            }
        })
        .buffered(plan.jobs as usize)
        .collect()
        .await;
    let count = |s: ImageSyncStatus| results.iter().filter(|i| i.status == s).count() as u64;
    Ok(SyncResult {
        source: src_label,
        destination: dst_label,
        copied: count(ImageSyncStatus::Copied) + count(ImageSyncStatus::WouldCopy),
        unchanged: count(ImageSyncStatus::Unchanged),
        failed: count(ImageSyncStatus::Failed),
        images: results,
        dry_run,
        job: None,
    })
}

fn summary(
    source: String,
    destination: String,
    outcome: Result<super::copy::Outcome, CopyError>,
    dry_run: bool,
) -> ImageSync {
    match outcome {
        Ok(o) => ImageSync {
            source,
            destination,
            image_digest: o.digest.map(|d| d.to_string()),
            status: match (o.unchanged, dry_run) {
                (true, _) => ImageSyncStatus::Unchanged,
                (false, true) => ImageSyncStatus::WouldCopy,
                (false, false) => ImageSyncStatus::Copied,
            },
            reason: None,
            blobs_copied: o.blobs_copied,
            blobs_existing: o.blobs_existing,
            bytes_copied: o.bytes_copied,
            referrers_copied: o.referrers_copied,
        },
        Err(e) => ImageSync {
            source,
            destination,
            image_digest: None,
            status: ImageSyncStatus::Failed,
            reason: Some(e.to_string()),
            blobs_copied: 0,
            blobs_existing: 0,
            bytes_copied: 0,
            referrers_copied: 0,
        },
    }
}

/// A result in a few words: `2 copied, 48 unchanged, 1 failed`.
pub fn describe(result: &SyncResult) -> String {
    let mut parts = vec![
        format!("{} copied", result.copied),
        format!("{} unchanged", result.unchanged),
    ];
    if result.failed > 0 {
        parts.push(format!("{} failed", result.failed));
        if let Some(first) = result
            .images
            .iter()
            .find(|i| i.status == ImageSyncStatus::Failed)
        {
            parts.push(format!(
                "first failure: {}: {}",
                first.source,
                first.reason.as_deref().unwrap_or_default()
            ));
        }
    }
    parts.join(", ")
}
