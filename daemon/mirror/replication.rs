//! Replication (ECR's PutReplicationConfiguration, to remote registries): the rules, the
//! workers that send each queued image to its destination, and each image's status.
//!
//! Images are queued as they are recorded (see `metadata::mirror`), so the queue survives a
//! restart. Workers send with bounded concurrency; a failure that may pass (a registry
//! unreachable, a connection broken, a rate limit) is retried with exponential backoff up to
//! `mirror.replication.max_attempts`, then FAILED with its reason. Deletes are not
//! replicated, as on ECR.

use super::copy::{Copier, CopyError, End};
use super::MirrorError;
use crate::app::AppState;
use crate::metadata::mirror::{Attempt, Replication, IN_PROGRESS};
use crate::metadata::now_millis;
use crate::metadata::ExclusiveJob;
use ecrl::api::mirror::{DestinationStatus, ImageReplicationStatus};
use ecrl::api::repos::ImageId;
use ecrl::mirror::{InvalidReplication, ReplicationConfiguration};
use ecrl::names::{Digest, Reference, RepoName};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

pub async fn put(
    state: &AppState,
    document: &str,
) -> Result<ReplicationConfiguration, MirrorError> {
    let config = ReplicationConfiguration::parse(document, &state.own_hosts()).map_err(
        |InvalidReplication(errors)| {
            MirrorError::Invalid(format!(
                "invalid replication configuration: {}",
                errors.join("; ")
            ))
        },
    )?;
    state
        .meta
        .put_replication(config)
        .await
        .map_err(|e| MirrorError::Invalid(e.to_string()))
}

pub fn get(state: &AppState) -> ReplicationConfiguration {
    state.meta.read().mirror.replication.clone()
}

/// The status of an image's replication to each destination it was queued for.
pub fn status(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
) -> Result<ImageReplicationStatus, MirrorError> {
    let index = state.meta.read();
    let r = index.repos.get(repo).ok_or_else(|| {
        MirrorError::Remote(crate::transfer::remote::RemoteError::NotFound(format!(
            "repository {repo} does not exist"
        )))
    })?;
    let digest = match reference {
        Reference::Digest(d) => *d,
        Reference::Tag(t) => *r.tags.get(t).ok_or_else(|| {
            MirrorError::Remote(crate::transfer::remote::RemoteError::NotFound(format!(
                "{repo} has no image tagged {t}"
            )))
        })?,
    };
    let statuses = statuses_of(&index.mirror.queue, repo, &digest);
    Ok(ImageReplicationStatus {
        repository_name: repo.to_string(),
        image_id: ImageId {
            image_digest: Some(digest.to_string()),
            image_tag: match reference {
                Reference::Tag(t) => Some(t.to_string()),
                Reference::Digest(_) => None,
            },
        },
        replication_statuses: statuses,
    })
}

/// One status per destination: the newest of the image's entries for it.
pub fn statuses_of(
    queue: &std::collections::BTreeMap<i64, Replication>,
    repo: &RepoName,
    digest: &Digest,
) -> Vec<DestinationStatus> {
    let mut out: Vec<(i64, DestinationStatus)> = Vec::new();
    for item in queue
        .values()
        .filter(|i| &i.repo == repo && &i.digest == digest)
    {
        let status = DestinationStatus {
            registry: item.registry.clone(),
            repository_name: item.dest_repo.to_string(),
            status: item.status.clone(),
            failure_code: item
                .failure_code
                .clone()
                .filter(|_| item.status != "COMPLETE"),
            failure_reason: item
                .failure_reason
                .clone()
                .filter(|_| item.status != "COMPLETE"),
            attempts: item.attempts,
            updated_at: ecrl::timestamp::from_millis(item.updated_at),
        };
        match out.iter_mut().find(|(_, s)| {
            s.registry == status.registry && s.repository_name == status.repository_name
        }) {
            // In progress anywhere means in progress; else the newest word wins.
            Some((at, s)) => {
                if item.status == IN_PROGRESS || (s.status != IN_PROGRESS && item.updated_at > *at)
                {
                    *at = item.updated_at;
                    *s = status;
                }
            }
            None => out.push((item.updated_at, status)),
        }
    }
    out.sort_by(|a, b| {
        (&a.1.registry, &a.1.repository_name).cmp(&(&b.1.registry, &b.1.repository_name))
    });
    out.into_iter().map(|(_, s)| s).collect()
}

pub fn start(state: &Arc<AppState>) {
    let state = state.clone();
    tokio::spawn(async move { dispatcher(state).await });
}

/// Hands due entries to at most `mirror.replication.workers` workers at once.
async fn dispatcher(state: Arc<AppState>) {
    // Instances sharing one database: one replicates, the others take over if it stops.
    let Some(_claimed) = crate::app::claim(&state, ExclusiveJob::Replication).await else {
        return;
    };
    let workers = state.mirror.config().replication_workers;
    let permits = Arc::new(tokio::sync::Semaphore::new(workers));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let mut running: HashSet<i64> = HashSet::new();
    loop {
        let now = now_millis();
        let due = state.meta.read().mirror.due(now, &running);
        for item in due {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            running.insert(item.id);
            let state = state.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let id = item.id;
                attempt(&state, item).await;
                drop(permit);
                let _ = done.send(id);
            });
        }
        let next = state.meta.read().mirror.next_due();
        let wait = match next {
            Some(at) if at > now => Duration::from_millis((at - now) as u64),
            Some(_) => Duration::from_secs(1),
            None => Duration::from_secs(3600),
        };
        // Pushes through other instances queue replications this one is not woken for.
        let wait = if state.meta.shared() {
            wait.min(crate::app::SHARED_POLL)
        } else {
            wait
        };
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = state.mirror.replication_wake.notified() => {}
            Some(id) = done_rx.recv() => { running.remove(&id); }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One try at one entry, and its outcome recorded.
async fn attempt(state: &Arc<AppState>, item: Replication) {
    let cancel: CancellationToken = state.shutdown.child_token();
    let outcome = send(state, &item, cancel.clone()).await;
    if cancel.is_cancelled() {
        // The daemon is stopping: the entry stays queued for the next start.
        return;
    }
    let config = state.mirror.config();
    let result = match outcome {
        Ok(()) => {
            tracing::info!(
                repository = %item.repo,
                digest = %item.digest,
                registry = %item.registry,
                "image replicated"
            );
            crate::metrics::METRICS.replications.inc();
            Attempt::Complete
        }
        Err(Failure {
            transient,
            code,
            reason,
            retry_after,
        }) => {
            crate::metrics::METRICS.replication_failures.inc();
            let attempts = item.attempts + 1;
            if transient && attempts < config.replication_max_attempts {
                // A registry that says when to come back is heard.
                let delay = backoff(config.replication_retry_delay, attempts)
                    .max(retry_after.unwrap_or_default());
                tracing::info!(
                    repository = %item.repo,
                    digest = %item.digest,
                    registry = %item.registry,
                    attempt = attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    "replication failed, will retry: {reason}"
                );
                Attempt::Retry {
                    code: code.into(),
                    reason,
                    at: now_millis() + delay.as_millis() as i64,
                }
            } else {
                tracing::warn!(
                    repository = %item.repo,
                    digest = %item.digest,
                    registry = %item.registry,
                    attempts,
                    "replication FAILED: {reason}"
                );
                Attempt::Failed {
                    code: code.into(),
                    reason,
                }
            }
        }
    };
    if let Err(e) = state.meta.replication_attempted(item.id, result).await {
        tracing::warn!("cannot record a replication's outcome: {e}");
    }
    state.mirror.replication_wake.notify_one();
}

/// The wait before try `attempts + 1`: doubling from `first`, at most [`MAX_BACKOFF`], with
/// a little jitter so that many failures do not retry in lockstep.
pub fn backoff(first: Duration, attempts: u32) -> Duration {
    let doubled = first.saturating_mul(1u32 << (attempts.saturating_sub(1)).min(20));
    let base = doubled.min(MAX_BACKOFF);
    let jitter = (now_millis() as u64 % 1000) as f64 / 1000.0 * 0.2;
    base.mul_f64(0.9 + jitter)
}

async fn send(
    state: &Arc<AppState>,
    item: &Replication,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    let present = state
        .meta
        .read()
        .repos
        .get(&item.repo)
        .is_some_and(|r| r.manifests.contains_key(&item.digest));
    if !present {
        return Err(Failure {
            transient: false,
            code: "IMAGE_NOT_FOUND",
            reason: format!(
                "{}@{} was deleted before it was replicated",
                item.repo, item.digest
            ),
            retry_after: None,
        });
    }
    let remote = state
        .mirror
        .remote(&item.registry)
        .await
        .map_err(|e| match e {
            MirrorError::Remote(r) => Failure::of(&r),
            e => Failure {
                transient: false,
                code: "CREDENTIALS",
                reason: e.to_string(),
                retry_after: None,
            },
        })?;
    let copier = Copier {
        state: state.clone(),
        partials: state.mirror.partials.clone(),
        events: None,
        platforms: Vec::new(),
        referrers: true,
        blob_jobs: 4,
        cancel,
    };
    let src = End::Local(item.repo.clone());
    let dst = End::Remote {
        remote,
        repo: item.dest_repo.clone(),
    };
    let dst_ref = item
        .tag
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| item.digest.to_string());
    copier
        .image(&src, &item.digest.to_string(), &dst, Some(&dst_ref), false)
        .await
        .map(|_| ())
        .map_err(|e: CopyError| match &e {
            CopyError::Remote(r) => Failure::of(r),
            _ => Failure {
                transient: e.is_transient(),
                code: e.code(),
                reason: e.to_string(),
                retry_after: None,
            },
        })
}

/// Why an attempt failed, and whether (and when) to try again.
struct Failure {
    transient: bool,
    code: &'static str,
    reason: String,
    /// What a rate-limiting registry asked for (`Retry-After`).
    retry_after: Option<Duration>,
}

impl Failure {
    fn of(e: &crate::transfer::remote::RemoteError) -> Failure {
        Failure {
            transient: e.is_transient(),
            code: e.code(),
            reason: e.to_string(),
            retry_after: match e {
                crate::transfer::remote::RemoteError::TooManyRequests {
                    retry_after: Some(s),
                    ..
                } => Some(Duration::from_secs((*s).min(3600))),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let first = Duration::from_secs(5);
        let b1 = backoff(first, 1);
        assert!(
            b1 >= Duration::from_millis(4500) && b1 <= Duration::from_millis(5500),
            "{b1:?}"
        );
        let b3 = backoff(first, 3);
        assert!(
            b3 >= Duration::from_secs(18) && b3 <= Duration::from_secs(22),
            "{b3:?}"
        );
        let b30 = backoff(first, 30);
        assert!(
            b30 <= MAX_BACKOFF.mul_f64(1.1) && b30 >= MAX_BACKOFF.mul_f64(0.9),
            "{b30:?}"
        );
    }
}
