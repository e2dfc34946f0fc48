//! `/v1/repositories/lifecycle/*`: ECR's lifecycle policy operations (Put, Get, Delete, a
//! preview that answers at once, and a run now), with ECR's field names.

use super::{Endpoint, Method};
use serde::{Deserialize, Serialize};

/// `POST /v1/repositories/lifecycle/put` (ECR PutLifecyclePolicy).
pub struct PutLifecyclePolicy;

impl Endpoint for PutLifecyclePolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/lifecycle/put";
    type Request = PutLifecyclePolicyRequest;
    type Response = LifecyclePolicyResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutLifecyclePolicyRequest {
    pub repository_name: String,
    /// The policy, JSON or YAML (kept as given).
    pub lifecycle_policy_text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyResponse {
    pub registry_id: String,
    pub repository_name: String,
    pub lifecycle_policy_text: String,
    /// When the policy was last applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated_at: Option<String>,
}

/// `GET /v1/repositories/lifecycle/get` (ECR GetLifecyclePolicy).
pub struct GetLifecyclePolicy;

impl Endpoint for GetLifecyclePolicy {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/repositories/lifecycle/get";
    type Request = LifecyclePolicyRef;
    type Response = LifecyclePolicyResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyRef {
    pub repository_name: String,
}

/// `POST /v1/repositories/lifecycle/delete` (ECR DeleteLifecyclePolicy): answers the policy
/// removed.
pub struct DeleteLifecyclePolicy;

impl Endpoint for DeleteLifecyclePolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/lifecycle/delete";
    type Request = LifecyclePolicyRef;
    type Response = LifecyclePolicyResponse;
}

/// `POST /v1/repositories/lifecycle/preview` (ECR StartLifecyclePolicyPreview and
/// GetLifecyclePolicyPreview in one: the preview is computed at once). Deletes nothing.
pub struct PreviewLifecyclePolicy;

impl Endpoint for PreviewLifecyclePolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/lifecycle/preview";
    type Request = PreviewLifecyclePolicyRequest;
    type Response = LifecyclePolicyPreview;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewLifecyclePolicyRequest {
    pub repository_name: String,
    /// A policy to try; the repository's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy_text: Option<String>,
}

/// `POST /v1/repositories/lifecycle/run`: applies the repository's policy now (what the
/// daemon does on its schedule); answers what it expired.
pub struct RunLifecyclePolicy;

impl Endpoint for RunLifecyclePolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/lifecycle/run";
    type Request = LifecyclePolicyRef;
    type Response = LifecyclePolicyPreview;
}

/// What a policy expires (a preview) or expired (a run), as ECR's GetLifecyclePolicyPreview
/// answers, plus the images a rule would expire but ecrl keeps because they are in use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyPreview {
    pub registry_id: String,
    pub repository_name: String,
    pub lifecycle_policy_text: String,
    /// `COMPLETE` (a preview here never runs in the background).
    pub status: String,
    /// The images expired (oldest first).
    pub preview_results: Vec<PreviewResult>,
    pub summary: PreviewSummary,
    /// Images a rule would expire that are kept: a running task uses them, or an ACTIVE
    /// task definition names them by digest (ecrl's addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_images: Vec<KeptImage>,
    /// Images a run could not delete, and why (a run only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<super::repos::ImageFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewResult {
    pub image_tags: Vec<String>,
    pub image_digest: String,
    /// RFC 3339.
    pub image_pushed_at: String,
    pub action: PreviewAction,
    pub applied_rule_priority: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviewAction {
    /// `EXPIRE`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewSummary {
    pub expiring_image_total_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeptImage {
    pub image_tags: Vec<String>,
    pub image_digest: String,
    /// RFC 3339.
    pub image_pushed_at: String,
    /// The rule that would have expired it.
    pub applied_rule_priority: i64,
    pub reason: String,
}
