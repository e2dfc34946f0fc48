//! Writing an image out of the store as an archive: docker-archive (what `docker load`
//! takes) or an OCI image layout as a tar. The archive is planned first (so a missing image
//! is an ordinary error before any byte is sent), then written as a stream on a blocking
//! thread.

use super::import::StreamReader;
use super::TransferError;
use crate::app::AppState;
use crate::images::{self, Kind};
use bytes::Bytes;
use ecrl::names::{Digest, Reference, RepoName};
use std::io::Write;
use std::sync::Arc;
use tokio::runtime::Handle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DockerArchive,
    OciArchive,
}

impl Format {
    pub fn parse(text: Option<&str>) -> Result<Self, TransferError> {
        match text.unwrap_or("docker-archive") {
            "docker-archive" | "docker" => Ok(Format::DockerArchive),
            "oci-archive" | "oci" => Ok(Format::OciArchive),
            other => Err(TransferError::Format(format!(
                "unknown format {other:?}: use docker-archive or oci-archive"
            ))),
        }
    }
}

/// One file of the archive.
enum Item {
    Inline(String, Bytes),
    Blob(String, Digest, u64),
}

/// What an export will write.
pub struct Plan {
    items: Vec<Item>,
    /// Bytes of file content in the archive.
    pub size: u64,
    pub digest: Digest,
    pub media_type: String,
    /// `host:port/repo:tag`, when the image was named by a tag.
    pub docker_reference: Option<String>,
    /// A single-platform image asked for with `--platform`: its platform is in its config,
    /// which [`check_platform`] reads before anything is written.
    platform_check: Option<PlatformCheck>,
}

struct PlatformCheck {
    config: Digest,
    wanted: images::Platform,
    image: String,
}

/// `os/arch[/variant]`.
fn parse_platform(text: &str) -> Result<images::Platform, TransferError> {
    let mut parts = text.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
            Ok(images::Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
            })
        }
        _ => Err(TransferError::Format(format!(
            "platform {text:?}: expected os/arch[/variant], e.g. linux/amd64"
        ))),
    }
}

fn platform_name(p: &images::Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Whether `have` is the `wanted` platform (a variant left out matches any).
fn platform_matches(wanted: &images::Platform, have: &images::Platform) -> bool {
    wanted.os == have.os
        && wanted.architecture == have.architecture
        && (wanted.variant.is_none() || wanted.variant == have.variant)
}

/// Refuses a single-platform image whose platform is not the one asked for, as docker does
/// (`--platform` is a promise about what the archive holds).
pub async fn check_platform(state: &AppState, plan: &Plan) -> Result<(), TransferError> {
    let Some(check) = &plan.platform_check else {
        return Ok(());
    };
    let config = state.store.read_all(&check.config).await?;
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
    }
    let have: Config = serde_json::from_slice(&config).map_err(|e| {
        TransferError::Format(format!("the config of {} is not JSON: {e}", check.image))
    })?;
    let have = images::Platform {
        os: have.os,
        architecture: have.architecture,
        variant: have.variant,
    };
    if platform_matches(&check.wanted, &have) {
        return Ok(());
    }
    Err(TransferError::NotFound(format!(
        "no matching manifest for {} in {}: the image is {} (leave out --platform to pull it)",
        platform_name(&check.wanted),
        check.image,
        platform_name(&have)
    )))
}

pub fn plan(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    format: Format,
    platform: Option<&str>,
) -> Result<Plan, TransferError> {
    let index = state.meta.read();
    let r = index
        .repos
        .get(repo)
        .ok_or_else(|| TransferError::NotFound(format!("repository {repo} does not exist")))?;
    let digest = match reference {
        Reference::Tag(tag) => r.tags.get(tag).copied(),
        Reference::Digest(d) => Some(*d),
    }
    .filter(|d| r.manifests.contains_key(d))
    .ok_or_else(|| TransferError::NotFound(format!("image {repo}:{reference} not found")))?;
    let top = r.manifests[&digest].clone();
    let docker_reference = match reference {
        Reference::Tag(tag) => Some(format!("{}/{repo}:{tag}", state.registry_host())),
        Reference::Digest(_) => None,
    };
    let manifest_of = |d: &Digest| {
        r.manifests
            .get(d)
            .cloned()
            .ok_or_else(|| TransferError::NotFound(format!("manifest {d} is not in {repo}")))
    };
    let blob_size = |d: &Digest| {
        r.blobs
            .get(d)
            .copied()
            .ok_or_else(|| TransferError::NotFound(format!("blob {d} is not in {repo}")))
    };
    let wanted = platform.map(parse_platform).transpose()?;
    let (top_doc, _, top_kind) = images::parse(Some(&top.media_type), &top.bytes)
        .map_err(|e| TransferError::Format(e.to_string()))?;
    let platform_check = match (&wanted, top_kind) {
        (Some(wanted), Kind::Image) => match top_doc.config.as_ref() {
            Some(config) => Some(PlatformCheck {
                config: config
                    .parsed_digest("config")
                    .map_err(|e| TransferError::Format(e.to_string()))?,
                wanted: wanted.clone(),
                image: format!("{repo}:{reference}"),
            }),
            None => None,
        },
        _ => None,
    };
    let mut items = Vec::new();
    match format {
        Format::DockerArchive => {
            let image = match top_kind {
                Kind::Image => top.clone(),
                Kind::Index => {
                    let wanted = match &wanted {
                        Some(p) => p.clone(),
                        None => {
                            let (os, architecture) = super::host_platform();
                            images::Platform {
                                os,
                                architecture,
                                variant: None,
                            }
                        }
                    };
                    let manifests = top_doc.manifests.unwrap_or_default();
                    let child = manifests
                        .iter()
                        .find(|m| {
                            m.platform
                                .as_ref()
                                .is_some_and(|p| platform_matches(&wanted, p))
                        })
                        .ok_or_else(|| {
                            let has: Vec<String> = manifests
                                .iter()
                                .filter_map(|m| m.platform.as_ref().map(platform_name))
                                .collect();
                            TransferError::NotFound(format!(
                                "no matching manifest for {} in {repo}:{reference}: it has {}; \
                                 choose one with --platform",
                                platform_name(&wanted),
                                if has.is_empty() {
                                    "no platforms named".to_string()
                                } else {
                                    has.join(", ")
                                }
                            ))
                        })?;
                    let child = child
                        .parsed_digest("manifests[]")
                        .map_err(|e| TransferError::Format(e.to_string()))?;
                    manifest_of(&child)?
                }
            };
            let (doc, _, _) = images::parse(Some(&image.media_type), &image.bytes)
                .map_err(|e| TransferError::Format(e.to_string()))?;
            let config = doc
                .config
                .ok_or_else(|| TransferError::Format("the image has no config".into()))?
                .parsed_digest("config")
                .map_err(|e| TransferError::Format(e.to_string()))?;
            let config_path = format!("{}.json", config.hex());
            items.push(Item::Blob(config_path.clone(), config, blob_size(&config)?));
            let mut layer_paths = Vec::new();
            for layer in doc.layers.unwrap_or_default() {
                if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                    return Err(TransferError::Format(
                        "the image has non-distributable layers, which a docker-archive cannot hold"
                            .into(),
                    ));
                }
                let d = layer
                    .parsed_digest("layers[]")
                    .map_err(|e| TransferError::Format(e.to_string()))?;
                // docker load decompresses each layer file itself.
                let path = format!("{}/layer.tar", d.hex());
                if !layer_paths.contains(&path) {
                    items.push(Item::Blob(path.clone(), d, blob_size(&d)?));
                }
                layer_paths.push(path);
            }
            let manifest = serde_json::json!([{
                "Config": config_path,
                "RepoTags": docker_reference.iter().collect::<Vec<_>>(),
                "Layers": layer_paths,
            }]);
            items.push(Item::Inline(
                "manifest.json".into(),
                Bytes::from(manifest.to_string()),
            ));
        }
        Format::OciArchive => {
            items.push(Item::Inline(
                "oci-layout".into(),
                Bytes::from_static(b"{\"imageLayoutVersion\":\"1.0.0\"}"),
            ));
            let mut seen = std::collections::HashSet::new();
            let (top_bytes, top_digest, top_type) =
                oci_manifest(&top, &manifest_of, &blob_size, &mut items, &mut seen)?;
            let mut descriptor = serde_json::json!({
                "mediaType": top_type,
                "digest": top_digest.to_string(),
                "size": top_bytes.len(),
            });
            if let Reference::Tag(tag) = reference {
                descriptor["annotations"] =
                    serde_json::json!({ "org.opencontainers.image.ref.name": tag.as_str() });
            }
            let index_json = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": images::OCI_INDEX,
                "manifests": [descriptor],
            });
            items.push(Item::Inline(
                "index.json".into(),
                Bytes::from(index_json.to_string()),
            ));
        }
    }
    let size = items
        .iter()
        .map(|i| match i {
            Item::Inline(_, b) => b.len() as u64,
            Item::Blob(_, _, s) => *s,
        })
        .sum();
    Ok(Plan {
        items,
        size,
        digest,
        media_type: top.media_type.clone(),
        docker_reference,
        platform_check,
    })
}

/// Docker's media types and their OCI equivalents: an OCI layout holds OCI manifests, so a
/// Docker image is converted on the way out (which gives its manifests new digests).
fn oci_media_type(media_type: &str) -> &str {
    match media_type {
        images::DOCKER_MANIFEST => images::OCI_MANIFEST,
        images::DOCKER_LIST => images::OCI_INDEX,
        "application/vnd.docker.container.image.v1+json" => {
            "application/vnd.oci.image.config.v1+json"
        }
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        other => other,
    }
}

/// Adds a manifest (converted to OCI media types when it is Docker's) and everything it
/// references to `items`; returns its bytes, digest and media type as written.
fn oci_manifest(
    m: &crate::metadata::Manifest,
    manifest_of: &dyn Fn(&Digest) -> Result<Arc<crate::metadata::Manifest>, TransferError>,
    blob_size: &dyn Fn(&Digest) -> Result<u64, TransferError>,
    items: &mut Vec<Item>,
    seen: &mut std::collections::HashSet<Digest>,
) -> Result<(Bytes, Digest, String), TransferError> {
    use sha2::Digest as _;
    let format_error = |e: images::ImageError| TransferError::Format(e.to_string());
    let (doc, _, kind) = images::parse(Some(&m.media_type), &m.bytes).map_err(format_error)?;
    let docker = oci_media_type(&m.media_type) != m.media_type;
    let mut value: serde_json::Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| TransferError::Format(format!("manifest {}: {e}", m.digest)))?;
    match kind {
        Kind::Index => {
            for (i, child) in doc.manifests.unwrap_or_default().iter().enumerate() {
                let d = child
                    .parsed_digest("manifests[]")
                    .map_err(|e| format_error(e.into()))?;
                let (bytes, digest, media_type) =
                    oci_manifest(&*manifest_of(&d)?, manifest_of, blob_size, items, seen)?;
                if let Some(entry) = value["manifests"].get_mut(i) {
                    entry["mediaType"] = media_type.into();
                    entry["digest"] = digest.to_string().into();
                    entry["size"] = bytes.len().into();
                }
            }
        }
        Kind::Image => {
            let descriptors = doc.config.into_iter().chain(doc.layers.unwrap_or_default());
            for d in descriptors {
                if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                let d = d
                    .parsed_digest("descriptor")
                    .map_err(|e| format_error(e.into()))?;
                if seen.insert(d) {
                    items.push(Item::Blob(
                        format!("blobs/sha256/{}", d.hex()),
                        d,
                        blob_size(&d)?,
                    ));
                }
            }
            if docker {
                if let Some(config) = value.get_mut("config") {
                    let t = config["mediaType"].as_str().unwrap_or_default().to_string();
                    config["mediaType"] = oci_media_type(&t).into();
                }
                if let Some(layers) = value.get_mut("layers").and_then(|l| l.as_array_mut()) {
                    for layer in layers {
                        let t = layer["mediaType"].as_str().unwrap_or_default().to_string();
                        layer["mediaType"] = oci_media_type(&t).into();
                    }
                }
            }
        }
    }
    let media_type = oci_media_type(&m.media_type).to_string();
    if docker {
        value["mediaType"] = media_type.clone().into();
    }
    // Unchanged manifests keep their exact bytes, and so their digests.
    let original: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
    let bytes = if value == original {
        m.bytes.clone()
    } else {
        Bytes::from(value.to_string())
    };
    let digest = Digest::from_bytes(sha2::Sha256::digest(&bytes).into());
    if seen.insert(digest) {
        items.push(Item::Inline(
            format!("blobs/sha256/{}", digest.hex()),
            bytes.clone(),
        ));
    }
    Ok((bytes, digest, media_type))
}

/// Writes the planned archive to `out`. Runs on a blocking thread.
pub fn write(
    state: Arc<AppState>,
    handle: Handle,
    plan: &Plan,
    out: impl Write,
) -> Result<(), TransferError> {
    let mut builder = tar::Builder::new(out);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    for item in &plan.items {
        match item {
            Item::Inline(path, bytes) => {
                let mut h = header(bytes.len() as u64);
                builder.append_data(&mut h, path, &bytes[..])?;
            }
            Item::Blob(path, digest, size) => {
                let stream = handle.block_on(state.store.read(digest, 0..*size))?;
                let reader = StreamReader::new(stream, handle.clone());
                let mut h = header(*size);
                builder.append_data(&mut h, path, reader)?;
            }
        }
    }
    builder.into_inner()?.flush()?;
    Ok(())
}

/// A `Write` that hands what it is given, in chunks, to an async body.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

const WRITE_CHUNK: usize = 1024 * 1024;

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(WRITE_CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(WRITE_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= WRITE_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
