//! Mirroring's state: scheduled sync jobs, the replication configuration, and the
//! replication queue (which is also each image's replication status): the writes (through
//! [`Metadata::write`]) and the part of [`load`](super::load) that rebuilds them.
//!
//! An image pushed into a repository a rule matches is queued in the same transaction that
//! records it, so a push that returned is replicated even if the daemon dies right after.

use super::db::Db;
use super::{exec, now_millis, Index, MetaError, Metadata};
use ecrl::api::mirror::{CacheRule, SyncSpec};
use ecrl::mirror::ReplicationConfiguration;
use ecrl::names::{Digest, RepoName, Tag};
use rusqlite::params;
use std::collections::BTreeMap;

const REPLICATION_SETTING: &str = "replication_configuration";

pub const IN_PROGRESS: &str = "IN_PROGRESS";
pub const COMPLETE: &str = "COMPLETE";
pub const FAILED: &str = "FAILED";

/// Finished replications are kept this long (for their status), then forgotten.
const KEEP_FINISHED_MS: i64 = 30 * 24 * 3600 * 1000;
/// At most this many finished ones are kept, the newest.
const KEEP_FINISHED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub spec: SyncSpec,
    pub every_seconds: u64,
    pub created_at: i64,
    pub last_run_at: Option<i64>,
    pub last_result: Option<String>,
    pub last_summary: Option<String>,
    pub next_run_at: i64,
}

/// One image's copy to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub id: i64,
    pub repo: RepoName,
    pub digest: Digest,
    pub tag: Option<Tag>,
    pub registry: String,
    pub dest_repo: RepoName,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Default)]
pub struct MirrorIndex {
    pub jobs: BTreeMap<String, Job>,
    pub replication: ReplicationConfiguration,
    pub queue: BTreeMap<i64, Replication>,
    /// Pull-through cache rules by repository prefix.
    pub cache_rules: BTreeMap<String, CacheRule>,
    /// Cached tags: where each came from and when the upstream was last asked.
    pub cache_tags: std::collections::HashMap<(RepoName, Tag), CachedTag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedTag {
    /// `host/repository:tag` upstream.
    pub upstream: String,
    pub checked_at: i64,
}

impl MirrorIndex {
    /// The rule whose prefix `repo` is under (the longest, when several are).
    pub fn cache_rule_for(&self, repo: &RepoName) -> Option<&CacheRule> {
        self.cache_rules
            .values()
            .filter(|r| {
                repo.as_str()
                    .strip_prefix(r.ecr_repository_prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|r| r.ecr_repository_prefix.len())
    }
}

impl MirrorIndex {
    /// The queued copies due at `now`, oldest first, leaving out `running`.
    pub fn due(&self, now: i64, running: &std::collections::HashSet<i64>) -> Vec<Replication> {
        self.queue
            .values()
            .filter(|r| r.status == IN_PROGRESS && r.next_attempt_at <= now)
            .filter(|r| !running.contains(&r.id))
            .cloned()
            .collect()
    }

    /// When the next queued copy is due, if any is waiting.
    pub fn next_due(&self) -> Option<i64> {
        self.queue
            .values()
            .filter(|r| r.status == IN_PROGRESS)
            .map(|r| r.next_attempt_at)
            .min()
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, MetaError> {
    serde_json::to_string(value).map_err(|e| MetaError::Db(format!("encoding JSON: {e}")))
}

/// Queues `digest` (just recorded in `repo`, under `tag` if any) for every destination the
/// replication rules give the repository. Called inside the recording transaction.
pub(super) fn enqueue(
    conn: &Db,
    index: &mut Index,
    repo: &RepoName,
    digest: &Digest,
    tag: Option<&Tag>,
) {
    let destinations = index.mirror.replication.destinations_for(repo);
    let now = now_millis();
    for (registry, dest_repo) in destinations {
        let tag_text = tag.map(|t| t.to_string()).unwrap_or_default();
        let inserted = conn
            .prepare_cached(
                "INSERT INTO replication (repo, digest, tag, registry, dest_repo, status,
                    attempts, next_attempt_at, failure_code, failure_reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, NULL, NULL, ?7)
                 ON CONFLICT (repo, digest, tag, registry, dest_repo) DO UPDATE SET
                    status = excluded.status, attempts = 0,
                    next_attempt_at = excluded.next_attempt_at, failure_code = NULL,
                    failure_reason = NULL, updated_at = excluded.updated_at
                 RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        repo.as_str(),
                        digest.to_string(),
                        tag_text,
                        registry,
                        dest_repo.as_str(),
                        IN_PROGRESS,
                        now
                    ],
                    |r| r.get::<_, i64>(0),
                )
            });
        match inserted {
            Ok(id) => {
                index.mirror.queue.insert(
                    id,
                    Replication {
                        id,
                        repo: repo.clone(),
                        digest: *digest,
                        tag: tag.cloned(),
                        registry,
                        dest_repo,
                        status: IN_PROGRESS.into(),
                        attempts: 0,
                        next_attempt_at: now,
                        failure_code: None,
                        failure_reason: None,
                        updated_at: now,
                    },
                );
            }
            Err(e) => tracing::error!(
                repository = %repo,
                %digest,
                "cannot queue the image for replication: {e}"
            ),
        }
    }
}

impl Metadata {
    pub async fn put_replication(
        &self,
        config: ReplicationConfiguration,
    ) -> Result<ReplicationConfiguration, MetaError> {
        self.write(move |conn, index| {
            exec(
                conn,
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![REPLICATION_SETTING, json(&config)?],
            )?;
            index.mirror.replication = config.clone();
            Ok(config)
        })
        .await
    }

    /// Records how a copy went: done, failed for good, or to be tried again at `retry_at`.
    pub async fn replication_attempted(&self, id: i64, outcome: Attempt) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let Some(item) = index.mirror.queue.get(&id) else {
                return Ok(());
            };
            let mut item = item.clone();
            let now = now_millis();
            item.attempts = item.attempts.saturating_add(1);
            item.updated_at = now;
            match outcome {
                Attempt::Complete => {
                    item.status = COMPLETE.into();
                    item.failure_code = None;
                    item.failure_reason = None;
                }
                Attempt::Failed { code, reason } => {
                    item.status = FAILED.into();
                    item.failure_code = Some(code);
                    item.failure_reason = Some(reason);
                }
                Attempt::Retry { code, reason, at } => {
                    item.next_attempt_at = at;
                    item.failure_code = Some(code);
                    item.failure_reason = Some(reason);
                }
            }
            exec(
                conn,
                "UPDATE replication SET status = ?2, attempts = ?3, next_attempt_at = ?4,
                    failure_code = ?5, failure_reason = ?6, updated_at = ?7 WHERE id = ?1",
                params![
                    id,
                    item.status,
                    item.attempts,
                    item.next_attempt_at,
                    item.failure_code,
                    item.failure_reason,
                    item.updated_at
                ],
            )?;
            if item.status != IN_PROGRESS {
                let result = if item.status == COMPLETE {
                    "SUCCESS"
                } else {
                    "FAILED"
                };
                let mut detail = serde_json::json!({
                    "result": result,
                    "repository-name": item.repo.as_str(),
                    "image-digest": item.digest.to_string(),
                    "destination-registry": item.registry,
                    "destination-repository": item.dest_repo.as_str(),
                    "attempts": item.attempts,
                });
                if let Some(tag) = &item.tag {
                    detail["image-tag"] = tag.as_str().into();
                }
                if let Some(reason) = &item.failure_reason {
                    detail["failure-reason"] = reason.as_str().into();
                }
                let mut event = super::events::NewEvent::repo(
                    ecrl::api::events::EventKind::Replication,
                    item.repo.as_str(),
                    detail,
                );
                event.resources = index.events.repository_arn(item.repo.as_str());
                super::events::record(conn, index, event)?;
            }
            index.mirror.queue.insert(id, item);
            prune(conn, index)?;
            Ok(())
        })
        .await
    }

    pub async fn create_job(&self, job: Job) -> Result<Job, MetaError> {
        self.write(move |conn, index| {
            exec(
                conn,
                "INSERT INTO mirror_jobs (id, spec, every_seconds, created_at, last_run_at,
                    last_result, last_summary, next_run_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, NULL, NULL, ?5)",
                params![
                    job.id,
                    json(&job.spec)?,
                    job.every_seconds as i64,
                    job.created_at,
                    job.next_run_at
                ],
            )?;
            index.mirror.jobs.insert(job.id.clone(), job.clone());
            Ok(job)
        })
        .await
    }

    pub async fn delete_job(&self, id: String) -> Result<Option<Job>, MetaError> {
        self.write(move |conn, index| {
            exec(conn, "DELETE FROM mirror_jobs WHERE id = ?1", [&id])?;
            Ok(index.mirror.jobs.remove(&id))
        })
        .await
    }

    /// Records a job's run: started (`result` RUNNING) or finished.
    pub async fn job_ran(
        &self,
        id: String,
        at: i64,
        result: String,
        summary: Option<String>,
        next_run_at: i64,
    ) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let Some(job) = index.mirror.jobs.get_mut(&id) else {
                return Ok(());
            };
            exec(
                conn,
                "UPDATE mirror_jobs SET last_run_at = ?2, last_result = ?3, last_summary = ?4,
                    next_run_at = ?5 WHERE id = ?1",
                params![id, at, result, summary, next_run_at],
            )?;
            job.last_run_at = Some(at);
            job.last_result = Some(result);
            job.last_summary = summary;
            job.next_run_at = next_run_at;
            Ok(())
        })
        .await
    }
}

impl Metadata {
    pub async fn put_cache_rule(&self, rule: CacheRule) -> Result<CacheRule, MetaError> {
        self.write(move |conn, index| {
            exec(
                conn,
                "INSERT INTO cache_rules (prefix, rule) VALUES (?1, ?2) ON CONFLICT (prefix) DO UPDATE SET rule = excluded.rule",
                params![rule.ecr_repository_prefix, json(&rule)?],
            )?;
            index
                .mirror
                .cache_rules
                .insert(rule.ecr_repository_prefix.clone(), rule.clone());
            Ok(rule)
        })
        .await
    }

    pub async fn delete_cache_rule(&self, prefix: String) -> Result<Option<CacheRule>, MetaError> {
        self.write(move |conn, index| {
            exec(conn, "DELETE FROM cache_rules WHERE prefix = ?1", [&prefix])?;
            Ok(index.mirror.cache_rules.remove(&prefix))
        })
        .await
    }

    /// Records a manifest fetched from an upstream (its blobs come when they are pulled, so
    /// they need not be here) and, for a tag, where it came from and that it was checked now.
    pub async fn put_cached_manifest(
        &self,
        repo: &RepoName,
        manifest: super::Manifest,
        tag: Option<(Tag, String)>,
    ) -> Result<(), MetaError> {
        let repo = repo.clone();
        self.write(move |conn, index| {
            if !index.repos.contains_key(&repo) {
                super::insert_repo(
                    conn,
                    index,
                    &repo,
                    super::TagMutability::Mutable,
                    Default::default(),
                )?;
            }
            let digest = manifest.digest;
            let entry = index
                .repos
                .get_mut(&repo)
                .ok_or_else(|| MetaError::RepoNotFound(repo.clone()))?;
            let mut changed = false;
            if let std::collections::hash_map::Entry::Vacant(slot) = entry.manifests.entry(digest) {
                super::insert_manifest_row(conn, &repo, &manifest)?;
                slot.insert(std::sync::Arc::new(manifest));
                changed = true;
            }
            let event_tag = tag.as_ref().map(|(t, _)| t.clone());
            changed |= event_tag
                .as_ref()
                .is_some_and(|t| entry.tags.get(t) != Some(&digest));
            if let Some((tag, upstream)) = tag {
                let now = now_millis();
                exec(
                    conn,
                    "INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                    params![repo.as_str(), tag.as_str(), digest.to_string(), now],
                )?;
                exec(
                    conn,
                    "INSERT INTO cache_tags (repo, tag, upstream, checked_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (repo, tag) DO UPDATE SET upstream = excluded.upstream, checked_at = excluded.checked_at",
                    params![repo.as_str(), tag.as_str(), upstream, now],
                )?;
                entry.tags.insert(tag.clone(), digest);
                index.mirror.cache_tags.insert(
                    (repo.clone(), tag),
                    CachedTag {
                        upstream,
                        checked_at: now,
                    },
                );
            }
            if changed {
                let rule = index.mirror.cache_rule_for(&repo);
                let mut detail = serde_json::json!({
                    "rule-version": "1",
                    "sync-status": "SUCCESS",
                    "ecr-repository-prefix": rule.map(|r| r.ecr_repository_prefix.clone()),
                    "repository-name": repo.as_str(),
                    "upstream-registry-url": rule.map(|r| r.upstream_registry_url.clone()),
                    "image-digest": digest.to_string(),
                });
                if let Some(tag) = &event_tag {
                    detail["image-tag"] = tag.as_str().into();
                }
                let mut event = super::events::NewEvent::repo(
                    ecrl::api::events::EventKind::Cache,
                    repo.as_str(),
                    detail,
                );
                event.resources = index.events.repository_arn(repo.as_str());
                super::events::record(conn, index, event)?;
            }
            Ok(())
        })
        .await
    }

    /// The upstream said a cached tag is unchanged: it is good for another TTL.
    pub async fn cache_tag_checked(&self, repo: &RepoName, tag: &Tag) -> Result<(), MetaError> {
        let (repo, tag) = (repo.clone(), tag.clone());
        self.write(move |conn, index| {
            let now = now_millis();
            exec(
                conn,
                "UPDATE cache_tags SET checked_at = ?3 WHERE repo = ?1 AND tag = ?2",
                params![repo.as_str(), tag.as_str(), now],
            )?;
            if let Some(t) = index.mirror.cache_tags.get_mut(&(repo, tag)) {
                t.checked_at = now;
            }
            Ok(())
        })
        .await
    }
}

/// How one attempt at a replication ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Complete,
    Failed {
        code: String,
        reason: String,
    },
    Retry {
        code: String,
        reason: String,
        at: i64,
    },
}

/// Forgets finished replications past their keeping time or count.
fn prune(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
    let now = now_millis();
    let finished: Vec<(i64, i64)> = index
        .mirror
        .queue
        .values()
        .filter(|r| r.status != IN_PROGRESS)
        .map(|r| (r.updated_at, r.id))
        .collect();
    let mut old: Vec<i64> = finished
        .iter()
        .filter(|(at, _)| now - at > KEEP_FINISHED_MS)
        .map(|(_, id)| *id)
        .collect();
    if finished.len() > KEEP_FINISHED {
        let mut by_age = finished.clone();
        by_age.sort();
        old.extend(
            by_age[..finished.len() - KEEP_FINISHED]
                .iter()
                .map(|(_, id)| *id),
        );
    }
    for id in old {
        exec(conn, "DELETE FROM replication WHERE id = ?1", [id])?;
        index.mirror.queue.remove(&id);
    }
    Ok(())
}

pub(super) fn load(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
    let config: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [REPLICATION_SETTING],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if let Some(text) = config {
        index.mirror.replication = serde_json::from_str(&text)
            .map_err(|e| MetaError::Db(format!("the stored replication configuration: {e}")))?;
    }
    let mut stmt = conn.prepare("SELECT prefix, rule FROM cache_rules")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (prefix, rule) = row?;
        match serde_json::from_str::<CacheRule>(&rule) {
            Ok(rule) => {
                index.mirror.cache_rules.insert(prefix, rule);
            }
            Err(e) => tracing::warn!(
                prefix,
                "a stored cache rule cannot be read ({e}): skipping it"
            ),
        }
    }
    let mut stmt = conn.prepare("SELECT repo, tag, upstream, checked_at FROM cache_tags")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (repo, tag, upstream, checked_at) = row?;
        if let (Ok(repo), Ok(tag)) = (repo.parse::<RepoName>(), tag.parse::<Tag>()) {
            index.mirror.cache_tags.insert(
                (repo, tag),
                CachedTag {
                    upstream,
                    checked_at,
                },
            );
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, spec, every_seconds, created_at, last_run_at, last_result, last_summary,
            next_run_at FROM mirror_jobs",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    for row in rows {
        let (id, spec, every, created_at, last_run_at, last_result, last_summary, next_run_at) =
            row?;
        let Ok(spec) = serde_json::from_str::<SyncSpec>(&spec) else {
            tracing::warn!(job = %id, "a mirror job's stored spec cannot be read: skipping it");
            continue;
        };
        index.mirror.jobs.insert(
            id.clone(),
            Job {
                id,
                spec,
                every_seconds: every.max(1) as u64,
                created_at,
                last_run_at,
                last_result,
                last_summary,
                next_run_at,
            },
        );
    }
    let mut stmt = conn.prepare(
        "SELECT id, repo, digest, tag, registry, dest_repo, status, attempts, next_attempt_at,
            failure_code, failure_reason, updated_at FROM replication",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, u32>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, Option<String>>(10)?,
            r.get::<_, i64>(11)?,
        ))
    })?;
    for row in rows {
        let (id, repo, digest, tag, registry, dest, status, attempts, next, code, reason, at) =
            row?;
        let (Ok(repo), Ok(digest), Ok(dest_repo)) = (
            repo.parse::<RepoName>(),
            digest.parse::<Digest>(),
            dest.parse::<RepoName>(),
        ) else {
            continue;
        };
        index.mirror.queue.insert(
            id,
            Replication {
                id,
                repo,
                digest,
                tag: tag.parse::<Tag>().ok().filter(|_| !tag.is_empty()),
                registry,
                dest_repo,
                status,
                attempts,
                next_attempt_at: next,
                failure_code: code,
                failure_reason: reason,
                updated_at: at,
            },
        );
    }
    Ok(())
}
