//! `ecrl fsck [--repair]`: every blob re-read (decrypted) and hashed against its name; every
//! repository's links and manifests checked against what the store holds. Each problem names
//! the images it breaks. `--repair` moves corrupt blobs to `<data dir>/quarantine/`, drops
//! the links to lost blobs and marks the images that lost content: their pulls then say so at
//! once instead of failing half-way, until the image is pushed again.

use crate::app::AppState;
use crate::progress::Progress;
use ecrl::api::system::{FsckProblem, FsckReport};
use ecrl::names::{Digest, RepoName};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;

const CORRUPT: &str = "CORRUPT_BLOB";
const MISSING: &str = "MISSING_BLOB";
const MISSING_REFERENCE: &str = "MISSING_REFERENCE";

pub async fn run(
    state: &Arc<AppState>,
    repair: bool,
    progress: &Progress,
) -> anyhow::Result<FsckReport> {
    let started = std::time::Instant::now();
    let mut report = FsckReport {
        repair,
        ..Default::default()
    };
    progress.step("walking the store", 0);
    let files = {
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.list()).await??
    };
    let on_disk: HashSet<Digest> = files.iter().copied().collect();

    // 1. Every blob's content against its name, as many at once as there are cores (each
    // read decrypts on a thread of its own and hashes on the runtime).
    let mut bad: Vec<(Digest, &'static str, String)> = Vec::new();
    progress.step("checking blobs", files.len() as u64);
    let at_once = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut checks = futures_util::stream::iter(files.iter().copied())
        .map(|digest| async move { (digest, check_blob(state, &digest).await) })
        .buffer_unordered(at_once);
    while let Some((digest, checked)) = checks.next().await {
        match checked {
            Ok(bytes) => {
                report.blobs_checked += 1;
                report.bytes_checked += bytes;
                progress.add(1, bytes);
            }
            // Removed meanwhile (a delete, a collection): nothing to check.
            Err(None) => progress.add(1, 0),
            Err(Some(why)) => {
                progress.add(1, 0);
                report.blobs_checked += 1;
                bad.push((digest, CORRUPT, why));
            }
        }
    }
    drop(checks);
    // 2. The metadata against the store.
    progress.step("checking repositories", 0);
    let mut references: Vec<(RepoName, Digest, Digest)> = Vec::new();
    let mut missing = HashSet::new();
    {
        let index = state.meta.read();
        for (name, repo) in &index.repos {
            for digest in repo.blobs.keys() {
                if !on_disk.contains(digest) && !repo.manifests.contains_key(digest) {
                    missing.insert(*digest);
                }
            }
            // Images already marked as having lost content are known.
            for m in repo
                .manifests
                .values()
                .filter(|m| !repo.damaged.contains_key(&m.digest))
            {
                for r in &m.refs {
                    if !repo.blobs.contains_key(r) && !repo.manifests.contains_key(r) {
                        references.push((name.clone(), m.digest, *r));
                    }
                }
            }
        }
    }
    {
        for digest in missing {
            // Deleted between the listing and now is no problem.
            if !matches!(state.store.stat(&digest).await, Ok(Some(_))) {
                bad.push((
                    digest,
                    MISSING,
                    "a repository links it, but no file in the store holds it".into(),
                ));
            }
        }
    }

    // The images each problem breaks, and the repair.
    let mut damaged: Vec<(RepoName, Digest, String)> = Vec::new();
    for (digest, kind, detail) in bad {
        let broken = broken_by(state, &digest);
        let mut problem = FsckProblem {
            kind: kind.into(),
            digest: digest.to_string(),
            detail: detail.clone(),
            images: broken.iter().map(|(r, m)| describe(state, r, m)).collect(),
            repaired: None,
        };
        if repair {
            let mut did = Vec::new();
            if kind == CORRUPT {
                let _guard = state.lock_blob(&digest).await;
                match state.store.quarantine(&digest).await {
                    Ok(to) => did.push(format!("moved to {}", to.display())),
                    Err(e) => did.push(format!("could not be moved aside: {e}")),
                }
            }
            let from = state.meta.unlink_lost(digest).await?;
            if !from.is_empty() {
                did.push(format!(
                    "unlinked from {} repositor{}",
                    from.len(),
                    if from.len() == 1 { "y" } else { "ies" }
                ));
            }
            let why = if kind == CORRUPT {
                format!("blob {digest} failed its check: {detail}")
            } else {
                format!("blob {digest} is missing")
            };
            for (repo, m) in &broken {
                damaged.push((repo.clone(), *m, why.clone()));
            }
            if !broken.is_empty() {
                did.push(format!(
                    "{} image(s) marked as having lost content",
                    broken.len()
                ));
            }
            problem.repaired = Some(did.join("; "));
        }
        report.problems.push(problem);
    }
    for (repo, manifest, missing) in references {
        let mut problem = FsckProblem {
            kind: MISSING_REFERENCE.into(),
            digest: missing.to_string(),
            detail: format!("manifest {manifest} in {repo} references it; {repo} does not hold it"),
            images: vec![describe(state, &repo, &manifest)],
            repaired: None,
        };
        if repair {
            damaged.push((
                repo.clone(),
                manifest,
                format!("it references {missing}, which {repo} does not hold"),
            ));
            problem.repaired = Some("image marked as having lost content".into());
        }
        report.problems.push(problem);
    }
    if repair && !damaged.is_empty() {
        state.meta.mark_damaged(damaged).await?;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        blobs = report.blobs_checked,
        bytes = report.bytes_checked,
        problems = report.problems.len(),
        repair,
        "fsck done"
    );
    Ok(report)
}

/// Reads a blob whole through the store (decrypting it) and hashes it. `Err(None)` when the
/// blob is gone; `Err(Some(why))` when it is not what its name says.
async fn check_blob(state: &AppState, digest: &Digest) -> Result<u64, Option<String>> {
    match state.store.hash_blob(digest).await {
        Ok((size, got)) if got == *digest => Ok(size),
        Ok((_, got)) => Err(Some(format!("its content hashes to {got}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// The images a lost digest breaks: the manifests that reference it (or are it), and the
/// indexes over those, in every repository.
fn broken_by(state: &AppState, digest: &Digest) -> Vec<(RepoName, Digest)> {
    let index = state.meta.read();
    let mut out = Vec::new();
    for (name, repo) in &index.repos {
        let mut hit: HashSet<Digest> = repo
            .manifests
            .values()
            .filter(|m| m.digest == *digest || m.refs.contains(digest))
            .map(|m| m.digest)
            .collect();
        // Indexes over broken manifests are broken too (a level or two).
        for _ in 0..2 {
            let more: Vec<Digest> = repo
                .manifests
                .values()
                .filter(|m| !hit.contains(&m.digest) && m.refs.iter().any(|r| hit.contains(r)))
                .map(|m| m.digest)
                .collect();
            hit.extend(more);
        }
        let mut hit: Vec<Digest> = hit.into_iter().collect();
        hit.sort_by_key(|d| d.to_string());
        out.extend(hit.into_iter().map(|d| (name.clone(), d)));
    }
    out
}

/// `repo@digest (tag, tag)`.
fn describe(state: &AppState, repo: &RepoName, digest: &Digest) -> String {
    let index = state.meta.read();
    let tags: Vec<String> = index
        .repos
        .get(repo)
        .map(|r| {
            r.tags
                .iter()
                .filter(|(_, d)| *d == digest)
                .map(|(t, _)| t.to_string())
                .collect()
        })
        .unwrap_or_default();
    if tags.is_empty() {
        format!("{repo}@{digest}")
    } else {
        format!("{repo}@{digest} ({})", tags.join(", "))
    }
}
