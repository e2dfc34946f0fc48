//! `/v1/auth/*`: principals, their access keys and login tokens, identity policies, the
//! registry policy, and decisions explained — with IAM's and ECR's field names.

use super::{Empty, Endpoint, Method};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A principal of the registry, as IAM's User.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    pub user_name: String,
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    pub arn: String,
    /// RFC 3339.
    pub create_date: String,
    /// The user's access key ids (never secrets).
    #[serde(default)]
    pub access_key_ids: Vec<String>,
    /// Names of the identity policies attached to the user.
    #[serde(default)]
    pub attached_policies: Vec<String>,
}

/// An access key as IAM's CreateAccessKey answers it: the secret is shown this once.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AccessKey {
    pub user_name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub create_date: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("user_name", &self.user_name)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/auth/users/create` (IAM CreateUser + CreateAccessKey).
pub struct CreateUser;

impl Endpoint for CreateUser {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/users/create";
    type Request = UserRequest;
    type Response = CreateUserResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRequest {
    pub user_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateUserResponse {
    pub user: User,
    pub access_key: AccessKey,
}

/// `GET /v1/auth/users/list` (IAM ListUsers).
pub struct ListUsers;

impl Endpoint for ListUsers {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/auth/users/list";
    type Request = Empty;
    type Response = ListUsersResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ListUsersResponse {
    pub users: Vec<User>,
}

/// `POST /v1/auth/users/delete` (IAM DeleteUser): its keys, policies and tokens go too.
pub struct DeleteUser;

impl Endpoint for DeleteUser {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/users/delete";
    type Request = UserRequest;
    type Response = Empty;
}

/// `POST /v1/auth/keys/rotate`: a new access key replaces the user's key; the old key and
/// every token issued for it stop working.
pub struct RotateKey;

impl Endpoint for RotateKey {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/keys/rotate";
    type Request = UserRequest;
    type Response = RotateKeyResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RotateKeyResponse {
    pub access_key: AccessKey,
}

/// `POST /v1/auth/keys/create`: an access key of the owner (no user), for the AWS API and
/// the registry; it may do everything, as the owner does. The secret is shown this once.
pub struct CreateOwnerKey;

impl Endpoint for CreateOwnerKey {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/keys/create";
    type Request = Empty;
    type Response = RotateKeyResponse;
}

/// `GET /v1/auth/keys/list`: the owner's access keys (never their secrets).
pub struct ListOwnerKeys;

impl Endpoint for ListOwnerKeys {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/auth/keys/list";
    type Request = Empty;
    type Response = ListOwnerKeysResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ListOwnerKeysResponse {
    pub access_key_metadata: Vec<OwnerKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct OwnerKey {
    pub access_key_id: String,
    pub create_date: String,
}

/// `POST /v1/auth/keys/delete`: an owner key stops working at once.
pub struct DeleteOwnerKey;

impl Endpoint for DeleteOwnerKey {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/keys/delete";
    type Request = OwnerKeyRequest;
    type Response = Empty;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerKeyRequest {
    pub access_key_id: String,
}

/// `POST /v1/auth/token` (ECR GetAuthorizationToken): a registry password valid 12 hours,
/// for the daemon's owner (no user) or a user.
pub struct GetAuthorizationToken;

impl Endpoint for GetAuthorizationToken {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/token";
    type Request = TokenRequest;
    type Response = TokenResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub authorization_data: Vec<AuthorizationData>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse").finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationData {
    /// base64 of `AWS:PASSWORD`, as ECR answers.
    pub authorization_token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// `http://host:port`.
    pub proxy_endpoint: String,
}

/// `POST /v1/auth/policies/attach` (IAM PutUserPolicy): an identity policy, by name.
pub struct AttachUserPolicy;

impl Endpoint for AttachUserPolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/policies/attach";
    type Request = AttachUserPolicyRequest;
    type Response = UserPolicy;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachUserPolicyRequest {
    pub user_name: String,
    pub policy_name: String,
    /// The IAM policy document (JSON or YAML text).
    pub policy_document: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UserPolicy {
    pub user_name: String,
    pub policy_name: String,
    pub policy_document: String,
    /// Things that are valid but probably not meant (a resource of another account or region,
    /// an action ecrl does not know), each `path: message`; only when the policy is set
    /// (ecrl's addition, as `ignoredFields` is to a task definition's answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/auth/policies/detach` (IAM DeleteUserPolicy).
pub struct DetachUserPolicy;

impl Endpoint for DetachUserPolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/policies/detach";
    type Request = UserPolicyRef;
    type Response = Empty;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPolicyRef {
    pub user_name: String,
    pub policy_name: String,
}

/// `GET /v1/auth/policies/list` (IAM ListUserPolicies, with the documents).
pub struct ListUserPolicies;

impl Endpoint for ListUserPolicies {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/auth/policies/list";
    type Request = UserRequest;
    type Response = ListUserPoliciesResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ListUserPoliciesResponse {
    pub policies: Vec<UserPolicy>,
}

/// `POST /v1/auth/simulate` (IAM SimulatePrincipalPolicy, one action on one resource).
pub struct SimulatePolicy;

impl Endpoint for SimulatePolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/auth/simulate";
    type Request = SimulateRequest;
    type Response = SimulateResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulateRequest {
    pub user_name: String,
    pub action: String,
    /// An ARN, or a repository name (made into its ARN).
    pub resource: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SimulateResponse {
    pub eval_action_name: String,
    pub eval_resource_name: String,
    /// `allowed`, `explicitDeny` or `implicitDeny`, as IAM's simulator says.
    pub eval_decision: String,
    /// The statement that decided, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_statement: Option<MatchedStatement>,
    /// The decision in words.
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MatchedStatement {
    /// e.g. `identity policy pull-only`, `repository policy team/app`, `registry policy`.
    pub source_policy: String,
    pub statement_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// `POST /v1/repositories/policy/set` (ECR SetRepositoryPolicy).
pub struct SetRepositoryPolicy;

impl Endpoint for SetRepositoryPolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/policy/set";
    type Request = SetRepositoryPolicyRequest;
    type Response = RepositoryPolicy;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetRepositoryPolicyRequest {
    pub repository_name: String,
    pub policy_text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryPolicy {
    pub registry_id: String,
    pub repository_name: String,
    pub policy_text: String,
    /// Things that are valid but probably not meant (a resource of another account or region,
    /// an action ecrl does not know), each `path: message`; only when the policy is set
    /// (ecrl's addition, as `ignoredFields` is to a task definition's answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `GET /v1/repositories/policy/get` (ECR GetRepositoryPolicy).
pub struct GetRepositoryPolicy;

impl Endpoint for GetRepositoryPolicy {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/repositories/policy/get";
    type Request = RepositoryPolicyRef;
    type Response = RepositoryPolicy;
}

/// `POST /v1/repositories/policy/delete` (ECR DeleteRepositoryPolicy): answers the policy
/// that was removed.
pub struct DeleteRepositoryPolicy;

impl Endpoint for DeleteRepositoryPolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/repositories/policy/delete";
    type Request = RepositoryPolicyRef;
    type Response = RepositoryPolicy;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryPolicyRef {
    pub repository_name: String,
}

/// `POST /v1/registry/policy/set` (ECR PutRegistryPolicy).
pub struct PutRegistryPolicy;

impl Endpoint for PutRegistryPolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/registry/policy/set";
    type Request = RegistryPolicyText;
    type Response = RegistryPolicy;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPolicyText {
    pub policy_text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPolicy {
    pub registry_id: String,
    pub policy_text: String,
    /// Things that are valid but probably not meant (a resource of another account or region,
    /// an action ecrl does not know), each `path: message`; only when the policy is set
    /// (ecrl's addition, as `ignoredFields` is to a task definition's answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `GET /v1/registry/policy/get` (ECR GetRegistryPolicy).
pub struct GetRegistryPolicy;

impl Endpoint for GetRegistryPolicy {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/registry/policy/get";
    type Request = Empty;
    type Response = RegistryPolicy;
}

/// `POST /v1/registry/policy/delete` (ECR DeleteRegistryPolicy).
pub struct DeleteRegistryPolicy;

impl Endpoint for DeleteRegistryPolicy {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/registry/policy/delete";
    type Request = Empty;
    type Response = RegistryPolicy;
}
