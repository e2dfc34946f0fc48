//! Repository and image operations for the CLI: ECR's CreateRepository, DescribeRepositories,
//! DeleteRepository, ListImages, DescribeImages, BatchDeleteImage and PutImage (re-tag).

use super::{endpoint, service, Peer, Shared};
use crate::metadata::{Manifest, MetaError, Repo, TagMutability};
use axum::Router;
use ecrl::api::repos::*;
use ecrl::api::{ApiError, ErrorCode};
use ecrl::mutability::ExclusionFilter;
use ecrl::names::{Digest, RepoName, Tag};
use ecrl::timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router =
        endpoint::<CreateRepository, _, _>(
            router,
            |s, _: Peer, r| async move { create(&s, r).await },
        );
    let router = endpoint::<ListRepositories, _, _>(router, list);
    let router =
        endpoint::<DescribeRepository, _, _>(
            router,
            |s, _: Peer, r| async move { describe(&s, r) },
        );
    let router =
        endpoint::<DeleteRepository, _, _>(
            router,
            |s, _: Peer, r| async move { delete(&s, r).await },
        );
    let router =
        endpoint::<ListImages, _, _>(router, |s, _: Peer, r| async move { list_images(&s, r) });
    let router =
        endpoint::<DescribeImages, _, _>(
            router,
            |s, _: Peer, r| async move { describe_images(&s, r) },
        );
    let router = endpoint::<BatchDeleteImage, _, _>(router, |s, _: Peer, r| async move {
        delete_images(&s, r).await
    });
    let router = service::<PutImageTagMutability, _, _>(router, put_mutability);
    let router = service::<TagRepository, _, _>(router, tag_repository);
    service::<TagImage, _, _>(router, tag_image)
}

/// How every repository's content is encrypted at rest, in ECR's words.
pub(crate) const ENCRYPTION_TYPE: &str = "AES256";

/// A repository's exclusion filters, as ECR shows them.
pub(crate) fn filters_of(repo: &Repo) -> Vec<ExclusionFilter> {
    repo.mutability_exclusions
        .iter()
        .map(|f| ExclusionFilter::wildcard(f))
        .collect()
}

/// The filters of a mutability, checked as ECR checks them.
fn exclusions(
    mutability: TagMutability,
    filters: &[ExclusionFilter],
) -> Result<Vec<String>, ApiError> {
    ecrl::mutability::check(mutability, filters).map_err(invalid)?;
    Ok(filters.iter().map(|f| f.filter.clone()).collect())
}

pub(crate) async fn put_mutability(
    state: Shared,
    req: PutImageTagMutabilityRequest,
) -> Result<PutImageTagMutabilityRequest, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let mutability = TagMutability::parse(&req.image_tag_mutability).map_err(invalid)?;
    let exclusions = exclusions(mutability, &req.image_tag_mutability_exclusion_filters)?;
    let repo = state
        .meta
        .put_mutability(name.clone(), mutability, exclusions)
        .await?;
    Ok(PutImageTagMutabilityRequest {
        registry_id: Some(state.meta.account_id().to_string()),
        repository_name: name.to_string(),
        image_tag_mutability: repo.mutability.as_str().to_string(),
        image_tag_mutability_exclusion_filters: filters_of(&repo),
    })
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, e.to_string())
}

fn repo_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse().map_err(invalid)
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        let code = match &e {
            MetaError::RepoNotFound(_) => ErrorCode::RepositoryNotFound,
            MetaError::RepoExists(_) => ErrorCode::RepositoryAlreadyExists,
            MetaError::RepoNotEmpty(_) => ErrorCode::RepositoryNotEmpty,
            MetaError::TagImmutable { .. } => ErrorCode::ImageTagAlreadyExists,
            MetaError::ManifestNotFound { .. } => ErrorCode::ImageNotFound,
            MetaError::ReferenceMissing { .. } | MetaError::ManifestInUse { .. } => {
                ErrorCode::InvalidParameter
            }
            MetaError::TaskDefinitionNotFound(_) => ErrorCode::TaskDefinitionNotFound,
            // ECS answers a ClientException: the request names the wrong revision.
            MetaError::TaskDefinitionActive(_) => ErrorCode::InvalidParameter,
            MetaError::TaskNotFound(_) => ErrorCode::TaskNotFound,
            MetaError::UserNotFound(_) | MetaError::KeyNotFound(_) => ErrorCode::UserNotFound,
            MetaError::UserExists(_) => ErrorCode::UserAlreadyExists,
            MetaError::PolicyNotFound(_) => ErrorCode::PolicyNotFound,
            MetaError::Db(_) => ErrorCode::Internal,
            MetaError::Unavailable(_) => ErrorCode::ServiceUnavailable,
        };
        let message = match &e {
            MetaError::RepoNotFound(name) => {
                format!("repository {name} does not exist; 'ecrl repo list' shows the ones that do")
            }
            MetaError::RepoNotEmpty(name) => {
                format!("repository {name} still holds images; delete them first or pass --force")
            }
            MetaError::TaskDefinitionNotFound(name) => format!(
                "task definition {name} does not exist; 'ecrl task list' shows the ones that do"
            ),
            _ => e.to_string(),
        };
        ApiError::new(code, message)
    }
}

/// The repository `name`, or ECR's RepositoryNotFoundException.
pub(crate) fn find_repo<'a>(
    index: &'a crate::metadata::Index,
    name: &RepoName,
) -> Result<&'a Repo, ApiError> {
    index
        .repos
        .get(name)
        .ok_or_else(|| MetaError::RepoNotFound(name.clone()).into())
}

pub(crate) fn repository(state: &Shared, name: &RepoName, repo: &Repo) -> Repository {
    let size_in_bytes = repo.blobs.values().sum::<u64>()
        + repo
            .manifests
            .values()
            .filter(|m| !repo.blobs.contains_key(&m.digest))
            .map(|m| m.size)
            .sum::<u64>();
    Repository {
        repository_arn: state.repository_arn(name),
        registry_id: state.meta.account_id().to_string(),
        repository_name: name.to_string(),
        repository_uri: state.repository_uri_of(name).to_string(),
        created_at: timestamp::from_millis(repo.created_at),
        image_tag_mutability: repo.mutability.as_str().to_string(),
        image_tag_mutability_exclusion_filters: filters_of(repo),
        image_scanning_configuration: ScanningConfiguration::default(),
        encryption_configuration: EncryptionConfiguration {
            encryption_type: ENCRYPTION_TYPE.into(),
        },
        tags: repo
            .resource_tags
            .iter()
            .map(|(k, v)| ResourceTag {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        image_count: repo.manifests.len() as u64,
        size_in_bytes,
    }
}

/// Adds `new` to a repository's resource tags (a key given again takes the new value), as
/// ECR checks them.
fn add_tags(tags: &mut BTreeMap<String, String>, new: Vec<ResourceTag>) -> Result<(), ApiError> {
    for tag in new {
        super::check_resource_tag(&tag.key, &tag.value)?;
        tags.insert(tag.key, tag.value);
    }
    if tags.len() > super::MAX_RESOURCE_TAGS {
        return Err(invalid(format!(
            "a repository has at most {} tags, not {}",
            super::MAX_RESOURCE_TAGS,
            tags.len()
        )));
    }
    Ok(())
}

/// A repository's resource tags (ECR's ListTagsForResource), for both doors.
pub(crate) fn resource_tags(state: &Shared, name: &RepoName) -> Result<Vec<ResourceTag>, ApiError> {
    let index = state.meta.read();
    Ok(find_repo(&index, name)?
        .resource_tags
        .iter()
        .map(|(k, v)| ResourceTag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect())
}

/// ECR's TagResource (`add`) and UntagResource (`remove`, keys) on a repository, for both
/// doors: the tags it has afterwards.
pub(crate) async fn retag_resource(
    state: &Shared,
    name: &RepoName,
    add: Vec<ResourceTag>,
    remove: &[String],
) -> Result<Vec<ResourceTag>, ApiError> {
    let mut tags = find_repo(&state.meta.read(), name)?.resource_tags.clone();
    for key in remove {
        tags.remove(key);
    }
    add_tags(&mut tags, add)?;
    state.meta.set_repo_tags(name.clone(), tags).await?;
    resource_tags(state, name)
}

async fn tag_repository(
    state: Shared,
    req: TagRepositoryRequest,
) -> Result<RepositoryResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    retag_resource(&state, &name, req.tags, &req.remove).await?;
    describe(
        &state,
        RepositoryName {
            repository_name: name.to_string(),
        },
    )
}

/// ECR's CreateRepository, for both doors (the control API and the AWS API).
pub(crate) async fn create(
    state: &Shared,
    req: CreateRepositoryRequest,
) -> Result<RepositoryResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let mutability = match req.image_tag_mutability.as_deref() {
        None => TagMutability::Mutable,
        Some(text) => TagMutability::parse(text).map_err(invalid)?,
    };
    let exclusions = exclusions(mutability, &req.image_tag_mutability_exclusion_filters)?;
    let mut tags = BTreeMap::new();
    add_tags(&mut tags, req.tags)?;
    let repo = state
        .meta
        .create_repo(name.clone(), mutability, exclusions, tags)
        .await?;
    tracing::info!(repository = %name, "repository created");
    Ok(RepositoryResponse {
        repository: repository(state, &name, &repo),
    })
}

async fn list(
    state: Shared,
    _: Peer,
    req: ListRepositoriesRequest,
) -> Result<ListRepositoriesResponse, ApiError> {
    let index = state.meta.read();
    let prefix = req.prefix.unwrap_or_default();
    Ok(ListRepositoriesResponse {
        repositories: index
            .repos
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(&prefix))
            .map(|(name, repo)| repository(&state, name, repo))
            .collect(),
    })
}

/// One repository as ECR's DescribeRepositories describes it, for both doors.
pub(crate) fn describe(
    state: &Shared,
    req: RepositoryName,
) -> Result<RepositoryResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let index = state.meta.read();
    let repo = find_repo(&index, &name)?;
    Ok(RepositoryResponse {
        repository: repository(state, &name, repo),
    })
}

/// The names of a page of repositories in name order: up to `max` of those after `after`
/// that `keep` accepts (asked of a batch of names at a time, without the index locked, so it
/// may consult policies), and whether more follow.
pub(crate) fn page_names(
    state: &Shared,
    after: Option<&RepoName>,
    max: usize,
    keep: impl Fn(&[RepoName]) -> Vec<bool>,
) -> (Vec<RepoName>, bool) {
    use std::ops::Bound;
    let mut kept: Vec<RepoName> = Vec::new();
    let mut from = after.cloned();
    let mut more = false;
    'names: loop {
        let batch: Vec<RepoName> = {
            let index = state.meta.read();
            let lower = from.clone().map_or(Bound::Unbounded, Bound::Excluded);
            index
                .repos
                .range((lower, Bound::Unbounded))
                .take(max + 1)
                .map(|(name, _)| name.clone())
                .collect()
        };
        let Some(last) = batch.last().cloned() else {
            break;
        };
        let kept_ones = keep(&batch);
        for (name, keep) in batch.into_iter().zip(kept_ones) {
            if keep {
                if kept.len() == max {
                    more = true;
                    break 'names;
                }
                kept.push(name);
            }
        }
        from = Some(last);
    }
    (kept, more)
}

/// ECR's DeleteRepository, for both doors.
pub(crate) async fn delete(
    state: &Shared,
    req: DeleteRepositoryRequest,
) -> Result<RepositoryResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let described = {
        let index = state.meta.read();
        let repo = find_repo(&index, &name)?;
        repository(state, &name, repo)
    };
    let digests = state.meta.delete_repo(name.clone(), req.force).await?;
    for digest in digests {
        state.collect_if_unused(&digest).await;
    }
    tracing::info!(repository = %name, "repository deleted");
    Ok(RepositoryResponse {
        repository: described,
    })
}

pub(crate) fn detail(
    state: &Shared,
    name: &RepoName,
    repo: &Repo,
    m: &Manifest,
    mirror: &crate::metadata::mirror::MirrorIndex,
) -> ImageDetail {
    let mut tags: Vec<String> = repo
        .tags
        .iter()
        .filter(|(_, d)| **d == m.digest)
        .map(|(t, _)| t.to_string())
        .collect();
    tags.sort();
    // The tag a pull-through cache checked last, for where it came from.
    let cached = tags
        .iter()
        .filter_map(|t| {
            let tag = t.parse::<Tag>().ok()?;
            mirror.cache_tags.get(&(name.clone(), tag))
        })
        .max_by_key(|c| c.checked_at);
    ImageDetail {
        registry_id: state.meta.account_id().to_string(),
        repository_name: name.to_string(),
        image_digest: m.digest.to_string(),
        image_tags: tags,
        image_size_in_bytes: m.image_size,
        image_pushed_at: timestamp::from_millis(m.pushed_at),
        image_manifest_media_type: m.media_type.clone(),
        artifact_media_type: m.artifact_type.clone(),
        last_recorded_pull_time: state.meta.last_pulled(name, m).map(timestamp::from_millis),
        upstream_image: cached.map(|c| c.upstream.clone()),
        upstream_checked_at: cached.map(|c| timestamp::from_millis(c.checked_at)),
        replication_statuses: crate::mirror::replication::statuses_of(
            &mirror.queue,
            name,
            &m.digest,
        ),
    }
}

/// ECR's ListImages, for both doors.
pub(crate) fn list_images(
    state: &Shared,
    req: ListImagesRequest,
) -> Result<ListImagesResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let status = req
        .tag_status
        .as_deref()
        .unwrap_or("ANY")
        .to_ascii_uppercase();
    let (tagged, untagged) = match status.as_str() {
        "ANY" => (true, true),
        "TAGGED" => (true, false),
        "UNTAGGED" => (false, true),
        other => {
            return Err(invalid(format!(
                "tagStatus {other:?}: expected TAGGED, UNTAGGED or ANY"
            )))
        }
    };
    let index = state.meta.read();
    let repo = find_repo(&index, &name)?;
    let mut ids = Vec::new();
    if tagged {
        ids.extend(repo.tags.iter().map(|(t, d)| ImageId {
            image_digest: Some(d.to_string()),
            image_tag: Some(t.to_string()),
        }));
    }
    if untagged {
        let mut digests: Vec<&Digest> = repo
            .manifests
            .keys()
            .filter(|d| !repo.tags.values().any(|t| t == *d))
            .collect();
        digests.sort();
        ids.extend(digests.into_iter().map(|d| ImageId {
            image_digest: Some(d.to_string()),
            image_tag: None,
        }));
    }
    Ok(ListImagesResponse { image_ids: ids })
}

/// The manifest an image id names in a repository, or ECR's failure code and reason.
pub(crate) fn find(repo: &Repo, id: &ImageId) -> Result<Arc<Manifest>, (String, String)> {
    let by_tag = match &id.image_tag {
        Some(tag) => {
            let tag: Tag = tag
                .parse()
                .map_err(|e: ecrl::names::NameError| ("InvalidImageTag".into(), e.to_string()))?;
            Some(
                *repo
                    .tags
                    .get(&tag)
                    .ok_or(("ImageNotFound".to_string(), format!("tag {tag} not found")))?,
            )
        }
        None => None,
    };
    let by_digest = match &id.image_digest {
        Some(d) => Some(
            d.parse::<Digest>()
                .map_err(|e| ("InvalidImageDigest".to_string(), e.to_string()))?,
        ),
        None => None,
    };
    let digest = match (by_tag, by_digest) {
        (Some(a), Some(b)) if a != b => {
            return Err((
                "ImageNotFound".into(),
                "the tag does not point at that digest".into(),
            ))
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => {
            return Err((
                "MissingDigestAndTag".into(),
                "an image id needs a tag or a digest".into(),
            ))
        }
    };
    repo.manifests
        .get(&digest)
        .cloned()
        .ok_or(("ImageNotFound".into(), format!("image {digest} not found")))
}

/// ECR's DescribeImages (one image, or all of the repository's), for both doors.
pub(crate) fn describe_images(
    state: &Shared,
    req: DescribeImagesRequest,
) -> Result<DescribeImagesResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let index = state.meta.read();
    let repo = find_repo(&index, &name)?;
    let mut details = if req.image_tag.is_none() && req.image_digest.is_none() {
        repo.manifests
            .values()
            .map(|m| detail(state, &name, repo, m, &index.mirror))
            .collect::<Vec<_>>()
    } else {
        let id = ImageId {
            image_digest: req.image_digest,
            image_tag: req.image_tag,
        };
        let m = find(repo, &id).map_err(|(code, reason)| {
            let code = if code == "ImageNotFound" {
                ErrorCode::ImageNotFound
            } else {
                ErrorCode::InvalidParameter
            };
            ApiError::new(code, format!("{name}: {reason}"))
        })?;
        vec![detail(state, &name, repo, &m, &index.mirror)]
    };
    details.sort_by(|a, b| {
        b.image_pushed_at
            .cmp(&a.image_pushed_at)
            .then(a.image_digest.cmp(&b.image_digest))
    });
    Ok(DescribeImagesResponse {
        image_details: details,
    })
}

/// ECR's BatchDeleteImage, for both doors.
pub(crate) async fn delete_images(
    state: &Shared,
    req: BatchDeleteImageRequest,
) -> Result<BatchDeleteImageResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    if !state.meta.read().repos.contains_key(&name) {
        return Err(MetaError::RepoNotFound(name).into());
    }
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for id in req.image_ids {
        let fail = |code: String, reason: String| ImageFailure {
            image_id: id.clone(),
            failure_code: code,
            failure_reason: reason,
        };
        let found = {
            let index = state.meta.read();
            match index.repos.get(&name) {
                Some(repo) => find(repo, &id).map(|m| {
                    let referenced = repo
                        .manifests
                        .values()
                        .any(|other| other.digest != m.digest && other.refs.contains(&m.digest));
                    (m, referenced)
                }),
                None => Err(("RepositoryNotFound".into(), format!("{name} was deleted"))),
            }
        };
        let (manifest, referenced) = match found {
            Ok(found) => found,
            Err((code, reason)) => {
                failures.push(fail(code, reason));
                continue;
            }
        };
        let digest = manifest.digest;
        // A tag alone removes the tag; the image goes only when no tag is left.
        let remove_image = match (&id.image_tag, &id.image_digest) {
            (Some(tag), None) => {
                let tag: Tag = tag.parse().map_err(invalid)?;
                let last_tag =
                    !referenced
                        && state.meta.read().repos.get(&name).is_some_and(|r| {
                            r.tags.values().filter(|d| **d == digest).count() == 1
                        });
                // The image goes with its last tag: one delete (and one event, naming the
                // tag), not an untag and then a delete.
                if last_tag {
                    true
                } else {
                    state.meta.delete_tag(&name, tag).await?;
                    let index = state.meta.read();
                    !index
                        .repos
                        .get(&name)
                        .is_some_and(|r| r.tags.values().any(|d| *d == digest))
                }
            }
            _ => true,
        };
        if remove_image {
            if referenced {
                failures.push(fail(
                    "ImageReferencedByManifestList".into(),
                    format!("image {digest} is referenced by a manifest list or index in {name}"),
                ));
                continue;
            }
            if let Some(freed) = state.meta.delete_manifest(&name, digest).await? {
                state.release(&name, freed);
            }
            state.collect_if_unused(&digest).await;
        }
        deleted.push(ImageId {
            image_digest: Some(digest.to_string()),
            image_tag: id.image_tag.clone(),
        });
    }
    Ok(BatchDeleteImageResponse {
        image_ids: deleted,
        failures,
    })
}

pub(crate) async fn tag_image(
    state: Shared,
    req: TagImageRequest,
) -> Result<DescribeImagesResponse, ApiError> {
    let name = repo_name(&req.repository_name)?;
    let tag: Tag = req.image_tag.parse().map_err(invalid)?;
    let manifest = {
        let index = state.meta.read();
        let repo = find_repo(&index, &name)?;
        find(repo, &req.source).map_err(|(_, reason)| {
            ApiError::new(ErrorCode::ImageNotFound, format!("{name}: {reason}"))
        })?
    };
    state.meta.tag_manifest(&name, manifest.digest, tag).await?;
    state.mirror.replication_wake.notify_one();
    let index = state.meta.read();
    let repo = find_repo(&index, &name)?;
    Ok(DescribeImagesResponse {
        image_details: vec![detail(&state, &name, repo, &manifest, &index.mirror)],
    })
}
