//! ECR's operations (`AmazonEC2ContainerRegistry_V20150921.<Op>`), each calling the same
//! function the control API calls for it.

use super::{decode, page, paged, repo_name, string, to_aws, unsupported, AwsError, Out};
use crate::auth::Principal;
use crate::control::{auth as control_auth, repos};
use crate::registry::Shared;
use ecrl::names::RepoName;
use ecrl::timestamp::epoch_seconds;
use serde_json::{json, Value};

/// A repository as ECR's `Repository` shape has it (see [`EcrRepository`]).
fn ecr_repository(repository: &ecrl::api::repos::Repository) -> Result<Value, AwsError> {
    serde_json::to_value(EcrRepository::from(repository))
        .map_err(|e| AwsError::client("ServerException", e.to_string()))
}

pub(super) async fn call(
    state: &Shared,
    principal: &Principal,
    op: &str,
    input: &Value,
) -> Result<Out, AwsError> {
    let may = |action: &'static str, repo: Option<&RepoName>| -> Result<(), AwsError> {
        state
            .auth
            .may(state, principal, action, repo)
            .map_err(AwsError::from)
    };
    match op {
        "GetAuthorizationToken" => {
            may("ecr:GetAuthorizationToken", None)?;
            let user = match principal {
                Principal::User(u) => Some(&**u),
                _ => None,
            };
            to_aws(control_auth::token_for(state, user)?).map(Out::from)
        }
        "CreateRepository" => {
            let name = repo_name(string(input, "repositoryName")?)?;
            may("ecr:CreateRepository", Some(&name))?;
            let created = repos::create(state, decode(input)?).await?;
            Ok(json!({ "repository": ecr_repository(&created.repository)? }).into())
        }
        "DeleteRepository" => {
            let name = repo_name(string(input, "repositoryName")?)?;
            may("ecr:DeleteRepository", Some(&name))?;
            let deleted = repos::delete(state, decode(input)?).await?;
            Ok(json!({ "repository": ecr_repository(&deleted.repository)? }).into())
        }
        "DescribeRepositories" => describe_repositories(state, principal, input),
        "ListImages" => {
            let name = repo_name(string(input, "repositoryName")?)?;
            may("ecr:ListImages", Some(&name))?;
            let listed = repos::list_images(
                state,
                ecrl::api::repos::ListImagesRequest {
                    repository_name: name.to_string(),
                    tag_status: input["filter"]["tagStatus"].as_str().map(str::to_string),
                },
            )?;
            paged(input, "imageIds", to_aws(listed.image_ids)?).map(Out::from)
        }
        "DescribeImages" => {
            let name = repo_name(string(input, "repositoryName")?)?;
            may("ecr:DescribeImages", Some(&name))?;
            describe_images(state, &name, input).map(Out::from)
        }
        "BatchDeleteImage" => {
            let name = repo_name(string(input, "repositoryName")?)?;
            may("ecr:BatchDeleteImage", Some(&name))?;
            to_aws(repos::delete_images(state, decode(input)?).await?).map(Out::from)
        }
        _ => Err(unsupported("ECR", op)),
    }
}

/// ECR's DescribeRepositories: the named ones (each must be readable by the caller), or
/// every one the caller may describe, a page at a time. Written straight out (no JSON value
/// in between): it is the API's most frequent call.
fn describe_repositories(
    state: &Shared,
    principal: &Principal,
    input: &Value,
) -> Result<Out, AwsError> {
    const ACTION: &str = "ecr:DescribeRepositories";
    let mut found = Vec::new();
    let mut next_token = None;
    if let Some(names) = input["repositoryNames"].as_array() {
        for name in names {
            let name = repo_name(name.as_str().unwrap_or_default())?;
            state.auth.may(state, principal, ACTION, Some(&name))?;
            let described = repos::describe(
                state,
                ecrl::api::repos::RepositoryName {
                    repository_name: name.to_string(),
                },
            )?;
            found.push(described.repository);
        }
    } else {
        let (max, after) = page(input, 1000)?;
        let after = match after.as_str() {
            "" => None,
            name => Some(repo_name(name)?),
        };
        let (page, more) = repos::describe_page(state, after.as_ref(), max, |name| {
            state.auth.may(state, principal, ACTION, Some(name)).is_ok()
        });
        if more {
            next_token = page.last().map(|r| super::next_token(&r.repository_name));
        }
        found = page;
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer<'a> {
        repositories: Vec<EcrRepository<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_token: Option<String>,
    }
    let answer = Answer {
        repositories: found.iter().map(EcrRepository::from).collect(),
        next_token,
    };
    serde_json::to_vec(&answer)
        .map(Out::Bytes)
        .map_err(|e| AwsError::client("ServerException", e.to_string()))
}

/// A repository in ECR's `Repository` shape, borrowed from the control API's description:
/// ecrl's own members (image count, size, resource tags, which ECR answers through other
/// operations) left out, the creation time in epoch seconds.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EcrRepository<'a> {
    repository_arn: &'a str,
    registry_id: &'a str,
    repository_name: &'a str,
    repository_uri: &'a str,
    created_at: f64,
    image_tag_mutability: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    image_tag_mutability_exclusion_filters: &'a [ecrl::mutability::ExclusionFilter],
    image_scanning_configuration: &'a ecrl::api::repos::ScanningConfiguration,
    encryption_configuration: &'a ecrl::api::repos::EncryptionConfiguration,
}

impl<'a> From<&'a ecrl::api::repos::Repository> for EcrRepository<'a> {
    fn from(r: &'a ecrl::api::repos::Repository) -> Self {
        EcrRepository {
            repository_arn: &r.repository_arn,
            registry_id: &r.registry_id,
            repository_name: &r.repository_name,
            repository_uri: &r.repository_uri,
            created_at: epoch_seconds(&r.created_at).unwrap_or_default(),
            image_tag_mutability: &r.image_tag_mutability,
            image_tag_mutability_exclusion_filters: &r.image_tag_mutability_exclusion_filters,
            image_scanning_configuration: &r.image_scanning_configuration,
            encryption_configuration: &r.encryption_configuration,
        }
    }
}

/// ECR's DescribeImages: the images `imageIds` names (each missing one is an
/// `ImageNotFoundException`, as on ECR), or every image, filtered by `filter.tagStatus`, a
/// page at a time (newest first).
fn describe_images(state: &Shared, name: &RepoName, input: &Value) -> Result<Value, AwsError> {
    use ecrl::api::repos::DescribeImagesRequest;
    let request = |tag: Option<&str>, digest: Option<&str>| DescribeImagesRequest {
        repository_name: name.to_string(),
        image_tag: tag.map(str::to_string),
        image_digest: digest.map(str::to_string),
    };
    let mut details = Vec::new();
    if let Some(ids) = input["imageIds"].as_array() {
        for id in ids {
            let found = repos::describe_images(
                state,
                request(id["imageTag"].as_str(), id["imageDigest"].as_str()),
            )?;
            details.extend(found.image_details);
        }
    } else {
        details = repos::describe_images(state, request(None, None))?.image_details;
        match input["filter"]["tagStatus"].as_str() {
            None | Some("ANY") => {}
            Some("TAGGED") => details.retain(|d| !d.image_tags.is_empty()),
            Some("UNTAGGED") => details.retain(|d| d.image_tags.is_empty()),
            Some(other) => {
                return Err(AwsError::client(
                    "InvalidParameterException",
                    format!("filter.tagStatus {other:?}: expected TAGGED, UNTAGGED or ANY"),
                ))
            }
        }
    }
    const MEMBERS: &[&str] = &[
        "registryId",
        "repositoryName",
        "imageDigest",
        "imageTags",
        "imageSizeInBytes",
        "imagePushedAt",
        "imageManifestMediaType",
        "artifactMediaType",
        "lastRecordedPullTime",
    ];
    let mut details = to_aws(details)?;
    if let Value::Array(items) = &mut details {
        for item in items.iter_mut() {
            if let Value::Object(map) = item {
                map.retain(|k, _| MEMBERS.contains(&k.as_str()));
            }
        }
    }
    paged(input, "imageDetails", details)
}
