//! `/v1/secrets`: the secret store task definitions' `secrets[].valueFrom` read from, in
//! Secrets Manager's names. A value is only ever answered by [`GetSecret`].

use super::{Empty, Endpoint, Method};
use serde::{Deserialize, Serialize};

/// The longest value a secret may hold (Secrets Manager's limit).
pub const MAX_SECRET_BYTES: usize = 65_536;

/// What is known of a secret besides its value (Secrets Manager's DescribeSecret names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct SecretInfo {
    pub name: String,
    #[serde(rename = "ARN")]
    pub arn: String,
    /// The current version's id.
    pub version_id: String,
    pub created_date: String,
    pub last_changed_date: String,
}

pub struct PutSecret;

impl Endpoint for PutSecret {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/secrets/put";
    type Request = PutSecretRequest;
    type Response = PutSecretResponse;
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PutSecretRequest {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutSecretResponse {
    pub secret: SecretInfo,
    /// False when the secret existed: its value before is now its previous version.
    pub created: bool,
}

pub struct GetSecret;

impl Endpoint for GetSecret {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/secrets/get";
    type Request = NamedSecret;
    type Response = SecretValue;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedSecret {
    pub name: String,
}

/// A secret with its value (Secrets Manager's GetSecretValue names).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretValue {
    pub name: String,
    #[serde(rename = "ARN")]
    pub arn: String,
    pub version_id: String,
    pub secret_string: String,
    pub created_date: String,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("version_id", &self.version_id)
            .finish_non_exhaustive()
    }
}

pub struct ListSecrets;

impl Endpoint for ListSecrets {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/secrets/list";
    type Request = Empty;
    type Response = ListSecretsResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSecretsResponse {
    pub secret_list: Vec<SecretInfo>,
}

pub struct DeleteSecret;

impl Endpoint for DeleteSecret {
    const METHOD: Method = Method::Delete;
    const PATH: &'static str = "/v1/secrets/delete";
    type Request = NamedSecret;
    type Response = SecretInfo;
}
