//! Lifecycle policies at work: which images of a repository its policy expires (a preview,
//! which deletes nothing), expiring them (a run: by hand, or every `lifecycle.interval` for
//! every repository with a policy), and never an image a task uses.
//!
//! What a policy sees as images: each manifest of the repository except those another of its
//! manifests references (an index's children go with their index, as on ECR) and artifacts
//! that refer to a subject (signatures, SBOMs). An image is in use when a task that has not
//! stopped runs it, or an ACTIVE task definition revision names it by digest.

use crate::app::AppState;
use crate::metadata::{Index, Manifest, MetaError, Repo};
use ecrl::api::lifecycle::{KeptImage, LifecyclePolicyPreview, PreviewAction, PreviewResult};
use ecrl::api::repos::ImageFailure;
use ecrl::api::repos::ImageId;
use ecrl::lifecycle::{evaluate, Image, LifecyclePolicy, Verdict};
use ecrl::names::{Digest, RepoName};
use ecrl::timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What a policy does to a repository now: the images it expires (oldest first) and those it
/// would expire but keeps, each with its rule.
pub struct Plan {
    pub expire: Vec<(Arc<Manifest>, Vec<String>, i64)>,
    pub kept: Vec<(Arc<Manifest>, Vec<String>, i64, String)>,
}

/// Why each digest must stay: the tasks that run it, the ACTIVE revisions that name it.
pub fn in_use(index: &Index) -> HashMap<Digest, String> {
    let mut used = HashMap::new();
    for (id, task) in &index.tasks {
        if task.is_stopped() {
            continue;
        }
        for c in &task.containers {
            if let Some(d) = c.image_digest.as_deref().and_then(|d| d.parse().ok()) {
                used.entry(d)
                    .or_insert_with(|| format!("task {id} ({}) runs it", task.group));
            }
        }
    }
    for family in index.task_families.values() {
        for def in family.revisions.values() {
            if def.status != "ACTIVE" {
                continue;
            }
            for c in &def.definition.container_definitions {
                let Some((_, digest)) = c.image.rsplit_once('@') else {
                    continue;
                };
                if let Ok(d) = digest.parse::<Digest>() {
                    used.entry(d).or_insert_with(|| {
                        format!(
                            "the ACTIVE task definition {} names it by digest",
                            def.family_revision()
                        )
                    });
                }
            }
        }
    }
    used
}

/// Why an image must stay, if it must: it is in use itself, or an image it references is (a
/// task runs one platform's manifest of an index).
fn use_of<'a>(used: &'a HashMap<Digest, String>, m: &Manifest) -> Option<&'a String> {
    used.get(&m.digest)
        .or_else(|| m.refs.iter().find_map(|r| used.get(r)))
}

/// The manifests of a repository that another of its manifests references (an index's
/// children): they go with their index, and are not images of their own here.
fn children_of(repo: &Repo) -> HashSet<Digest> {
    repo.manifests
        .values()
        .flat_map(|m| m.refs.iter().copied())
        .filter(|d| repo.manifests.contains_key(d))
        .collect()
}

/// The plan of `policy` for the repository `name` at `now_ms`.
pub fn plan(
    state: &AppState,
    index: &Index,
    name: &RepoName,
    repo: &Repo,
    policy: &LifecyclePolicy,
    now_ms: i64,
) -> Plan {
    let used = in_use(index);
    let children = children_of(repo);
    let mut tags: HashMap<Digest, Vec<String>> = HashMap::new();
    for (tag, digest) in &repo.tags {
        tags.entry(*digest).or_default().push(tag.to_string());
    }
    let images: Vec<Image> = repo
        .manifests
        .values()
        .filter(|m| !children.contains(&m.digest) && m.subject.is_none())
        .map(|m| Image {
            digest: m.digest,
            tags: tags.get(&m.digest).cloned().unwrap_or_default(),
            pushed_at: m.pushed_at,
            last_pulled_at: state.meta.last_pulled(name, m),
            in_use: use_of(&used, m).cloned(),
        })
        .collect();
    let verdicts = evaluate(policy, &images, now_ms);
    let mut plan = Plan {
        expire: Vec::new(),
        kept: Vec::new(),
    };
    for image in images {
        let Some(m) = repo.manifests.get(&image.digest) else {
            continue;
        };
        match verdicts.get(&image.digest) {
            Some(Verdict::Expire { rule_priority }) => {
                plan.expire.push((m.clone(), image.tags, *rule_priority))
            }
            Some(Verdict::Kept {
                rule_priority,
                reason,
            }) => plan
                .kept
                .push((m.clone(), image.tags, *rule_priority, reason.clone())),
            None => {}
        }
    }
    plan.expire
        .sort_by_key(|(m, _, _)| (m.pushed_at, m.digest.to_string()));
    plan.kept
        .sort_by_key(|(m, _, _, _)| (m.pushed_at, m.digest.to_string()));
    plan
}

/// The plan as ECR's preview answers it.
pub fn preview(
    state: &AppState,
    name: &RepoName,
    text: &str,
    plan: &Plan,
) -> LifecyclePolicyPreview {
    LifecyclePolicyPreview {
        registry_id: state.meta.account_id().to_string(),
        repository_name: name.to_string(),
        lifecycle_policy_text: text.to_string(),
        status: "COMPLETE".into(),
        preview_results: plan
            .expire
            .iter()
            .map(|(m, tags, rule)| PreviewResult {
                image_tags: tags.clone(),
                image_digest: m.digest.to_string(),
                image_pushed_at: timestamp::from_millis(m.pushed_at),
                action: PreviewAction {
                    kind: "EXPIRE".into(),
                },
                applied_rule_priority: *rule,
            })
            .collect(),
        summary: ecrl::api::lifecycle::PreviewSummary {
            expiring_image_total_count: plan.expire.len() as u64,
        },
        kept_images: plan
            .kept
            .iter()
            .map(|(m, tags, rule, reason)| KeptImage {
                image_tags: tags.clone(),
                image_digest: m.digest.to_string(),
                image_pushed_at: timestamp::from_millis(m.pushed_at),
                applied_rule_priority: *rule,
                reason: reason.clone(),
            })
            .collect(),
        failures: Vec::new(),
    }
}

/// Applies the repository's policy now: deletes what it expires (and frees the blobs only
/// those images held), records the run, logs what went. `None` when the repository has no
/// policy (or is gone).
pub async fn run(
    state: &Arc<AppState>,
    name: &RepoName,
) -> Result<Option<LifecyclePolicyPreview>, MetaError> {
    let now = crate::metadata::now_millis();
    let (text, plan) = {
        let index = state.meta.read();
        let Some(repo) = index.repos.get(name) else {
            return Ok(None);
        };
        let Some(lifecycle) = &repo.lifecycle else {
            return Ok(None);
        };
        let policy = match LifecyclePolicy::parse(&lifecycle.text) {
            Ok(p) => p,
            Err(e) => {
                // Checked when it was set: only a policy from an older ecrl could fail here.
                tracing::warn!(repository = %name, "lifecycle policy not applied: {e}");
                return Ok(None);
            }
        };
        let plan = plan(state, &index, name, repo, &policy, now);
        (lifecycle.text.clone(), plan)
    };
    let mut answer = preview(state, name, &text, &plan);
    let mut expired = HashSet::new();
    for (m, tags, rule) in &plan.expire {
        match expire(state, name, m).await {
            Ok(()) => {
                expired.insert(m.digest);
                tracing::info!(repository = %name, digest = %m.digest, tags = ?tags, rule, "lifecycle policy expired an image");
            }
            Err(reason) => answer.failures.push(ImageFailure {
                image_id: ImageId {
                    image_digest: Some(m.digest.to_string()),
                    image_tag: None,
                },
                failure_code: "ImageNotExpired".into(),
                failure_reason: reason,
            }),
        }
    }
    answer
        .preview_results
        .retain(|r| r.image_digest.parse().is_ok_and(|d| expired.contains(&d)));
    answer.summary.expiring_image_total_count = answer.preview_results.len() as u64;
    state.meta.lifecycle_evaluated(name.clone(), now).await?;
    let metrics = &crate::metrics::METRICS;
    metrics.job("lifecycle");
    metrics
        .lifecycle_images_expired
        .inc_by(expired.len() as u64);
    Ok(Some(answer))
}

/// Deletes one image a run expires, unless something changed since the plan (it was
/// re-tagged into use, or a new index took it as a child): then it stays for the next run.
async fn expire(state: &Arc<AppState>, name: &RepoName, m: &Manifest) -> Result<(), String> {
    let digest = m.digest;
    {
        let index = state.meta.read();
        let Some(repo) = index.repos.get(name) else {
            return Err(format!("{name} was deleted"));
        };
        if !repo.manifests.contains_key(&digest) {
            return Err("already deleted".into());
        }
        if repo
            .manifests
            .values()
            .any(|other| other.digest != digest && other.refs.contains(&digest))
        {
            return Err("an index now references it".into());
        }
        if let Some(reason) = use_of(&in_use(&index), m) {
            return Err(format!("kept: {reason}"));
        }
    }
    if let Some(freed) = state
        .meta
        .delete_manifest_by(name, digest, "lifecycle")
        .await
        .map_err(|e| e.to_string())?
    {
        state.release(name, freed);
    }
    state.collect_if_unused(&digest).await;
    Ok(())
}

static BOUNDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// A run of [`bound_caches`] is asked for and has not begun: more growth needs no other.
static BOUND_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks for a [`bound_caches`] run after the caches grew; growth while one waits to begin
/// adds none (a burst of fetches costs one or two runs, not one each).
pub fn caches_grew(state: &Arc<AppState>) {
    if state.config.cache_max_bytes.is_none()
        || BOUND_PENDING.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move { bound_caches(&state).await });
}

/// Keeps what pull-through caches hold within `registry.cache_max_bytes`: while the distinct
/// blobs and manifests of the repositories under cache rules (those no other repository also
/// holds) pass it, the cached image pulled least recently (fetched, when never pulled since)
/// goes, as a lifecycle expiry does. Images in use by tasks, images with a blob being fetched
/// and the image used last stay. One run at a time; answers how many images went.
pub async fn bound_caches(state: &Arc<AppState>) -> usize {
    let Some(max) = state.config.cache_max_bytes else {
        return 0;
    };
    let _one = BOUNDING.lock().await;
    // From here on, growth asks for another run.
    BOUND_PENDING.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut evicted = 0;
    loop {
        let (total, victim) = {
            let index = state.meta.read();
            let fetching = state.mirror.in_flight.fetching();
            let used = in_use(&index);
            let elsewhere: HashSet<Digest> = index
                .repos
                .iter()
                .filter(|(n, _)| index.mirror.cache_rule_for(n).is_none())
                .flat_map(|(_, r)| r.blobs.keys().chain(r.manifests.keys()))
                .copied()
                .collect();
            let mut held: HashMap<Digest, u64> = HashMap::new();
            let mut candidates = Vec::new();
            for (name, repo) in &index.repos {
                if index.mirror.cache_rule_for(name).is_none() {
                    continue;
                }
                held.extend(repo.blobs.iter().map(|(d, s)| (*d, *s)));
                held.extend(repo.manifests.values().map(|m| (m.digest, m.size)));
                let children = children_of(repo);
                for m in repo.manifests.values() {
                    if children.contains(&m.digest)
                        || use_of(&used, m).is_some()
                        || m.refs.iter().any(|d| fetching.contains(d))
                    {
                        continue;
                    }
                    let last = state.meta.last_pulled(name, m).unwrap_or(m.pushed_at);
                    candidates.push((last, name.clone(), m.clone()));
                }
            }
            let total: u64 = held
                .iter()
                .filter(|(d, _)| !elsewhere.contains(d))
                .map(|(_, s)| *s)
                .sum();
            if total <= max {
                break;
            }
            // The image used last stays, whatever its size: a pull of it may be under way.
            let order =
                |c: &(i64, RepoName, Arc<Manifest>)| (c.0, c.1.clone(), c.2.digest.to_string());
            if let Some(newest) = candidates.iter().map(order).max() {
                candidates.retain(|c| order(c) != newest);
            }
            let victim = candidates.into_iter().min_by(|a, b| {
                (a.0, &a.1, a.2.digest.to_string()).cmp(&(b.0, &b.1, b.2.digest.to_string()))
            });
            (total, victim)
        };
        let Some((_, name, m)) = victim else {
            tracing::warn!(
                held = total,
                max,
                "pull-through caches hold more than registry.cache_max_bytes, and every image \
                 left is in use or being fetched"
            );
            break;
        };
        match expire(state, &name, &m).await {
            Ok(()) => {
                evicted += 1;
                tracing::info!(repository = %name, digest = %m.digest, held = total, max,
                    "pull-through cache over registry.cache_max_bytes: evicted the image pulled least recently");
            }
            Err(reason) => {
                tracing::warn!(repository = %name, digest = %m.digest, "cannot evict a cached image: {reason}");
                break;
            }
        }
    }
    evicted
}

/// Applies every repository's policy every `interval`, for as long as the daemon runs.
pub async fn schedule(state: Arc<AppState>, interval: Duration) {
    let mut tick = crate::app::every(interval);
    while state.next_tick(&mut tick).await {
        // Instances sharing one database: the one that claims the tick applies the policies.
        let _claimed = match state
            .meta
            .exclusive(crate::metadata::ExclusiveJob::Lifecycle)
            .await
        {
            Ok(Some(claimed)) => claimed,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("lifecycle policies not applied: {e}");
                continue;
            }
        };
        let repos: Vec<RepoName> = state
            .meta
            .read()
            .repos
            .iter()
            .filter(|(_, r)| r.lifecycle.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        bound_caches(&state).await;
        for name in repos {
            if state.shutdown.is_cancelled() {
                return;
            }
            match run(&state, &name).await {
                Ok(Some(done)) if !done.preview_results.is_empty() => tracing::info!(
                    repository = %name,
                    expired = done.preview_results.len(),
                    "lifecycle policy applied"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(repository = %name, "lifecycle policy not applied: {e}"),
            }
        }
    }
}
