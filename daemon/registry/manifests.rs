//! Manifest routes (GET / HEAD / PUT / DELETE by tag or digest), tag listing, the catalog and
//! the referrers API.

use super::{empty, paginate, query_param, RegistryError, Result, Shared, CONTENT_DIGEST};
use crate::metadata::{now_millis, Manifest, TagMutability};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ecrl::names::{Digest, Reference, RepoName};
use oci_spec::distribution::ErrorCode;
use serde::Deserialize;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The spec's limit on manifest size, which registries should enforce.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

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

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::bad_request(ErrorCode::ManifestInvalid, message)
}

/// Finds the manifest a tag or digest names.
fn resolve(state: &Shared, repo: &RepoName, reference: &Reference) -> Result<Arc<Manifest>> {
    let index = state.meta.read();
    let r = index.repos.get(repo).ok_or_else(|| repo_unknown(repo))?;
    let digest = match reference {
        Reference::Tag(tag) => r.tags.get(tag).copied(),
        Reference::Digest(digest) => Some(*digest),
    };
    digest
        .and_then(|d| r.manifests.get(&d).cloned())
        .ok_or_else(|| manifest_unknown(repo, reference))
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: Option<i64>,
    urls: Option<Vec<String>>,
}

impl Descriptor {
    fn digest(&self, what: &str) -> Result<Digest> {
        self.digest
            .parse()
            .map_err(|e| invalid(format!("{what}: {e}")))
    }
}

enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

pub async fn put(
    state: &Shared,
    repo: RepoName,
    reference: Reference,
    parts: &Parts,
    body: Body,
) -> Result<Response> {
    let too_large = || {
        RegistryError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SizeInvalid,
            format!("manifest exceeds the {MAX_MANIFEST}-byte limit"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST as u64) {
        // Read (and drop) a moderately oversized body before answering, so the client gets
        // the 413 instead of a broken pipe; a huge one is cut off.
        let _ = axum::body::to_bytes(body, 4 * MAX_MANIFEST).await;
        return Err(too_large());
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let body = axum::body::to_bytes(body, MAX_MANIFEST)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                RegistryError::bad_request(ErrorCode::SizeInvalid, format!("reading manifest: {e}"))
            }
        })?;

    let doc: Doc = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if doc.schema_version != Some(2) {
        return Err(invalid("manifest schemaVersion must be 2"));
    }
    let media_type = match (&content_type, &doc.media_type) {
        (Some(header), Some(body)) if header != body => {
            return Err(invalid(format!(
                "Content-Type {header} does not match the manifest's mediaType {body}"
            )))
        }
        (Some(header), _) => header.clone(),
        (None, Some(body)) => body.clone(),
        (None, None) => {
            // An OCI manifest may leave mediaType out; its shape says which it is.
            if doc.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        }
    };
    let kind = kind_of(&media_type).ok_or_else(|| {
        invalid(format!(
            "unsupported manifest media type {media_type}: ecrl stores OCI image manifests and \
             indexes and Docker schema 2 manifests and manifest lists"
        ))
    })?;

    let digest = Digest::from_bytes(sha2::Sha256::digest(&body).into());
    let tag = match reference {
        Reference::Digest(d) if d != digest => {
            return Err(RegistryError::bad_request(
                ErrorCode::DigestInvalid,
                format!("manifest content has digest {digest}, not {d}"),
            ))
        }
        Reference::Digest(_) => None,
        Reference::Tag(tag) => Some(tag),
    };
    state
        .meta
        .ensure_repo(&repo, state.config.create_on_push)
        .await?;

    // Everything it references must be here: blobs for an image, manifests for an index.
    let (refs, blob_bytes, artifact_type) = {
        let index = state.meta.read();
        let r = index.repos.get(&repo).ok_or_else(|| repo_unknown(&repo))?;
        if let (Some(tag), TagMutability::Immutable) = (&tag, r.mutability) {
            if r.tags.get(tag).is_some_and(|d| *d != digest) {
                return Err(crate::metadata::MetaError::TagImmutable {
                    repo: repo.clone(),
                    tag: tag.clone(),
                }
                .into());
            }
        }
        let unknown = |what: &str, d: &Digest| {
            RegistryError::bad_request(
                ErrorCode::ManifestBlobUnknown,
                format!("{what} {d} is not in repository {repo}: push it first"),
            )
        };
        let mut refs = Vec::new();
        let mut bytes = 0u64;
        let mut artifact_type = doc.artifact_type.clone();
        match kind {
            Kind::Image => {
                let config = doc
                    .config
                    .as_ref()
                    .ok_or_else(|| invalid("an image manifest needs a config"))?;
                let layers = doc
                    .layers
                    .as_ref()
                    .ok_or_else(|| invalid("an image manifest needs layers"))?;
                let config_digest = config.digest("config")?;
                bytes += *r
                    .blobs
                    .get(&config_digest)
                    .ok_or_else(|| unknown("config blob", &config_digest))?;
                refs.push(config_digest);
                for (i, layer) in layers.iter().enumerate() {
                    let d = layer.digest(&format!("layers[{i}]"))?;
                    if layer.size.is_some_and(|s| s < 0) {
                        return Err(invalid(format!("layers[{i}]: negative size")));
                    }
                    // Non-distributable layers live elsewhere (their urls): not required here.
                    if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    bytes += *r.blobs.get(&d).ok_or_else(|| unknown("layer blob", &d))?;
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
                    .ok_or_else(|| invalid("an index needs manifests"))?;
                for (i, m) in manifests.iter().enumerate() {
                    let d = m.digest(&format!("manifests[{i}]"))?;
                    let child = r.manifests.get(&d).ok_or_else(|| unknown("manifest", &d))?;
                    bytes += child.image_size;
                    refs.push(d);
                }
            }
        }
        (refs, bytes, artifact_type)
    };
    let subject = match &doc.subject {
        Some(s) => Some(s.digest("subject")?),
        None => None,
    };

    let _guard = state.lock_blob(&digest).await;
    if state
        .store
        .stat(&digest)
        .await
        .map_err(RegistryError::internal)?
        .is_none()
    {
        state.store.put(body.clone(), Some(&digest)).await?;
    }
    let size = body.len() as u64;
    state
        .meta
        .put_manifest(
            &repo,
            Manifest {
                digest,
                media_type,
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
    let mut headers = vec![
        (header::LOCATION, format!("/v2/{repo}/manifests/{digest}")),
        (CONTENT_DIGEST, digest.to_string()),
    ];
    if let Some(subject) = subject {
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
            if state.meta.delete_manifest(repo, *digest).await?.is_none() {
                return Err(manifest_unknown(repo, &reference));
            }
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
