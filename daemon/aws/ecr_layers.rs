//! ECR's image and layer operations: BatchGetImage, PutImage, BatchCheckLayerAvailability,
//! GetDownloadUrlForLayer, the layer upload (Initiate, UploadLayerPart, Complete) and
//! ListImageReferrers. They work on the registry's own store and metadata through the same
//! functions the registry's HTTP API uses (`images::put_manifest`, the upload sessions), so
//! an image pushed one way is pulled the other.

use super::{decode, next_token, page, string, AwsError, Caller};
use crate::control::repos;
use crate::images::{self, ImageError, MAX_MANIFEST};
use crate::registry::Shared;
use crate::storage::{StoreError, UploadId};
use ecrl::api::repos::ImageId;
use ecrl::names::{Digest, Reference, RepoName, Tag};
use serde_json::{json, Value};
use sha2::Digest as _;

/// The part size InitiateLayerUpload advises: a part, base64 in a JSON body, stays well
/// inside the door's body limit.
const PART_SIZE: u64 = 10 << 20;
/// ECR's limit on image ids and layer digests per batch call.
const MAX_BATCH: usize = 100;

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

impl From<ImageError> for AwsError {
    fn from(e: ImageError) -> AwsError {
        match e {
            ImageError::Invalid(m) => invalid(m),
            ImageError::BlobUnknown(m) => AwsError::client("LayersNotFoundException", m),
            ImageError::DigestMismatch(m) => {
                AwsError::client("ImageDigestDoesNotMatchException", m)
            }
            ImageError::Meta(e) => ecrl::api::ApiError::from(e).into(),
            ImageError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for AwsError {
    fn from(e: StoreError) -> AwsError {
        match e {
            StoreError::UploadNotFound => {
                AwsError::client("UploadNotFoundException", "the upload does not exist")
            }
            StoreError::RangeMismatch { .. } => {
                AwsError::client("InvalidLayerPartException", e.to_string())
            }
            StoreError::DigestMismatch { .. } => {
                AwsError::client("InvalidLayerException", e.to_string())
            }
            StoreError::Busy { .. } => AwsError::client("LimitExceededException", e.to_string()),
            StoreError::Body(_) => invalid(e.to_string()),
            // The object store failed or did not answer: the client may retry.
            StoreError::Unavailable(_) => AwsError {
                kind: "ServiceUnavailableException",
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
            StoreError::Io(_) => AwsError {
                kind: "ServerException",
                status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
            },
        }
    }
}

/// A list member of the input: 1 to [`MAX_BATCH`] entries.
fn batch<T: serde::de::DeserializeOwned>(input: &Value, field: &str) -> Result<Vec<T>, AwsError> {
    let items: Vec<T> = match &input[field] {
        Value::Null => return Err(invalid(format!("{field} is required"))),
        v => decode(v)?,
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(invalid(format!(
            "{field} takes 1 to {MAX_BATCH} entries, not {}",
            items.len()
        )));
    }
    Ok(items)
}

fn failure(id: &ImageId, code: &str, reason: impl Into<String>) -> Value {
    json!({"imageId": id, "failureCode": code, "failureReason": reason.into()})
}

/// ECR's BatchGetImage: each image's manifest, as the registry serves it (a pull is
/// recorded, as for a manifest GET); ids that name nothing are failures.
pub(super) fn batch_get_image(
    state: &Shared,
    name: &RepoName,
    input: &Value,
) -> Result<Value, AwsError> {
    let ids: Vec<ImageId> = batch(input, "imageIds")?;
    let accepted: Vec<String> = match &input["acceptedMediaTypes"] {
        Value::Null => Vec::new(),
        v => decode(v)?,
    };
    let mut images = Vec::new();
    let mut failures = Vec::new();
    let mut pulled = Vec::new();
    {
        let index = state.meta.read();
        let repo = repos::find_repo(&index, name)?;
        for id in &ids {
            let manifest = match repos::find(repo, id) {
                Ok(m) => m,
                Err((code, reason)) => {
                    failures.push(failure(id, &code, reason));
                    continue;
                }
            };
            if let Some(why) = repo.damaged.get(&manifest.digest) {
                failures.push(failure(
                    id,
                    "ImageNotFound",
                    format!("the image lost content ({why}): push it again"),
                ));
                continue;
            }
            if !accepted.is_empty() && !accepted.contains(&manifest.media_type) {
                failures.push(failure(
                    id,
                    "ImageNotFound",
                    format!(
                        "the image's manifest is {}, not one of acceptedMediaTypes",
                        manifest.media_type
                    ),
                ));
                continue;
            }
            let Ok(text) = std::str::from_utf8(&manifest.bytes) else {
                failures.push(failure(id, "ImageNotFound", "the manifest is not UTF-8"));
                continue;
            };
            pulled.push(manifest.digest);
            images.push(json!({
                "registryId": state.meta.account_id(),
                "repositoryName": name.as_str(),
                "imageId": {
                    "imageDigest": manifest.digest.to_string(),
                    "imageTag": id.image_tag,
                },
                "imageManifest": text,
                "imageManifestMediaType": manifest.media_type,
            }));
        }
    }
    for digest in pulled {
        state.meta.record_pull(name, digest);
    }
    strip_nulls(&mut images);
    Ok(json!({"images": images, "failures": failures}))
}

/// Drops `null` members (an image id without a tag has no `imageTag`).
fn strip_nulls(values: &mut [Value]) {
    for v in values {
        if let Value::Object(map) = v {
            map.retain(|_, v| !v.is_null());
            for member in map.values_mut() {
                if let Value::Object(inner) = member {
                    inner.retain(|_, v| !v.is_null());
                }
            }
        }
    }
}

/// ECR's PutImage: stores a manifest (its blobs or manifests must be in the repository) and
/// tags it, through the registry's own manifest path.
pub(super) async fn put_image(
    state: &Shared,
    name: &RepoName,
    input: &Value,
) -> Result<Value, AwsError> {
    let manifest = string(input, "imageManifest")?;
    if manifest.len() > MAX_MANIFEST {
        return Err(invalid(format!(
            "imageManifest exceeds the {MAX_MANIFEST}-byte limit"
        )));
    }
    let media_type = input["imageManifestMediaType"].as_str().map(str::to_string);
    let tag: Option<Tag> = match input["imageTag"].as_str() {
        Some(t) => Some(t.parse().map_err(|e| invalid(format!("imageTag: {e}")))?),
        None => None,
    };
    let digest = Digest::from_bytes(sha2::Sha256::digest(manifest.as_bytes()).into());
    if let Some(asked) = input["imageDigest"].as_str() {
        if asked != digest.to_string() {
            return Err(AwsError::client(
                "ImageDigestDoesNotMatchException",
                format!("the manifest's digest is {digest}, not {asked}"),
            ));
        }
    }
    crate::registry::cache::refuse_push(state, name).map_err(|e| invalid(e.message))?;
    {
        let index = state.meta.read();
        let repo = repos::find_repo(&index, name)?;
        let unchanged = match &tag {
            Some(tag) => repo.tags.get(tag) == Some(&digest),
            None => repo.manifests.contains_key(&digest),
        };
        if unchanged {
            return Err(AwsError::client(
                "ImageAlreadyExistsException",
                format!(
                    "Image with digest '{digest}'{} already exists in the repository with name \
                     '{name}' in registry with id '{}'",
                    tag.as_ref()
                        .map(|t| format!(" and tag '{t}'"))
                        .unwrap_or_default(),
                    state.meta.account_id()
                ),
            ));
        }
    }
    let reference = match &tag {
        Some(tag) => Reference::Tag(tag.clone()),
        None => Reference::Digest(digest),
    };
    let stored = images::put_manifest(
        state,
        name,
        reference,
        media_type,
        bytes::Bytes::from(manifest.to_string()),
    )
    .await?;
    let mut image = json!({
        "registryId": state.meta.account_id(),
        "repositoryName": name.as_str(),
        "imageId": {"imageDigest": stored.digest.to_string()},
        "imageManifest": manifest,
        "imageManifestMediaType": stored.media_type,
    });
    if let Some(tag) = tag {
        image["imageId"]["imageTag"] = json!(tag.to_string());
    }
    Ok(json!({ "image": image }))
}

/// ECR's BatchCheckLayerAvailability: whether each blob is in the repository, and its size.
pub(super) fn check_layers(
    state: &Shared,
    name: &RepoName,
    input: &Value,
) -> Result<Value, AwsError> {
    let digests: Vec<String> = batch(input, "layerDigests")?;
    let index = state.meta.read();
    let repo = repos::find_repo(&index, name)?;
    let mut layers = Vec::new();
    let mut failures = Vec::new();
    for text in digests {
        let fail = |code: &str, reason: String| json!({"layerDigest": text, "failureCode": code, "failureReason": reason});
        match text.parse::<Digest>() {
            Err(e) => failures.push(fail("InvalidLayerDigest", e.to_string())),
            Ok(digest) => match repo.blobs.get(&digest) {
                Some(size) => layers.push(json!({
                    "layerDigest": text,
                    "layerAvailability": "AVAILABLE",
                    "layerSize": size,
                })),
                None => failures.push(fail(
                    "MissingLayerDigest",
                    format!("Could not find layer {digest} in repository {name}"),
                )),
            },
        }
    }
    Ok(json!({"layers": layers, "failures": failures}))
}

/// ECR's GetDownloadUrlForLayer: the registry's own URL for the blob, fetched with the
/// registry's credentials (`aws ecr get-login-password`, as user `AWS`).
pub(super) fn download_url(
    state: &Shared,
    caller: &Caller<'_>,
    name: &RepoName,
    input: &Value,
) -> Result<Value, AwsError> {
    let text = string(input, "layerDigest")?;
    let digest: Digest = text
        .parse()
        .map_err(|e| invalid(format!("layerDigest: {e}")))?;
    let index = state.meta.read();
    let repo = repos::find_repo(&index, name)?;
    if !repo.blobs.contains_key(&digest) {
        return Err(AwsError::client(
            "LayersNotFoundException",
            format!("layer {digest} is not in repository {name}"),
        ));
    }
    Ok(json!({
        "downloadUrl": format!("{}/v2/{name}/blobs/{digest}", caller.url()),
        "layerDigest": digest.to_string(),
    }))
}

/// ECR's InitiateLayerUpload: an upload session in the repository, counted against the
/// caller's sessions as a registry upload is.
pub(super) async fn initiate_upload(
    state: &Shared,
    caller: &Caller<'_>,
    name: &RepoName,
) -> Result<Value, AwsError> {
    repos::find_repo(&state.meta.read(), name)?;
    crate::registry::cache::refuse_push(state, name).map_err(|e| invalid(e.message))?;
    let holder = crate::uploads::Holder::new(&caller.principal, caller.client);
    let refused = |e: crate::uploads::Refused| AwsError {
        kind: "LimitExceededException",
        status: axum::http::StatusCode::BAD_REQUEST,
        message: e.to_string(),
    };
    state.uploads.admit(&holder).map_err(refused)?;
    let id = state.store.upload_start().await?;
    if let Err(e) = state.uploads.open(id, name.clone(), holder) {
        let _ = state.store.upload_cancel(&id).await;
        return Err(refused(e));
    }
    Ok(json!({"uploadId": id.to_string(), "partSize": PART_SIZE}))
}

/// The upload session `uploadId` names, if it was opened in `name`.
fn session(state: &Shared, name: &RepoName, input: &Value) -> Result<UploadId, AwsError> {
    let text = string(input, "uploadId")?;
    let not_found = || {
        AwsError::client(
            "UploadNotFoundException",
            format!("upload {text} does not exist in repository {name}"),
        )
    };
    let id: UploadId = text.parse().map_err(|_| not_found())?;
    if state.uploads.owned_by(&id, name) {
        Ok(id)
    } else {
        Err(not_found())
    }
}

fn byte_offset(input: &Value, field: &str) -> Result<u64, AwsError> {
    input[field]
        .as_u64()
        .ok_or_else(|| invalid(format!("{field} is required (a byte offset)")))
}

/// ECR's UploadLayerPart: the part's bytes appended where the upload ends.
pub(super) async fn upload_part(
    state: &Shared,
    name: &RepoName,
    input: &Value,
) -> Result<Value, AwsError> {
    use base64::Engine as _;
    let id = session(state, name, input)?;
    let first = byte_offset(input, "partFirstByte")?;
    let last = byte_offset(input, "partLastByte")?;
    let part = base64::engine::general_purpose::STANDARD
        .decode(string(input, "layerPartBlob")?)
        .map_err(|e| invalid(format!("layerPartBlob is not base64: {e}")))?;
    if last < first || last - first + 1 != part.len() as u64 {
        return Err(AwsError::client(
            "InvalidLayerPartException",
            format!(
                "partFirstByte {first} to partLastByte {last} is not the part's {} bytes",
                part.len()
            ),
        ));
    }
    let body = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(part))
    });
    let size = match state.store.upload_write(&id, Some(first), body).await {
        Ok(size) => size,
        Err(e) => {
            if !state.store.upload_exists(&id) {
                state.uploads.close(&id);
            }
            return Err(e.into());
        }
    };
    Ok(json!({
        "registryId": state.meta.account_id(),
        "repositoryName": name.as_str(),
        "uploadId": id.to_string(),
        "lastByteReceived": size.saturating_sub(1),
    }))
}

/// ECR's CompleteLayerUpload: the upload's content checked against its digest and linked
/// into the repository, as a registry upload's last PUT does.
pub(super) async fn complete_upload(
    state: &Shared,
    name: &RepoName,
    input: &Value,
) -> Result<Value, AwsError> {
    let id = session(state, name, input)?;
    let digests: Vec<String> = batch(input, "layerDigests")?;
    let [text] = digests.as_slice() else {
        return Err(invalid(
            "layerDigests takes the one digest of the upload's content",
        ));
    };
    let digest: Digest = text
        .parse()
        .map_err(|e| invalid(format!("layerDigests: {e}")))?;
    let finished = {
        let _guard = state.lock_blob(&digest).await;
        let finished = state.store.upload_finish(&id, &digest).await;
        state.uploads.close(&id);
        match finished {
            Ok(size) => {
                state
                    .meta
                    .ensure_repo(name, false)
                    .await
                    .map_err(ecrl::api::ApiError::from)?;
                state
                    .meta
                    .link_blob(name, digest, size)
                    .await
                    .map_err(ecrl::api::ApiError::from)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    finished?;
    Ok(json!({
        "registryId": state.meta.account_id(),
        "repositoryName": name.as_str(),
        "uploadId": id.to_string(),
        "layerDigest": digest.to_string(),
    }))
}

/// ECR's ListImageReferrers: the manifests in the repository whose subject is the image,
/// filtered by artifact type, a page at a time (in digest order, as the registry's
/// referrers API lists them).
pub(super) fn referrers(state: &Shared, name: &RepoName, input: &Value) -> Result<Value, AwsError> {
    let subject: Digest = string(&input["subjectId"], "imageDigest")?
        .parse()
        .map_err(|e| invalid(format!("subjectId.imageDigest: {e}")))?;
    let types: Vec<String> = match &input["filter"]["artifactTypes"] {
        Value::Null => Vec::new(),
        v => decode(v)?,
    };
    let (max, after) = page(input, 50)?;
    let index = state.meta.read();
    let repo = repos::find_repo(&index, name)?;
    let mut found: Vec<_> = repo
        .manifests
        .values()
        .filter(|m| m.subject.as_ref() == Some(&subject))
        .filter(|m| {
            types.is_empty()
                || m.artifact_type
                    .as_ref()
                    .is_some_and(|t| types.iter().any(|x| x == t))
        })
        .filter(|m| after.is_empty() || m.digest.to_string() > after)
        .collect();
    found.sort_by_key(|m| m.digest);
    let more = found.len() > max;
    found.truncate(max);
    let referrers: Vec<Value> = found
        .iter()
        .map(|m| {
            let mut r = json!({
                "digest": m.digest.to_string(),
                "mediaType": m.media_type,
                "size": m.size,
                "artifactStatus": "ACTIVE",
            });
            if let Some(t) = &m.artifact_type {
                r["artifactType"] = json!(t);
            }
            if let Some(a) = &m.annotations {
                r["annotations"] = json!(a);
            }
            r
        })
        .collect();
    let mut out = json!({ "referrers": referrers });
    if more {
        if let Some(last) = found.last() {
            out["nextToken"] = json!(next_token(&last.digest.to_string()));
        }
    }
    Ok(out)
}
