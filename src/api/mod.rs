//! The control API between `ecrl` and `ecrld`: HTTP/1.1 + JSON over a Unix socket.
//!
//! Every endpoint is a type implementing [`Endpoint`]: its method, its path and its request
//! and response types are defined here once. The client has one generic call and the daemon
//! routes by the same constants, so neither side writes a URL by hand.

pub mod auth;
pub mod events;
pub mod lifecycle;
pub mod mirror;
pub mod repos;
pub mod secrets;
pub mod services;
pub mod system;
pub mod tasks;
pub mod transfer;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The control API's version. The daemon sends it on every response in [`API_VERSION_HEADER`];
/// a client refuses a daemon whose major version differs from its own.
pub const API_VERSION: u32 = 1;

/// The response header that carries [`API_VERSION`].
pub const API_VERSION_HEADER: &str = "ecrl-api-version";

/// HTTP methods the control API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The request is encoded in the query string.
    Get,
    /// The request is a JSON body.
    Post,
    /// The request is a JSON body.
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// One control-API endpoint.
pub trait Endpoint {
    const METHOD: Method;
    const PATH: &'static str;
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// Decodes a request to `E` as the daemon receives it: from the query string for `GET`,
/// from the JSON body otherwise (an empty body is `{}`).
pub fn decode_request<E: Endpoint>(
    query: Option<&str>,
    body: &[u8],
) -> Result<E::Request, ApiError> {
    let decoded = match E::METHOD {
        Method::Get => serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| e.to_string()),
        Method::Post | Method::Delete => {
            let body = if body.is_empty() {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body).map_err(|e| e.to_string())
        }
    };
    decoded.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("invalid request to {}: {e}", E::PATH),
        )
    })
}

/// A request that carries no parameters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Empty {}

/// What the daemon answers when a request fails: a stable code and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// Stable error codes. Scripts may match on them; new ones may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request could not be parsed or a parameter is invalid.
    InvalidParameter,
    /// No endpoint at that method and path (a CLI newer than the daemon).
    UnknownOperation,
    /// The daemon failed while doing what was asked.
    Internal,
    /// The daemon is shutting down.
    ShuttingDown,
    RepositoryNotFound,
    RepositoryAlreadyExists,
    RepositoryNotEmpty,
    ImageNotFound,
    ImageTagAlreadyExists,
    /// The daemon cannot read a file the request names (the client sends its bytes instead).
    SourceUnreadable,
    TaskDefinitionNotFound,
    TaskNotFound,
    UserNotFound,
    UserAlreadyExists,
    /// No such identity, repository or registry policy.
    PolicyNotFound,
    /// The repository has no lifecycle policy.
    LifecyclePolicyNotFound,
    /// The container runtime (the Docker engine) cannot be reached or refused the request.
    RuntimeUnavailable,
    /// A backend the daemon needs (its metadata database, its object store) cannot be
    /// reached; retry later.
    ServiceUnavailable,
    /// A remote registry could not be reached, refused the request or answered wrongly.
    RemoteFailed,
    /// No ECS cluster of that name (ECS's ClusterNotFoundException).
    ClusterNotFound,
    /// The cluster still has tasks that are not STOPPED (ECS's ClusterContainsTasksException).
    ClusterContainsTasks,
    /// No ECS service of that name in the cluster (ECS's ServiceNotFoundException).
    ServiceNotFound,
    /// The service is being deleted (ECS's ServiceNotActiveException).
    ServiceNotActive,
    /// No secret of that name (Secrets Manager's ResourceNotFoundException).
    SecretNotFound,
    /// A code this client does not know yet.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the daemon answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidParameter | ErrorCode::SourceUnreadable => 400,
            ErrorCode::UnknownOperation
            | ErrorCode::RepositoryNotFound
            | ErrorCode::ImageNotFound
            | ErrorCode::TaskDefinitionNotFound
            | ErrorCode::TaskNotFound
            | ErrorCode::UserNotFound
            | ErrorCode::PolicyNotFound
            | ErrorCode::LifecyclePolicyNotFound
            | ErrorCode::ClusterNotFound
            | ErrorCode::ServiceNotFound
            | ErrorCode::SecretNotFound => 404,
            ErrorCode::RepositoryAlreadyExists
            | ErrorCode::RepositoryNotEmpty
            | ErrorCode::ImageTagAlreadyExists
            | ErrorCode::UserAlreadyExists
            | ErrorCode::ClusterContainsTasks
            | ErrorCode::ServiceNotActive => 409,
            ErrorCode::ShuttingDown
            | ErrorCode::RuntimeUnavailable
            | ErrorCode::ServiceUnavailable => 503,
            ErrorCode::RemoteFailed => 502,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }
}
