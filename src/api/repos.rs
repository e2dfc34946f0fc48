//! `/v1/repositories/*` and `/v1/images/*`: ECR's repository and image operations, with
//! ECR's field names so scripts written for the AWS CLI read ecrl's JSON too.

use super::{Endpoint, Method};
use serde::{Deserialize, Serialize};

/// A repository as ECR describes it, plus what ecrl knows about its contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    pub repository_arn: String,
    pub registry_id: String,
    pub repository_name: String,
    /// `host:port/name`, what `docker push` takes.
    pub repository_uri: String,
    /// RFC 3339.
    pub created_at: String,
    pub image_tag_mutability: String,
    /// The filters of a `_WITH_EXCLUSION` mutability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_tag_mutability_exclusion_filters: Vec<crate::mutability::ExclusionFilter>,
    pub image_scanning_configuration: ScanningConfiguration,
    pub encryption_configuration: EncryptionConfiguration,
    /// Resource tags given at creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<ResourceTag>,
    /// Images (manifests) the repository holds.
    pub image_count: u64,
    /// Bytes of the distinct blobs and manifests the repository holds.
    pub size_in_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScanningConfiguration {
    pub scan_on_push: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    pub encryption_type: String,
}

/// A resource tag, as ECR spells it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceTag {
    pub key: String,
    pub value: String,
}

/// `POST /v1/repositories/create` (ECR CreateRepository).
pub struct CreateRepository;

impl Endpoint for CreateRepository {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/create";
    type Request = CreateRepositoryRequest;
    type Response = RepositoryResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRepositoryRequest {
    pub repository_name: String,
    /// `MUTABLE` (default), `IMMUTABLE`, `IMMUTABLE_WITH_EXCLUSION` or
    /// `MUTABLE_WITH_EXCLUSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag_mutability: Option<String>,
    /// The tags a `_WITH_EXCLUSION` mutability turns around.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_tag_mutability_exclusion_filters: Vec<crate::mutability::ExclusionFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<ResourceTag>,
}

/// `POST /v1/repositories/mutability` (ECR PutImageTagMutability).
pub struct PutImageTagMutability;

/// `POST /v1/repositories/tags` (ECR TagResource and UntagResource on a repository):
/// answers the repository with its tags.
pub struct TagRepository;

impl Endpoint for TagRepository {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/tags";
    type Request = TagRepositoryRequest;
    type Response = RepositoryResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRepositoryRequest {
    pub repository_name: String,
    /// Tags to add (a key given again takes the new value).
    #[serde(default)]
    pub tags: Vec<ResourceTag>,
    /// Keys to remove (before `tags` are added).
    #[serde(default)]
    pub remove: Vec<String>,
}

impl Endpoint for PutImageTagMutability {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/mutability";
    type Request = PutImageTagMutabilityRequest;
    type Response = PutImageTagMutabilityRequest;
}

/// The request, and the answer (with `registryId`), as ECR's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PutImageTagMutabilityRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_id: Option<String>,
    pub repository_name: String,
    pub image_tag_mutability: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_tag_mutability_exclusion_filters: Vec<crate::mutability::ExclusionFilter>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryResponse {
    pub repository: Repository,
}

/// `GET /v1/repositories/list` (ECR DescribeRepositories).
pub struct ListRepositories;

impl Endpoint for ListRepositories {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/repositories/list";
    type Request = ListRepositoriesRequest;
    type Response = ListRepositoriesResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRepositoriesRequest {
    /// Only repositories whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRepositoriesResponse {
    pub repositories: Vec<Repository>,
}

/// `GET /v1/repositories/describe`.
pub struct DescribeRepository;

impl Endpoint for DescribeRepository {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/repositories/describe";
    type Request = RepositoryName;
    type Response = RepositoryResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryName {
    pub repository_name: String,
}

/// `POST /v1/repositories/delete` (ECR DeleteRepository).
pub struct DeleteRepository;

impl Endpoint for DeleteRepository {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/delete";
    type Request = DeleteRepositoryRequest;
    type Response = RepositoryResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRepositoryRequest {
    pub repository_name: String,
    /// Delete a repository that still holds images.
    #[serde(default)]
    pub force: bool,
}

/// An image's identity: a digest, a tag, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
}

/// ECR's DescribeImages detail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageDetail {
    pub registry_id: String,
    pub repository_name: String,
    pub image_digest: String,
    pub image_tags: Vec<String>,
    pub image_size_in_bytes: u64,
    /// RFC 3339.
    pub image_pushed_at: String,
    pub image_manifest_media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_media_type: Option<String>,
    /// RFC 3339; absent until the image is first pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recorded_pull_time: Option<String>,
    /// Where a pull-through cache fetched the image from (`host/repository:tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_image: Option<String>,
    /// When the upstream was last asked about its tag (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_checked_at: Option<String>,
    /// Where replication rules sent the image, and how that went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication_statuses: Vec<crate::api::mirror::DestinationStatus>,
}

/// `GET /v1/images/list` (ECR ListImages).
pub struct ListImages;

impl Endpoint for ListImages {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/images/list";
    type Request = ListImagesRequest;
    type Response = ListImagesResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListImagesRequest {
    pub repository_name: String,
    /// `TAGGED`, `UNTAGGED` or `ANY` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListImagesResponse {
    pub image_ids: Vec<ImageId>,
}

/// `GET /v1/images/describe` (ECR DescribeImages): one image, or every image of the
/// repository when no tag or digest is given.
pub struct DescribeImages;

impl Endpoint for DescribeImages {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/images/describe";
    type Request = DescribeImagesRequest;
    type Response = DescribeImagesResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeImagesRequest {
    pub repository_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeImagesResponse {
    pub image_details: Vec<ImageDetail>,
}

/// `POST /v1/images/delete` (ECR BatchDeleteImage).
pub struct BatchDeleteImage;

impl Endpoint for BatchDeleteImage {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/images/delete";
    type Request = BatchDeleteImageRequest;
    type Response = BatchDeleteImageResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeleteImageRequest {
    pub repository_name: String,
    pub image_ids: Vec<ImageId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeleteImageResponse {
    pub image_ids: Vec<ImageId>,
    pub failures: Vec<ImageFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageFailure {
    pub image_id: ImageId,
    /// ECR's codes: `ImageNotFound`, `InvalidImageDigest`, `InvalidImageTag`,
    /// `ImageReferencedByManifestList`.
    pub failure_code: String,
    pub failure_reason: String,
}

/// `POST /v1/images/tag` (ECR PutImage with an existing manifest: a re-tag).
pub struct TagImage;

impl Endpoint for TagImage {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/images/tag";
    type Request = TagImageRequest;
    type Response = DescribeImagesResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagImageRequest {
    pub repository_name: String,
    /// The image to tag: a tag or a digest.
    pub source: ImageId,
    pub image_tag: String,
}
