//! ECR's operations (`AmazonEC2ContainerRegistry_V20150921.<Op>`), each calling the same
//! function the control API calls for it.

use super::{
    decode, ecr_config, ecr_layers, page, paged, repo_name, string, to_aws, AwsError, Caller, Out,
};
use crate::auth::Principal;
use crate::control::{auth as control_auth, repos};
use crate::registry::Shared;
use ecrl::names::RepoName;
use ecrl::timestamp::epoch_seconds;
use serde_json::Value;

pub(super) async fn call(
    state: &Shared,
    caller: &Caller<'_>,
    op: &str,
    input: &Value,
) -> Result<Out, AwsError> {
    if let Some(id) = input.get("registryId").and_then(Value::as_str) {
        if id != state.meta.account_id() {
            return Err(AwsError::client(
                "InvalidParameterException",
                format!(
                    "registryId {id} is not this registry's: ecrld is registry {}",
                    state.meta.account_id()
                ),
            ));
        }
    }
    let principal = &caller.principal;
    let gate = Gate {
        state,
        principal,
        input,
    };
    let may = |action, repo: Option<&RepoName>| gate.may(action, repo);
    let repo = |action| gate.repo(action);
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
            repo("ecr:CreateRepository")?;
            let created = repos::create(state, decode(input)?).await?;
            one_repository(state, &created.repository)
        }
        "DeleteRepository" => {
            repo("ecr:DeleteRepository")?;
            let deleted = repos::delete(state, decode(input)?).await?;
            one_repository(state, &deleted.repository)
        }
        "DescribeRepositories" => describe_repositories(state, principal, input),
        "ListImages" => {
            let name = repo("ecr:ListImages")?;
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
            let name = repo("ecr:DescribeImages")?;
            describe_images(state, &name, input).map(Out::from)
        }
        "BatchDeleteImage" => {
            repo("ecr:BatchDeleteImage")?;
            to_aws(repos::delete_images(state, decode(input)?).await?).map(Out::from)
        }
        "PutImageTagMutability" => {
            repo("ecr:PutImageTagMutability")?;
            let answer = repos::put_mutability(state.clone(), decode(input)?).await?;
            to_aws(answer).map(Out::from)
        }
        "BatchGetImage" => {
            let name = repo("ecr:BatchGetImage")?;
            ecr_layers::batch_get_image(state, &name, input).map(Out::from)
        }
        "PutImage" => {
            let name = repo("ecr:PutImage")?;
            ecr_layers::put_image(state, &name, input)
                .await
                .map(Out::from)
        }
        "BatchCheckLayerAvailability" => {
            let name = repo("ecr:BatchCheckLayerAvailability")?;
            ecr_layers::check_layers(state, &name, input).map(Out::from)
        }
        "GetDownloadUrlForLayer" => {
            let name = repo("ecr:GetDownloadUrlForLayer")?;
            ecr_layers::download_url(state, caller, &name, input).map(Out::from)
        }
        "InitiateLayerUpload" => {
            let name = repo("ecr:InitiateLayerUpload")?;
            ecr_layers::initiate_upload(state, caller, &name)
                .await
                .map(Out::from)
        }
        "UploadLayerPart" => {
            let name = repo("ecr:UploadLayerPart")?;
            ecr_layers::upload_part(state, &name, input)
                .await
                .map(Out::from)
        }
        "CompleteLayerUpload" => {
            let name = repo("ecr:CompleteLayerUpload")?;
            ecr_layers::complete_upload(state, &name, input)
                .await
                .map(Out::from)
        }
        "ListImageReferrers" => {
            let name = repo("ecr:ListImageReferrers")?;
            ecr_layers::referrers(state, &name, input).map(Out::from)
        }
        _ => ecr_config::call(state, &gate, op, input).await,
    }
}

/// Decides what the caller of one operation may do.
pub(super) struct Gate<'a> {
    state: &'a Shared,
    principal: &'a Principal,
    input: &'a Value,
}

impl Gate<'_> {
    /// Whether the caller may do `action` on `repo` (the registry when `None`).
    pub(super) fn may(
        &self,
        action: &'static str,
        repo: Option<&RepoName>,
    ) -> Result<(), AwsError> {
        self.state
            .auth
            .may(self.state, self.principal, action, repo)
            .map_err(AwsError::from)
    }

    /// The repository the operation names (`repositoryName`), once the caller may do
    /// `action` in it.
    pub(super) fn repo(&self, action: &'static str) -> Result<RepoName, AwsError> {
        let name = repo_name(string(self.input, "repositoryName")?)?;
        self.may(action, Some(&name))?;
        Ok(name)
    }
}

/// ECR's DescribeRepositories: the named ones (each must be readable by the caller), or
/// every one the caller may describe, a page at a time. Written straight from the index into
/// the answer (no description in between): it is the API's most frequent call.
fn describe_repositories(
    state: &Shared,
    principal: &Principal,
    input: &Value,
) -> Result<Out, AwsError> {
    const ACTION: &str = "ecr:DescribeRepositories";
    let mut next_token = None;
    let named = input["repositoryNames"].is_array();
    let names = if let Some(names) = input["repositoryNames"].as_array() {
        let mut checked = Vec::with_capacity(names.len());
        for name in names {
            let name = repo_name(name.as_str().unwrap_or_default())?;
            state.auth.may(state, principal, ACTION, Some(&name))?;
            checked.push(name);
        }
        checked
    } else {
        let (max, after) = page(input, 1000)?;
        let after = match after.as_str() {
            "" => None,
            name => Some(repo_name(name)?),
        };
        let (names, more) = repos::page_names(state, after.as_ref(), max, |names| {
            state.auth.may_each(state, principal, ACTION, names)
        });
        if more {
            next_token = names.last().map(|n| super::next_token(n.as_str()));
        }
        names
    };
    let index = state.meta.read();
    let mut listed = Vec::with_capacity(names.len());
    for name in &names {
        // A repository deleted since its page was chosen is left out, as if listed a moment
        // later; one named that does not exist is ECR's RepositoryNotFoundException.
        match index.repos.get(name) {
            Some(repo) => listed.push((name, repo)),
            None if !named => {}
            None => {
                let missing = crate::metadata::MetaError::RepoNotFound(name.clone());
                return Err(ecrl::api::ApiError::from(missing).into());
            }
        }
    }
    write_repositories(state, &listed, next_token.as_deref()).map(Out::Bytes)
}

/// `{"repositories": [...], "nextToken": ...}` in ECR's `Repository` shape, written from the
/// index (see [`RepositoryWriter`]).
fn write_repositories(
    state: &Shared,
    listed: &[(&RepoName, &crate::metadata::Repo)],
    next_token: Option<&str>,
) -> Result<Vec<u8>, AwsError> {
    let writer = RepositoryWriter::new(state)?;
    let mut out = Vec::with_capacity(64 + listed.len() * writer.typical_len());
    out.extend_from_slice(br#"{"repositories":["#);
    for (i, (name, repo)) in listed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let filters = match repo.mutability_exclusions.is_empty() {
            true => Vec::new(),
            false => repos::filters_of(repo),
        };
        writer.write(
            &mut out,
            &RepositoryFields {
                name: name.as_str(),
                created: repo.created_at as f64 / 1000.0,
                mutability: repo.mutability.as_str(),
                filters: &filters,
            },
        )?;
    }
    out.push(b']');
    if let Some(token) = next_token {
        out.extend_from_slice(br#","nextToken":"#);
        serde_json::to_writer(&mut out, token).map_err(failed)?;
    }
    out.push(b'}');
    Ok(out)
}

/// `{"repository": {...}}`: a repository the control API described (one just created, or
/// deleted), in ECR's shape.
fn one_repository(state: &Shared, r: &ecrl::api::repos::Repository) -> Result<Out, AwsError> {
    let writer = RepositoryWriter::new(state)?;
    let mut out = Vec::with_capacity(16 + writer.typical_len());
    out.extend_from_slice(br#"{"repository":"#);
    writer.write(
        &mut out,
        &RepositoryFields {
            name: &r.repository_name,
            created: epoch_seconds(&r.created_at).unwrap_or_default(),
            mutability: &r.image_tag_mutability,
            filters: &r.image_tag_mutability_exclusion_filters,
        },
    )?;
    out.push(b'}');
    Ok(Out::Bytes(out))
}

fn failed(e: serde_json::Error) -> AwsError {
    AwsError::client("ServerException", e.to_string())
}

/// What ECR's `Repository` shape says of one repository beyond what all share.
struct RepositoryFields<'a> {
    /// A repository name (`RepoName`: lowercase letters, digits, `._-/`: nothing to escape).
    name: &'a str,
    /// Epoch seconds.
    created: f64,
    mutability: &'a str,
    filters: &'a [ecrl::mutability::ExclusionFilter],
}

/// Writes repositories in ECR's `Repository` shape by hand: the member names are constant
/// text, and what every repository shares (the ARN's and URI's beginnings, the account, the
/// configurations) is escaped once; ecrl's own members (image count, size, resource tags,
/// which ECR answers through other operations) are not ECR's.
struct RepositoryWriter {
    arn: Vec<u8>,
    uri: Vec<u8>,
    account: Vec<u8>,
    configurations: String,
}

impl RepositoryWriter {
    fn new(state: &Shared) -> Result<Self, AwsError> {
        // A JSON string's escaped text, without its quotes.
        let inner = |text: &str| -> Result<Vec<u8>, AwsError> {
            let quoted = serde_json::to_vec(text).map_err(failed)?;
            Ok(quoted[1..quoted.len() - 1].to_vec())
        };
        Ok(RepositoryWriter {
            arn: inner(&state.repository_arn_prefix().to_string())?,
            uri: inner(&state.repository_uri_prefix().to_string())?,
            account: inner(state.meta.account_id())?,
            configurations: format!(
                r#","imageScanningConfiguration":{},"encryptionConfiguration":{{"encryptionType":{}}}}}"#,
                serde_json::to_string(&ecrl::api::repos::ScanningConfiguration::default())
                    .map_err(failed)?,
                serde_json::to_string(repos::ENCRYPTION_TYPE).map_err(failed)?,
            ),
        })
    }

    fn typical_len(&self) -> usize {
        400 + self.arn.len() + self.uri.len()
    }

    fn write(&self, out: &mut Vec<u8>, r: &RepositoryFields<'_>) -> Result<(), AwsError> {
        let name = r.name.as_bytes();
        debug_assert!(name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(b)));
        for piece in [
            br#"{"repositoryArn":""#.as_slice(),
            &self.arn,
            name,
            br#"","registryId":""#,
            &self.account,
            br#"","repositoryName":""#,
            name,
            br#"","repositoryUri":""#,
            &self.uri,
            name,
            br#"","createdAt":"#,
        ] {
            out.extend_from_slice(piece);
        }
        serde_json::to_writer(&mut *out, &r.created).map_err(failed)?;
        out.extend_from_slice(br#","imageTagMutability":"#);
        serde_json::to_writer(&mut *out, r.mutability).map_err(failed)?;
        if !r.filters.is_empty() {
            out.extend_from_slice(br#","imageTagMutabilityExclusionFilters":"#);
            serde_json::to_writer(&mut *out, r.filters).map_err(failed)?;
        }
        out.extend_from_slice(self.configurations.as_bytes());
        Ok(())
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
