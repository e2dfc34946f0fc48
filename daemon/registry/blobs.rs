//! Blob routes: GET / HEAD (with Range) / DELETE, and uploads (monolithic, POST + PUT,
//! streamed and chunked PATCH, status, cancel, cross-repository mount).

use super::{
    empty, query_param, upload_range, RegistryError, RequestBody, Result, Shared, CONTENT_DIGEST,
    UPLOAD_UUID,
};
use crate::storage::{StoreError, UploadId};
use crate::uploads::{Holder, Refused};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use ecrl::http_range::{self, ContentRange, RangeError};
use ecrl::names::{Digest, RepoName};
use oci_spec::distribution::ErrorCode;
use std::ops::Range;

fn blob_unknown(repo: &RepoName, digest: &Digest) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in repository {repo}"),
    )
}

fn blob_location(repo: &RepoName, digest: &Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

fn upload_location(repo: &RepoName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn created(repo: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            (header::LOCATION, blob_location(repo, digest)),
            (CONTENT_DIGEST, digest.to_string()),
        ],
    )
}

fn accepted(repo: &RepoName, id: &UploadId, size: u64) -> Response {
    empty(
        StatusCode::ACCEPTED,
        &[
            (header::LOCATION, upload_location(repo, id)),
            (header::RANGE, upload_range(size)),
            (UPLOAD_UUID, id.to_string()),
        ],
    )
}

/// The session `id` names, if it was opened in `repo` (elsewhere it does not exist). On a
/// store that several instances share, a session another instance opened is taken up here
/// when the store says it was opened in `repo`, and counts with `holder`'s sessions.
async fn session(state: &Shared, repo: &RepoName, id: &str, holder: Holder) -> Result<UploadId> {
    let id = id.parse::<UploadId>().map_err(RegistryError::from)?;
    if state.uploads.owned_by(&id, repo) {
        return Ok(id);
    }
    match state.store.upload_label(&id).await {
        Ok(Some(label)) if label == repo.as_str() => {
            state
                .uploads
                .open(id, repo.clone(), holder)
                .map_err(refused)?;
            Ok(id)
        }
        Ok(_) | Err(StoreError::UploadNotFound) => Err(StoreError::UploadNotFound.into()),
        Err(e) => Err(e.into()),
    }
}

/// An upload request failed: when the store ended the session with it (a body that broke
/// off, a write that failed), the session is no one's any more.
fn failed(state: &Shared, id: &UploadId, e: impl Into<RegistryError>) -> RegistryError {
    if !state.store.upload_exists(id) {
        state.uploads.close(id);
    }
    e.into()
}

/// Who opens an upload: which repositories they may read (a mount takes blobs only from
/// those), and whose sessions theirs count with.
pub struct Caller<'a> {
    pub may_read: &'a (dyn Fn(&RepoName) -> bool + Send + Sync),
    pub holder: Holder,
}

fn refused(e: Refused) -> RegistryError {
    RegistryError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyRequests,
        e.to_string(),
    )
    .header(header::RETRY_AFTER, "10")
}

pub async fn get(
    state: &Shared,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let size = {
        let index = state.meta.read();
        let r = index
            .repos
            .get(repo)
            .ok_or_else(|| blob_unknown(repo, digest))?;
        r.blobs
            .get(digest)
            .copied()
            .or_else(|| r.manifests.get(digest).map(|m| m.size))
    }
    .ok_or_else(|| blob_unknown(repo, digest))?;

    let etag = format!("\"{digest}\"");
    let range = match requested_range(headers, &etag, size) {
        Ok(range) => range,
        Err(value) => {
            return Err(RegistryError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUnknown,
                format!("range {value:?} is not satisfiable for a blob of {size} bytes"),
            )
            .header(header::CONTENT_RANGE, format!("bytes */{size}")))
        }
    };
    let (status, span) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..size),
    };
    let body = if head {
        Body::empty()
    } else {
        match state.store.read(digest, span.clone()).await {
            Ok(stream) => Body::from_stream(stream),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(blob_unknown(repo, digest))
            }
            Err(e) => return Err(RegistryError::storage(e)),
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(
        h,
        header::CONTENT_LENGTH,
        (span.end - span.start).to_string(),
    );
    set(h, header::CONTENT_TYPE, "application/octet-stream".into());
    set(h, CONTENT_DIGEST, digest.to_string());
    set(h, header::ETAG, etag);
    set(h, header::ACCEPT_RANGES, "bytes".into());
    if range.is_some() {
        set(
            h,
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", span.start, span.end - 1),
        );
    }
    Ok(response)
}

/// The part of a blob of `size` bytes a GET asks for, as RFC 9110 has it: `None` for the
/// whole blob, which is also the answer to what a server may ignore (a unit other than
/// bytes, several ranges, an `If-Range` that names other content); `Err` with the header's
/// value when the range is malformed or starts past the end (a 416).
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> std::result::Result<Option<Range<u64>>, String> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| format!("{value:?}"))?;
    let Some(parsed) = http_range::single_byte_range(value) else {
        return Ok(None);
    };
    if let Some(validator) = headers.get(header::IF_RANGE) {
        if validator.as_bytes() != etag.as_bytes() {
            return Ok(None);
        }
    }
    parsed
        .ok()
        .and_then(|r| r.resolve(size))
        .map(Some)
        .ok_or_else(|| value.to_string())
}

pub async fn delete(state: &Shared, repo: &RepoName, digest: Digest) -> Result<Response> {
    // A blob that a deleted image freed moments ago is on its way out: deleting it is
    // accepted (clients delete an image's blobs after its manifest), and it goes now.
    match state.meta.unlink_blob(repo, digest).await? {
        Ok(true) => {}
        Ok(false) if state.take_released(repo, &digest).await => {}
        Ok(false) => return Err(blob_unknown(repo, &digest)),
        // Deleting a layer out from under an image would break every pull of it.
        Err(images) => {
            let images: Vec<String> = images.iter().map(|d| d.to_string()).collect();
            return Err(RegistryError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                format!(
                    "blob {digest} is part of image {} in {repo}: delete the image, and the \
                     blobs only it uses go with it",
                    images.join(", ")
                ),
            ));
        }
    }
    state.collect_if_unused(&digest).await;
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

/// The cross-repository mount a POST asks for: the digest, and the `from` repository (`None`:
/// any repository). `None` when it asks for none, and when `mount` is not a digest or `from`
/// not a repository name: the spec then falls back to an ordinary upload session (202).
pub fn mount_request(uri: &Uri) -> Option<(Digest, Option<RepoName>)> {
    let digest = query_param(uri, "mount")?.parse().ok()?;
    match query_param(uri, "from") {
        Some(from) => Some((digest, Some(from.parse().ok()?))),
        None => Some((digest, None)),
    }
}

/// The size of `digest` in a repository `caller` may read it in: `from` when the client
/// named one (its permission is checked already), else any that holds it. `None` when there
/// is none, which the client learns only as an ordinary upload session.
fn mount_source(
    state: &Shared,
    digest: &Digest,
    from: Option<&RepoName>,
    caller: &Caller,
) -> Option<u64> {
    let holders: Vec<(RepoName, u64)> = {
        let index = state.meta.read();
        match from {
            Some(from) => {
                let size = index.repos.get(from)?.blobs.get(digest).copied()?;
                return Some(size);
            }
            None => index
                .repos
                .iter()
                .filter_map(|(name, r)| r.blobs.get(digest).map(|size| (name.clone(), *size)))
                .collect(),
        }
    };
    // Policies are read outside the index's lock.
    holders
        .into_iter()
        .find(|(name, _)| (caller.may_read)(name))
        .map(|(_, size)| size)
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub async fn start(
    state: &Shared,
    repo: RepoName,
    mount: Option<(Digest, Option<RepoName>)>,
    caller: Caller<'_>,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response> {
    // A request refused for its digest, or a blob refused for its bytes, creates no
    // repository: it is made (when `create_on_push` allows) only once something goes in it.
    let digest = match query_param(&parts.uri, "digest") {
        Some(digest) => Some(digest.parse::<Digest>()?),
        None => None,
    };
    let create = state.config.create_on_push;
    if !create {
        state.meta.ensure_repo(&repo, false).await?;
    }
    if let Some((digest, from)) = mount {
        if let Some(size) = mount_source(state, &digest, from.as_ref(), &caller) {
            let _guard = state.lock_blob(&digest).await;
            if state
                .store
                .stat(&digest)
                .await
                .map_err(RegistryError::storage)?
                .is_some()
            {
                state.meta.ensure_repo(&repo, create).await?;
                state.meta.pushed_blob(&repo, digest, size).await?;
                return Ok(created(&repo, &digest));
            }
        }
        // Not mountable: fall through to an ordinary upload session, as the spec asks.
    }
    if let Some(digest) = digest {
        let id = state.store.upload_start_for(repo.as_str()).await?;
        state.store.upload_write(&id, None, body).await?;
        let _guard = state.lock_blob(&digest).await;
        let size = state.store.upload_finish(&id, &digest).await?;
        state.meta.ensure_repo(&repo, create).await?;
        state.meta.pushed_blob(&repo, digest, size).await?;
        return Ok(created(&repo, &digest));
    }
    // A session alone puts nothing in the repository: it is made at the first blob.
    state.uploads.admit(&caller.holder).map_err(refused)?;
    let id = state.store.upload_start_for(repo.as_str()).await?;
    if let Err(e) = state.uploads.open(id, repo.clone(), caller.holder) {
        let _ = state.store.upload_cancel(&id).await;
        return Err(refused(e));
    }
    Ok(accepted(&repo, &id, 0))
}

pub async fn status(state: &Shared, repo: &RepoName, id: &str, holder: Holder) -> Result<Response> {
    let id = session(state, repo, id, holder).await?;
    let size = state.store.upload_size(&id).await?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &[
            (header::LOCATION, upload_location(repo, &id)),
            (header::RANGE, upload_range(size)),
            (UPLOAD_UUID, id.to_string()),
        ],
    ))
}

/// The start offset a `Content-Range` names (`a-b`, or `bytes a-b/*`), checked against the
/// body's `Content-Length` when both are given.
fn chunk_offset(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUploadInvalid,
            format!("invalid Content-Range {value:?}: {why}"),
        )
    };
    let text = value.to_str().map_err(|_| invalid("not text"))?;
    let range: ContentRange = text.parse().map_err(|e: RangeError| invalid(&e.0))?;
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        range.check_length(length).map_err(|e| invalid(&e.0))?;
    }
    Ok(Some(range.start()))
}

pub async fn patch(
    state: &Shared,
    repo: &RepoName,
    id: &str,
    holder: Holder,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response> {
    let id = session(state, repo, id, holder).await?;
    let offset = match chunk_offset(&parts.headers) {
        Ok(offset) => offset,
        Err(e) => {
            let size = state.store.upload_size(&id).await?;
            return Err(e
                .header(header::RANGE, upload_range(size))
                .header(header::LOCATION, upload_location(repo, &id)));
        }
    };
    let size = match state.store.upload_write(&id, offset, body).await {
        Ok(size) => size,
        Err(e) => {
            return Err(failed(state, &id, e).header(header::LOCATION, upload_location(repo, &id)))
        }
    };
    Ok(accepted(repo, &id, size))
}

pub async fn finish(
    state: &Shared,
    repo: &RepoName,
    id: &str,
    holder: Holder,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response> {
    let id = session(state, repo, id, holder).await?;
    let digest: Digest = query_param(&parts.uri, "digest")
        .ok_or_else(|| {
            RegistryError::bad_request(
                ErrorCode::DigestInvalid,
                "completing an upload needs ?digest=sha256:...",
            )
        })?
        .parse()?;
    let offset = chunk_offset(&parts.headers)?;
    if let Err(e) = state.store.upload_write(&id, offset, body).await {
        return Err(failed(state, &id, e));
    }
    let _guard = state.lock_blob(&digest).await;
    let finished = state.store.upload_finish(&id, &digest).await;
    state.uploads.close(&id);
    let size = finished?;
    state
        .meta
        .ensure_repo(repo, state.config.create_on_push)
        .await?;
    state.meta.pushed_blob(repo, digest, size).await?;
    Ok(created(repo, &digest))
}

pub async fn cancel(state: &Shared, repo: &RepoName, id: &str, holder: Holder) -> Result<Response> {
    let id = session(state, repo, id, holder).await?;
    state.uploads.close(&id);
    state.store.upload_cancel(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_range_whose_length_overflows_is_refused() {
        let mut headers = HeaderMap::new();
        let all = format!("0-{}", u64::MAX);
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&all).unwrap());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let e = chunk_offset(&headers).unwrap_err();
        assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_static("5-9"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(chunk_offset(&headers).unwrap(), Some(5));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert!(chunk_offset(&headers).is_err());
    }

    #[test]
    fn ranges() {
        let etag = "\"sha256:x\"";
        let asked = |pairs: &[(header::HeaderName, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(name.clone(), HeaderValue::from_str(value).unwrap());
            }
            requested_range(&headers, etag, 100)
        };
        assert_eq!(asked(&[]), Ok(None));
        assert_eq!(asked(&[(header::RANGE, "bytes=0-9")]), Ok(Some(0..10)));
        // Ignored: another unit, several ranges, an If-Range naming other content.
        assert_eq!(asked(&[(header::RANGE, "items=0-1")]), Ok(None));
        assert_eq!(asked(&[(header::RANGE, "bytes=0-1,5-6")]), Ok(None));
        let other = [(header::RANGE, "bytes=0-9"), (header::IF_RANGE, "\"old\"")];
        assert_eq!(asked(&other), Ok(None));
        let same = [(header::RANGE, "bytes=0-9"), (header::IF_RANGE, etag)];
        assert_eq!(asked(&same), Ok(Some(0..10)));
        assert_eq!(
            asked(&[(header::RANGE, "bytes=100-")]),
            Err("bytes=100-".to_string())
        );
    }
}
