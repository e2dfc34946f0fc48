//! Moving whole images between the store and archives (docker-archive as `docker save`
//! writes it, OCI image layouts) and the local Docker engine.
//!
//! Archives are read and written on blocking threads with the `tar` crate, streaming: an
//! image never sits in memory, only its small JSON files do. Calls images, storage and
//! metadata; must not call the registry or the control API. The Docker engine's side
//! (`docker save` and `docker load`) is the runtime's, which the control API calls.

pub mod export;
pub mod import;
pub mod remote;

use crate::images::ImageError;
use crate::storage::StoreError;
use ecrl::api::transfer::TransferEvent;
use ecrl::api::{ApiError, ErrorCode};

/// Events on their way to the client; a closed channel means the client went away.
pub type Events = tokio::sync::mpsc::Sender<TransferEvent>;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Not an archive ecrl reads, or a malformed one.
    #[error("{0}")]
    Format(String),
    /// The archive names something it does not contain.
    #[error("{0}")]
    Missing(String),
    /// Content that does not match the digest that names it.
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Docker(String),
    #[error("the client went away: nothing was tagged")]
    Cancelled,
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
}

impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> Self {
        let code = match &e {
            TransferError::Format(_)
            | TransferError::Missing(_)
            | TransferError::Mismatch(_)
            | TransferError::Io(_) => ErrorCode::InvalidParameter,
            TransferError::NotFound(_) => ErrorCode::ImageNotFound,
            TransferError::Image(ImageError::Meta(crate::metadata::MetaError::RepoNotFound(_))) => {
                ErrorCode::RepositoryNotFound
            }
            TransferError::Image(ImageError::Meta(crate::metadata::MetaError::TagImmutable {
                ..
            })) => ErrorCode::ImageTagAlreadyExists,
            TransferError::Image(ImageError::Invalid(_))
            | TransferError::Image(ImageError::BlobUnknown(_))
            | TransferError::Image(ImageError::DigestMismatch(_))
            | TransferError::Image(ImageError::Meta(
                crate::metadata::MetaError::ReferenceMissing { .. },
            )) => ErrorCode::InvalidParameter,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Maps a host architecture to the OCI name (`x86_64` → `amd64`).
pub fn host_platform() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux".to_string(), arch.to_string())
}
