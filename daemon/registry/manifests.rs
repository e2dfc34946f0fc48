//! Manifest routes (GET / HEAD / PUT / DELETE by tag or digest), tag listing, the catalog and
//! the referrers API.

use super::{
    empty, paginate, query_param, RegistryError, RequestBody, Result, Shared, CONTENT_DIGEST,
};
use crate::images::{self, MAX_MANIFEST, OCI_INDEX};
use crate::metadata::Manifest;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use ecrl::names::{Digest, Reference, RepoName};
use futures_util::StreamExt;
use oci_spec::distribution::ErrorCode;
use std::sync::Arc;

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

fn repo_unknown(repo: &RepoName) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::NameUnknown,
        format!("repository {repo} does not exist"),
    )
}

fn manifest_unknown(repo: &RepoName, reference: &Reference) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in repository {repo}"),
    )
}

/// Finds the manifest a tag or digest names.
fn resolve(state: &Shared, repo: &RepoName, reference: &Reference) -> Result<Arc<Manifest>> {
    let index = state.meta.read();
    let r = index.repos.get(repo).ok_or_else(|| repo_unknown(repo))?;
    let manifest = r
        .manifest(reference)
        .cloned()
        .ok_or_else(|| manifest_unknown(repo, reference))?;
    if let Some(why) = r.damaged.get(&manifest.digest) {
        // Said at once, rather than a pull failing half-way on a lost layer.
        return Err(RegistryError::not_found(
            ErrorCode::ManifestUnknown,
            format!(
                "image {} in {repo} lost content ({why}): push it again",
                manifest.digest
            ),
        ));
    }
    Ok(manifest)
}

pub fn get(state: &Shared, repo: &RepoName, reference: &Reference, head: bool) -> Result<Response> {
    let manifest = resolve(state, repo, reference)?;
    if !head {
        state.meta.record_pull(repo, manifest.digest);
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(manifest.bytes.clone())
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&manifest.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(manifest.size));
    let digest = manifest.digest.to_string();
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert(CONTENT_DIGEST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}

pub async fn put(
    state: &Shared,
    repo: RepoName,
    reference: Reference,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response> {
    let too_large = || {
        RegistryError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SizeInvalid,
            format!("manifest exceeds the {MAX_MANIFEST}-byte limit"),
        )
    };
    // An oversized body is refused before it is read (a client waiting for `100 Continue`
    // then sends nothing) or as soon as it outgrows the limit; the dispatcher reads the rest.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST as u64) {
        return Err(too_large());
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let mut read = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::bad_request(ErrorCode::SizeInvalid, format!("reading manifest: {e}"))
        })?;
        if read.len() + chunk.len() > MAX_MANIFEST {
            return Err(too_large());
        }
        read.extend_from_slice(&chunk);
    }
    let body = read.freeze();

    let stored = images::put_manifest(state, &repo, reference, content_type, body).await?;
    let mut headers = vec![
        (
            header::LOCATION,
            format!("/v2/{repo}/manifests/{}", stored.digest),
        ),
        (CONTENT_DIGEST, stored.digest.to_string()),
    ];
    if let Some(subject) = stored.subject {
        headers.push((OCI_SUBJECT, subject.to_string()));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

pub async fn delete(state: &Shared, repo: &RepoName, reference: Reference) -> Result<Response> {
    match &reference {
        Reference::Tag(tag) => {
            if state.meta.delete_tag(repo, tag.clone()).await?.is_none() {
                return Err(manifest_unknown(repo, &reference));
            }
        }
        Reference::Digest(digest) => {
            let Some(freed) = state.meta.delete_manifest(repo, *digest).await? else {
                return Err(manifest_unknown(repo, &reference));
            };
            state.release(repo, freed);
            state.collect_if_unused(digest).await;
        }
    }
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

fn json(value: &serde_json::Value, content_type: &'static str, link: Option<String>) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response();
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

pub fn tags(state: &Shared, repo: &RepoName, uri: &Uri) -> Result<Response> {
    let tags: Vec<String> = {
        let index = state.meta.read();
        let r = index.repos.get(repo).ok_or_else(|| repo_unknown(repo))?;
        r.tags.keys().map(|t| t.to_string()).collect()
    };
    let (page, link) = paginate(tags.into_iter(), uri, &format!("/v2/{repo}/tags/list"))?;
    Ok(json(
        &serde_json::json!({ "name": repo.as_str(), "tags": page }),
        "application/json",
        link,
    ))
}

pub fn catalog(state: &Shared, uri: &Uri) -> Result<Response> {
    let names: Vec<String> = state
        .meta
        .read()
        .repos
        .keys()
        .map(|r| r.to_string())
        .collect();
    let (page, link) = paginate(names.into_iter(), uri, "/v2/_catalog")?;
    Ok(json(
        &serde_json::json!({ "repositories": page }),
        "application/json",
        link,
    ))
}

pub fn referrers(state: &Shared, repo: &RepoName, subject: &Digest, uri: &Uri) -> Result<Response> {
    use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType};
    let filter = query_param(uri, "artifactType");
    let mut found: Vec<Arc<Manifest>> = {
        let index = state.meta.read();
        let r = index.repos.get(repo).ok_or_else(|| repo_unknown(repo))?;
        r.manifests
            .values()
            .filter(|m| m.subject.as_ref() == Some(subject))
            .filter(|m| filter.is_none() || m.artifact_type == filter)
            .cloned()
            .collect()
    };
    found.sort_by_key(|m| m.digest);
    let mut descriptors = Vec::with_capacity(found.len());
    for m in found {
        let digest: oci_spec::image::Digest = m
            .digest
            .to_string()
            .parse()
            .map_err(RegistryError::internal)?;
        let mut builder = DescriptorBuilder::default()
            .media_type(MediaType::from(m.media_type.as_str()))
            .digest(digest)
            .size(m.size);
        if let Some(t) = &m.artifact_type {
            builder = builder.artifact_type(MediaType::from(t.as_str()));
        }
        if let Some(a) = &m.annotations {
            builder = builder.annotations(
                a.clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        descriptors.push(builder.build().map_err(RegistryError::internal)?);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descriptors)
        .build()
        .map_err(RegistryError::internal)?;
    let value = serde_json::to_value(&index).map_err(RegistryError::internal)?;
    let mut response = json(&value, OCI_INDEX, None);
    if filter.is_some() {
        response.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}
