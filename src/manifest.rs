//! Image manifests and indexes as clients push them: parsed leniently (only what validation
//! and indexing need) and their media type settled, before the daemon checks them against a
//! repository.
//!
//! Pure parsing, no I/O: the daemon's registry (manifest PUT) and image transfer both call
//! it, and so does the fuzz target, so all three see the same parser.

use crate::names::Digest;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The spec's limit on manifest size, which registries should enforce.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest is malformed or of a kind ecrl does not store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// A manifest as pushed, parsed leniently: only what validation and indexing need.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Doc {
    pub schema_version: Option<i64>,
    pub media_type: Option<String>,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Option<Vec<Descriptor>>,
    pub manifests: Option<Vec<Descriptor>>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: String,
    pub size: Option<i64>,
    pub urls: Option<Vec<String>>,
    pub platform: Option<Platform>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Descriptor {
    /// The descriptor's digest; `what` names the descriptor in the error (`layers[2]`).
    pub fn parsed_digest(&self, what: &str) -> Result<Digest, ManifestError> {
        self.digest
            .parse()
            .map_err(|e| ManifestError(format!("{what}: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// Parses a manifest and settles its media type from the `Content-Type` it came with and the
/// `mediaType` it declares.
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Doc, String, Kind), ManifestError> {
    let invalid = ManifestError;
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if doc.schema_version != Some(2) {
        return Err(invalid("manifest schemaVersion must be 2".into()));
    }
    let media_type = match (content_type, &doc.media_type) {
        (Some(header), Some(body)) if header != body => {
            return Err(invalid(format!(
                "Content-Type {header} does not match the manifest's mediaType {body}"
            )))
        }
        (Some(header), _) => header.to_string(),
        (None, Some(body)) => body.clone(),
        // An OCI manifest may leave mediaType out; its shape says which it is.
        (None, None) if doc.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    let kind = kind_of(&media_type).ok_or_else(|| {
        invalid(format!(
            "unsupported manifest media type {media_type}: ecrl stores OCI image manifests and \
             indexes and Docker schema 2 manifests and manifest lists"
        ))
    })?;
    Ok((doc, media_type, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(media_type: Option<&str>) -> String {
        let d = format!("sha256:{}", "a".repeat(64));
        let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[]}}"#
        )
    }

    #[test]
    fn media_type_comes_from_the_header_or_the_body_or_the_shape() {
        let (_, mt, kind) = parse(None, image(None).as_bytes()).unwrap();
        assert_eq!((mt.as_str(), kind), (OCI_MANIFEST, Kind::Image));
        let (_, mt, _) = parse(Some(DOCKER_MANIFEST), image(None).as_bytes()).unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        let (_, mt, _) = parse(None, image(Some(DOCKER_MANIFEST)).as_bytes()).unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        let (_, mt, kind) = parse(None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!((mt.as_str(), kind), (OCI_INDEX, Kind::Index));
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        for (ct, body, why) in [
            (None, "{", "not valid JSON"),
            (None, r#"{"schemaVersion":1}"#, "schemaVersion must be 2"),
            (
                None,
                r#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
                "unsupported",
            ),
            (
                Some(OCI_INDEX),
                image(Some(OCI_MANIFEST)).as_str(),
                "does not match",
            ),
        ] {
            let e = parse(ct, body.as_bytes()).unwrap_err();
            assert!(e.0.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn nesting_beyond_the_json_limit_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = format!(r#"{{"schemaVersion":2,"annotations":{deep}}}"#);
        assert!(parse(None, body.as_bytes()).is_err());
    }
}
