//! Registry errors as the distribution spec's JSON bodies, built from oci-spec's types.

use crate::auth::AuthError;
use crate::images::ImageError;
use crate::metadata::MetaError;
use crate::storage::StoreError;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ecrl::names::NameError;
use oci_spec::distribution::{ErrorCode, ErrorInfoBuilder, ErrorResponseBuilder};

#[derive(Debug)]
pub struct RegistryError {
    pub status: StatusCode,
    /// The spec's code; for a failure of the registry itself (a 5xx), the body says
    /// `UNKNOWN` instead, as CNCF distribution does, since the spec has no code for it.
    pub code: ErrorCode,
    pub message: String,
    /// Extra response headers (`Range`, `Location`); few, so a Vec keeps errors small.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.retain(|(n, _)| *n != name);
            self.headers.push((name, v));
        }
        self
    }

    /// Adds a header that may appear several times (`WWW-Authenticate`).
    pub fn append_header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The metadata database cannot be reached: the request may succeed when retried;
    /// nothing of it was kept.
    pub fn metadata_unavailable(e: &MetaError) -> Self {
        tracing::warn!("registry request failed: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unsupported,
            format!("{e}; nothing was stored by this request, retry later"),
        )
        .header(header::RETRY_AFTER, "5")
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("registry request failed: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unsupported,
            format!("internal error: {message}"),
        )
    }
}

/// The code of an error the spec has none for: the registry failed (a full disk, an I/O
/// error, a database error), not the request.
const UNKNOWN: &str = "UNKNOWN";

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let server_error = self.status.is_server_error();
        let body = ErrorInfoBuilder::default()
            .code(self.code.clone())
            .message(self.message.clone())
            .build()
            .and_then(|info| ErrorResponseBuilder::default().errors(vec![info]).build())
            .ok()
            .and_then(|r| serde_json::to_value(&r).ok())
            .map(|mut body| {
                if server_error {
                    if let Some(code) = body.pointer_mut("/errors/0/code") {
                        *code = serde_json::Value::from(UNKNOWN);
                    }
                }
                body.to_string().into_bytes()
            })
            .unwrap_or_else(|| b"{\"errors\":[]}".to_vec());
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::Repository(_) => ErrorCode::NameInvalid,
            NameError::Digest(_) | NameError::Algorithm(_) => ErrorCode::DigestInvalid,
            NameError::Tag(_) | NameError::Reference(_) => ErrorCode::ManifestInvalid,
        };
        Self::bad_request(code, e.to_string())
    }
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::RepoNotFound(ref name) => Self::not_found(
                ErrorCode::NameUnknown,
                format!(
                    "repository {name} does not exist; create it with 'ecrl repo create {name}' \
                     (pushes create repositories only when registry.create_on_push is on)"
                ),
            ),
            MetaError::TagImmutable { .. } => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!("ImageTagAlreadyExistsException: {e}"),
            ),
            MetaError::ManifestNotFound { .. } => {
                Self::not_found(ErrorCode::ManifestUnknown, e.to_string())
            }
            MetaError::ReferenceMissing { .. } => {
                Self::bad_request(ErrorCode::ManifestBlobUnknown, e.to_string())
            }
            // Deleting it would break every pull of the index.
            MetaError::ManifestInUse { .. } => Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                e.to_string(),
            ),
            MetaError::RepoExists(_) | MetaError::RepoNotEmpty(_) => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Denied, e.to_string())
            }
            MetaError::Unavailable(_) => Self::metadata_unavailable(&e),
            // The registry never touches task definitions or tasks.
            MetaError::Db(_)
            | MetaError::TaskDefinitionNotFound(_)
            | MetaError::TaskDefinitionActive(_)
            | MetaError::TaskNotFound(_)
            | MetaError::UserNotFound(_)
            | MetaError::KeyNotFound(_)
            | MetaError::UserExists(_)
            | MetaError::PolicyNotFound(_) => Self::internal(e),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UploadNotFound => Self::not_found(
                ErrorCode::BlobUploadUnknown,
                "upload session not found: it finished, was cancelled or expired",
            ),
            StoreError::DigestMismatch { .. } => {
                Self::bad_request(ErrorCode::DigestInvalid, e.to_string())
            }
            StoreError::RangeMismatch { size, .. } => Self::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                e.to_string(),
            )
            .header(header::RANGE, super::upload_range(size)),
            StoreError::Body(_) => Self::bad_request(ErrorCode::SizeInvalid, e.to_string()),
            StoreError::Busy { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                e.to_string(),
            )
            .header(header::RETRY_AFTER, "10"),
            StoreError::Io(ref io) if disk_full(io) => {
                tracing::error!("registry request failed: {e}");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::Unsupported,
                    "the registry's disk is full: this upload was not stored (nothing stored \
                     before is lost); free space under ecrld's data dir, then push again",
                )
            }
            StoreError::Io(ref io) if crate::storage::is_unavailable(io) => Self::unavailable(&e),
            StoreError::Unavailable(_) => Self::unavailable(&e),
            StoreError::Io(_) => Self::internal(e),
        }
    }
}

impl RegistryError {
    /// The blob store's backend failed or did not answer: 503, which clients retry, with
    /// what failed (never a 500: the registry did nothing wrong, and nothing half-written
    /// is left).
    pub fn unavailable(e: &dyn std::fmt::Display) -> Self {
        tracing::warn!("registry request failed: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unsupported,
            format!("the registry's storage is unavailable: {e}; nothing was stored by this request, retry later"),
        )
        .header(header::RETRY_AFTER, "5")
    }

    /// A failed read of the blob store: 503 when its backend failed, else 500.
    pub fn storage(e: std::io::Error) -> Self {
        if crate::storage::is_unavailable(&e) {
            Self::unavailable(&e)
        } else {
            Self::internal(e)
        }
    }
}

/// True for "no space left on device" and "disk quota exceeded".
fn disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

impl From<ImageError> for RegistryError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Invalid(m) => Self::bad_request(ErrorCode::ManifestInvalid, m),
            ImageError::BlobUnknown(m) => Self::bad_request(ErrorCode::ManifestBlobUnknown, m),
            ImageError::DigestMismatch(m) => Self::bad_request(ErrorCode::DigestInvalid, m),
            ImageError::Meta(e) => e.into(),
            ImageError::Store(e) => e.into(),
        }
    }
}

impl From<AuthError> for RegistryError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(_) => Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                e.to_string(),
            ),
            AuthError::Denied { .. } => {
                Self::new(StatusCode::FORBIDDEN, ErrorCode::Denied, e.to_string())
            }
            AuthError::TooManyFailures { retry_after, .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                e.to_string(),
            )
            .header(header::RETRY_AFTER, retry_after.to_string()),
        }
    }
}

#[cfg(test)]
mod disk_full_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_507_that_says_so() {
        for err in [
            std::io::Error::from_raw_os_error(libc::ENOSPC),
            std::io::Error::from_raw_os_error(libc::EDQUOT),
        ] {
            let e = RegistryError::from(StoreError::Io(err));
            assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE);
            assert!(e.message.contains("disk is full"), "{}", e.message);
        }
        let e = RegistryError::from(StoreError::Io(std::io::Error::other("boom")));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn an_object_store_failure_is_a_503_with_the_specs_body() {
        let down = crate::storage::Unavailable {
            location: "s3://b at http://127.0.0.1:9".into(),
            message: "connection refused".into(),
        };
        let from_io = std::io::Error::other(crate::storage::Unavailable {
            location: down.location.clone(),
            message: down.message.clone(),
        });
        for e in [
            RegistryError::from(StoreError::Unavailable(down)),
            RegistryError::from(StoreError::Io(from_io)),
            RegistryError::storage(std::io::Error::other(crate::storage::Unavailable {
                location: "s3://b".into(),
                message: "timeout".into(),
            })),
        ] {
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(e.message.contains("unavailable"), "{}", e.message);
            let body = axum::body::to_bytes(e.into_response().into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
            assert!(body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("s3://b"));
        }
        assert_eq!(
            RegistryError::storage(std::io::Error::other("boom")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn a_failure_of_the_registry_is_never_called_unsupported() {
        let cases = [
            RegistryError::internal("database is locked"),
            RegistryError::from(StoreError::Io(std::io::Error::from_raw_os_error(
                libc::ENOSPC,
            ))),
        ];
        for e in cases {
            let status = e.status;
            let body = axum::body::to_bytes(e.into_response().into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(status.is_server_error());
            assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
        }
        let client = RegistryError::bad_request(ErrorCode::DigestInvalid, "bad");
        let body = axum::body::to_bytes(client.into_response().into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    }
}
