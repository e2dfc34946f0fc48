//! Images as a whole: validating and recording a manifest (every referenced blob or manifest
//! must be in the repository), shared by the registry's manifest PUT and by image transfer.
//!
//! Calls storage and metadata; must not call the registry, transfer or the control API.

use crate::app::AppState;
use crate::metadata::{now_millis, Manifest, MetaError};
use crate::storage::StoreError;
use bytes::Bytes;
use ecrl::names::{Digest, Reference, RepoName};
use sha2::Digest as _;

pub use ecrl::manifest::{
    Descriptor, Doc, Kind, ManifestError, Platform, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST,
    OCI_INDEX, OCI_MANIFEST,
};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The manifest is malformed or of a kind ecrl does not store.
    #[error("{0}")]
    Invalid(String),
    /// A referenced blob or manifest is not in the repository.
    #[error("{0}")]
    BlobUnknown(String),
    /// The content's digest is not the one it was pushed under.
    #[error("{0}")]
    DigestMismatch(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ManifestError> for ImageError {
    fn from(e: ManifestError) -> Self {
        ImageError::Invalid(e.0)
    }
}

/// Parses a manifest and settles its media type (see [`ecrl::manifest::parse`]).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<(Doc, String, Kind), ImageError> {
    Ok(ecrl::manifest::parse(content_type, body)?)
}

/// What a stored manifest turned out to be.
pub struct Stored {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub media_type: String,
    pub image_size: u64,
}

/// Validates a manifest against the repository, stores its bytes and records it (and the
/// tag, when `reference` is one). The repository is created if `create_on_push` allows.
pub async fn put_manifest(
    state: &AppState,
    repo: &RepoName,
    reference: Reference,
    content_type: Option<String>,
    body: Bytes,
) -> Result<Stored, ImageError> {
    let (doc, media_type, kind) = parse(content_type.as_deref(), &body)?;
    let digest = Digest::from_bytes(sha2::Sha256::digest(&body).into());
    let tag = match reference {
        Reference::Digest(d) if d != digest => {
            return Err(ImageError::DigestMismatch(format!(
                "manifest content has digest {digest}, not {d}"
            )))
        }
        Reference::Digest(_) => None,
        Reference::Tag(tag) => Some(tag),
    };
    // A refused manifest creates no repository: one that does not exist yet holds none of
    // the blobs or manifests any manifest must reference, and is made by its first blob.
    if !state.config.create_on_push {
        state.meta.ensure_repo(repo, false).await?;
    }

    // A blob a deleted image freed moments ago, which the client found here before the
    // delete, is taken back while its content remains (see `AppState::release`).
    if kind == Kind::Image {
        let missing: Vec<Digest> = {
            let index = state.meta.read();
            let linked = |d: &Digest| {
                index
                    .repos
                    .get(repo)
                    .is_some_and(|r| r.blobs.contains_key(d))
            };
            doc.config
                .iter()
                .chain(doc.layers.iter().flatten())
                .filter_map(|d| d.digest.parse().ok())
                .filter(|d| !linked(d))
                .collect()
        };
        for digest in missing {
            state.relink_released(repo, &digest).await;
        }
    }

    // Everything it references must be here: blobs for an image, manifests for an index.
    let (refs, blob_bytes, artifact_type) = {
        let index = state.meta.read();
        let empty = Default::default();
        let r = index.repos.get(repo).unwrap_or(&empty);
        // Checked again when recorded; here it spares storing a manifest that will be refused.
        if let Some(tag) = &tag {
            r.check_tag(repo, tag, &digest)?;
        }
        let unknown = |what: &str, d: &Digest| {
            ImageError::BlobUnknown(format!(
                "{what} {d} is not in repository {repo}: push it first"
            ))
        };
        // Every descriptor's size is the content's: clients trust it to read the blob.
        let sized = |what: &str, d: &Descriptor, digest: &Digest, actual: u64| match d.size {
            Some(size) if size >= 0 && size as u64 == actual => Ok(actual),
            Some(size) => Err(ImageError::Invalid(format!(
                "{what} {digest} has size {size} in the manifest, but the content in \
                 repository {repo} is {actual} bytes"
            ))),
            None => Err(ImageError::Invalid(format!(
                "{what} {digest} has no size: every descriptor needs the size of its content"
            ))),
        };
        let mut refs = Vec::new();
        let mut bytes = 0u64;
        let mut artifact_type = doc.artifact_type.clone();
        match kind {
            Kind::Image => {
                let config = doc.config.as_ref().ok_or_else(|| {
                    ImageError::Invalid("an image manifest needs a config".into())
                })?;
                let layers = doc
                    .layers
                    .as_ref()
                    .ok_or_else(|| ImageError::Invalid("an image manifest needs layers".into()))?;
                let config_digest = config.parsed_digest("config")?;
                let size = *r
                    .blobs
                    .get(&config_digest)
                    .ok_or_else(|| unknown("config blob", &config_digest))?;
                bytes += sized("config", config, &config_digest, size)?;
                refs.push(config_digest);
                for (i, layer) in layers.iter().enumerate() {
                    let d = layer.parsed_digest(&format!("layers[{i}]"))?;
                    if layer.size.is_some_and(|s| s < 0) {
                        return Err(ImageError::Invalid(format!("layers[{i}]: negative size")));
                    }
                    // Non-distributable layers live elsewhere (their urls): not required here.
                    if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    let size = *r.blobs.get(&d).ok_or_else(|| unknown("layer blob", &d))?;
                    bytes += sized(&format!("layers[{i}]"), layer, &d, size)?;
                    refs.push(d);
                }
                if artifact_type.is_none() {
                    artifact_type = config.media_type.clone();
                }
            }
            Kind::Index => {
                let manifests = doc
                    .manifests
                    .as_ref()
                    .ok_or_else(|| ImageError::Invalid("an index needs manifests".into()))?;
                for (i, m) in manifests.iter().enumerate() {
                    let d = m.parsed_digest(&format!("manifests[{i}]"))?;
                    let child = r.manifests.get(&d).ok_or_else(|| unknown("manifest", &d))?;
                    sized(&format!("manifests[{i}]"), m, &d, child.size)?;
                    bytes += child.image_size;
                    refs.push(d);
                }
            }
        }
        (refs, bytes, artifact_type)
    };
    let subject = match &doc.subject {
        Some(s) => Some(s.parsed_digest("subject")?),
        None => None,
    };

    // Only now, with nothing left to refuse it for (an empty index references nothing).
    state
        .meta
        .ensure_repo(repo, state.config.create_on_push)
        .await?;
    let _guard = state.lock_blob(&digest).await;
    let stored = state.store.stat(&digest).await.map_err(StoreError::Io)?;
    if stored.is_none() {
        state.store.put(body.clone(), Some(&digest)).await?;
    }
    let size = body.len() as u64;
    state
        .meta
        .put_manifest(
            repo,
            Manifest {
                digest,
                media_type: media_type.clone(),
                artifact_type,
                subject,
                size,
                image_size: size + blob_bytes,
                refs,
                annotations: doc.annotations,
                pushed_at: now_millis(),
                last_pulled_at: None,
                bytes: body,
            },
            tag,
        )
        .await?;
    // Replication rules may have queued it.
    state.mirror.replication_wake.notify_one();
    Ok(Stored {
        digest,
        subject,
        media_type,
        image_size: size + blob_bytes,
    })
}
