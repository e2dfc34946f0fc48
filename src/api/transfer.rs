//! `/v1/images/push`, `/v1/images/pull`, `/v1/images/load`: moving whole images between
//! the store and archives or the Docker engine.
//!
//! These are streams: a push sends the archive as the request body and reads newline-delimited
//! [`TransferEvent`]s back; a pull reads the archive as the response body; a load into the
//! Docker engine reads events.

use super::ApiError;
use serde::{Deserialize, Serialize};

/// A streaming endpoint: the request travels in the query string (the body is the data),
/// the answer is a stream.
pub trait StreamEndpoint {
    const PATH: &'static str;
    type Request: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;
}

/// `POST /v1/images/push?...` with an archive as the body (or none, for a Docker engine
/// image); answers [`TransferEvent`] lines.
pub struct PushImage;

impl StreamEndpoint for PushImage {
    const PATH: &'static str = "/v1/images/push";
    type Request = PushRequest;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    pub repository_name: String,
    /// The tag; without it the archive's own tag, when it has exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// `gzip` (default) or `none`: how layers that arrive uncompressed are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// An image in the local Docker engine to push instead of a body (`name[:tag]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// An archive file the daemon reads itself instead of a body (the CLI and the daemon
    /// share the machine): it can skip what it already holds without reading it. A daemon
    /// that cannot open it answers `SourceUnreadable`, and the CLI streams the file instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// The source as the user named it (`app.tar`, `stdin`), for messages about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

/// `POST /v1/images/pull?...`: answers the archive itself (`application/x-tar`).
pub struct PullImage;

impl StreamEndpoint for PullImage {
    const PATH: &'static str = "/v1/images/pull";
    type Request = PullRequest;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub repository_name: String,
    /// A tag or a digest; `latest` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `docker-archive` (default) or `oci-archive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `os/arch[/variant]`: which image of a multi-platform index (docker-archive only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// The header on a pull's response that carries the archive's content size in bytes (the sum
/// of the blobs it holds), for progress.
pub const CONTENT_SIZE_HEADER: &str = "ecrl-content-size";

/// `POST /v1/images/load?...`: loads an image into the local Docker engine; answers
/// [`TransferEvent`] lines.
pub struct LoadImage;

impl StreamEndpoint for LoadImage {
    const PATH: &'static str = "/v1/images/load";
    type Request = PullRequest;
}

/// One line of a transfer's event stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum TransferEvent {
    /// A blob began to move; `size` when known.
    BlobStarted {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// Bytes of a blob moved so far.
    BlobProgress { name: String, bytes: u64 },
    /// A blob is in place: `pushed`, or `exists` when the store already had it.
    BlobDone {
        name: String,
        digest: String,
        size: u64,
        status: BlobStatus,
    },
    /// The final result.
    Done(TransferResult),
    /// The transfer failed; nothing was tagged.
    Error(ApiError),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum BlobStatus {
    Pushed,
    Exists,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransferResult {
    pub repository_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    pub image_digest: String,
    pub image_manifest_media_type: String,
    pub image_size_in_bytes: u64,
    pub blobs_pushed: u64,
    pub blobs_existing: u64,
    /// Where the image went, for a load: the Docker engine's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_reference: Option<String>,
}
