//! The `oci-client` crate against the real `ecrld`: a two-platform image index, and artifacts
//! that refer to an image, found through the referrers API.

mod common;

use common::registry::{sha256_digest, spawn_registry, unique};
use common::Env;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest,
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;

const SBOM: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature.v1";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn client(resolver: Option<&'static str>) -> Client {
    let mut config = ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    };
    if let Some(arch) = resolver {
        config.platform_resolver = Some(Box::new(move |entries: &[ImageIndexEntry]| {
            entries
                .iter()
                .find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.architecture.to_string() == arch)
                })
                .map(|e| e.digest.clone())
        }));
    }
    Client::new(config)
}

/// An image for one platform: its layer, config and the digest its manifest got.
struct Pushed {
    arch: &'static str,
    layer: Vec<u8>,
    manifest: OciImageManifest,
    digest: String,
    size: usize,
}

async fn push_platform_image(
    client: &Client,
    registry: &str,
    repo: &str,
    arch: &'static str,
    id: &str,
) -> Pushed {
    let layer = format!("the {arch} layer of {id}\n")
        .repeat(64)
        .into_bytes();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [sha256_digest(&layer)] },
        "config": { "Cmd": ["/bin/true"] },
    });
    let reference = Reference::with_tag(registry.into(), repo.into(), arch.into());
    let layers = [ImageLayer::new(
        layer.clone(),
        IMAGE_LAYER_MEDIA_TYPE.to_string(),
        None,
    )];
    let config = Config::new(
        serde_json::to_vec(&config).unwrap(),
        IMAGE_CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let pushed = client
        .push(&reference, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .unwrap_or_else(|e| panic!("push {arch} image: {e}"));

    // What the registry serves under the tag hashes to the digest it reports and names in
    // the Location of the push.
    let (raw, digest) = client
        .pull_manifest_raw(
            &reference,
            &RegistryAuth::Anonymous,
            &[OCI_IMAGE_MEDIA_TYPE],
        )
        .await
        .unwrap();
    assert_eq!(sha256_digest(&raw), digest);
    assert!(
        pushed
            .manifest_url
            .ends_with(&format!("/manifests/{digest}")),
        "{} does not name {digest}",
        pushed.manifest_url
    );
    let manifest: OciImageManifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].digest, sha256_digest(&layer));
    Pushed {
        arch,
        layer,
        manifest,
        digest,
        size: raw.len(),
    }
}

fn index_entry(image: &Pushed) -> ImageIndexEntry {
    ImageIndexEntry {
        media_type: OCI_IMAGE_MEDIA_TYPE.to_string(),
        digest: image.digest.clone(),
        size: image.size as i64,
        platform: Some(
            serde_json::from_value(serde_json::json!({
                "architecture": image.arch, "os": "linux"
            }))
            .unwrap(),
        ),
        annotations: None,
        artifact_type: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_client_index_and_referrers() {
    let env = Env::new();
    let (_daemon, registry) = spawn_registry(&env);
    let repo = "team/multi";
    let id = unique("oci");
    let client = client(None);
    let auth = RegistryAuth::Anonymous;

    let amd64 = push_platform_image(&client, &registry, repo, "amd64", &id).await;
    let arm64 = push_platform_image(&client, &registry, repo, "arm64", &id).await;
    assert_ne!(amd64.digest, arm64.digest);

    // The index over both.
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string()),
        manifests: vec![index_entry(&amd64), index_entry(&arm64)],
        artifact_type: None,
        annotations: Some(BTreeMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            id.clone(),
        )])),
    };
    let index_ref = Reference::with_tag(registry.clone(), repo.into(), "1.0".into());
    let url = client
        .push_manifest_list(&index_ref, &auth, index.clone())
        .await
        .expect("push index");
    let (raw_index, index_digest) = client
        .pull_manifest_raw(&index_ref, &auth, &[OCI_IMAGE_INDEX_MEDIA_TYPE])
        .await
        .unwrap();
    assert_eq!(sha256_digest(&raw_index), index_digest);
    assert!(url.ends_with(&index_digest), "{url} vs {index_digest}");
    assert_eq!(
        client
            .fetch_manifest_digest(&index_ref, &auth)
            .await
            .unwrap(),
        index_digest
    );
    let pulled: OciImageIndex = serde_json::from_slice(&raw_index).unwrap();
    assert_eq!(
        serde_json::to_value(&pulled).unwrap(),
        serde_json::to_value(&index).unwrap()
    );
    match client.pull_manifest(&index_ref, &auth).await.unwrap() {
        (OciManifest::ImageIndex(i), digest) => {
            assert_eq!(digest, index_digest);
            assert_eq!(i.manifests.len(), 2);
        }
        (other, _) => panic!("the tag does not hold an index: {other:?}"),
    }

    // Each platform through the index (the client picks by platform), and by digest.
    for image in [&amd64, &arm64] {
        let picker = crate::client(Some(image.arch));
        let (manifest, digest, list) = picker
            .pull_image_manifest_and_list_digest(&index_ref, &auth)
            .await
            .unwrap();
        assert_eq!(digest, image.digest, "{} through the index", image.arch);
        assert_eq!(list.as_deref(), Some(index_digest.as_str()));
        assert_eq!(manifest.layers[0].digest, image.manifest.layers[0].digest);

        let by_digest = Reference::with_digest(registry.clone(), repo.into(), image.digest.clone());
        let (manifest, digest) = client.pull_image_manifest(&by_digest, &auth).await.unwrap();
        assert_eq!(digest, image.digest);
        let mut layer = Vec::new();
        client
            .pull_blob(&by_digest, &manifest.layers[0], &mut layer)
            .await
            .unwrap();
        assert_eq!(layer, image.layer, "{} layer", image.arch);
        let mut config = Vec::new();
        client
            .pull_blob(&by_digest, &manifest.config, &mut config)
            .await
            .unwrap();
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["architecture"], image.arch);
    }

    // An SBOM artifact about the amd64 image, pushed with oci-client.
    let empty = b"{}".to_vec();
    let sbom = format!("{{\"sbom\":\"{id}\"}}").into_bytes();
    let subject_ref = Reference::with_digest(registry.clone(), repo.into(), amd64.digest.clone());
    client
        .push_blob(&subject_ref, empty.clone(), &sha256_digest(&empty))
        .await
        .unwrap();
    client
        .push_blob(&subject_ref, sbom.clone(), &sha256_digest(&sbom))
        .await
        .unwrap();
    let subject = OciDescriptor {
        media_type: OCI_IMAGE_MEDIA_TYPE.to_string(),
        digest: amd64.digest.clone(),
        size: amd64.size as i64,
        ..Default::default()
    };
    let sbom_manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        artifact_type: Some(SBOM.to_string()),
        config: OciDescriptor {
            media_type: EMPTY.to_string(),
            digest: sha256_digest(&empty),
            size: 2,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: "application/json".to_string(),
            digest: sha256_digest(&sbom),
            size: sbom.len() as i64,
            ..Default::default()
        }],
        subject: Some(subject.clone()),
        annotations: Some(BTreeMap::from([("test.id".to_string(), id.clone())])),
    };
    let sbom_bytes = serde_json::to_vec(&sbom_manifest).unwrap();
    let sbom_digest = sha256_digest(&sbom_bytes);
    let sbom_ref = Reference::with_digest(registry.clone(), repo.into(), sbom_digest.clone());
    client
        .push_manifest_raw(
            &sbom_ref,
            sbom_bytes.clone(),
            OCI_IMAGE_MEDIA_TYPE.parse().unwrap(),
        )
        .await
        .expect("push the SBOM artifact");

    // A signature artifact about the same image, over plain HTTP to see `OCI-Subject`.
    let signature_manifest = OciImageManifest {
        artifact_type: Some(SIGNATURE.to_string()),
        layers: vec![],
        annotations: None,
        ..sbom_manifest.clone()
    };
    let signature_bytes = serde_json::to_vec(&signature_manifest).unwrap();
    let signature_digest = sha256_digest(&signature_bytes);
    let http = reqwest::Client::new();
    let put = http
        .put(format!(
            "http://{registry}/v2/{repo}/manifests/{signature_digest}"
        ))
        .header("Content-Type", OCI_IMAGE_MEDIA_TYPE)
        .body(signature_bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(put.headers()["oci-subject"], amd64.digest.as_str());
    assert_eq!(
        put.headers()["docker-content-digest"],
        signature_digest.as_str()
    );

    // The referrers of the amd64 image: both, then each by its artifact type.
    let all = client.pull_referrers(&subject_ref, None).await.unwrap();
    let mut found: Vec<(String, Option<String>)> = all
        .manifests
        .iter()
        .map(|m| (m.digest.clone(), m.artifact_type.clone()))
        .collect();
    found.sort();
    let mut expected = vec![
        (sbom_digest.clone(), Some(SBOM.to_string())),
        (signature_digest.clone(), Some(SIGNATURE.to_string())),
    ];
    expected.sort();
    assert_eq!(found, expected);
    let sbom_entry = all
        .manifests
        .iter()
        .find(|m| m.digest == sbom_digest)
        .unwrap();
    assert_eq!(sbom_entry.media_type, OCI_IMAGE_MEDIA_TYPE);
    assert_eq!(sbom_entry.size, sbom_bytes.len() as i64);
    assert_eq!(
        sbom_entry
            .annotations
            .as_ref()
            .and_then(|a| a.get("test.id")),
        Some(&id)
    );

    for (artifact_type, digest) in [(SBOM, &sbom_digest), (SIGNATURE, &signature_digest)] {
        let filtered = client
            .pull_referrers(&subject_ref, Some(artifact_type))
            .await
            .unwrap();
        let digests: Vec<&str> = filtered
            .manifests
            .iter()
            .map(|m| m.digest.as_str())
            .collect();
        assert_eq!(digests, [digest.as_str()], "filter {artifact_type}");
    }
    let none = client
        .pull_referrers(&subject_ref, Some("application/vnd.example.nothing"))
        .await
        .unwrap();
    assert!(none.manifests.is_empty(), "{none:?}");

    // The arm64 image has no referrers.
    let arm64_ref = Reference::with_digest(registry.clone(), repo.into(), arm64.digest.clone());
    let none = client.pull_referrers(&arm64_ref, None).await.unwrap();
    assert!(none.manifests.is_empty(), "{none:?}");

    // The registry answers the native endpoint itself (oci-client would fall back to the tag
    // schema on a 404), filters on its side and says so.
    let response = http
        .get(format!(
            "http://{registry}/v2/{repo}/referrers/{}",
            amd64.digest
        ))
        .query(&[("artifactType", SBOM)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        OCI_IMAGE_INDEX_MEDIA_TYPE
    );
    assert_eq!(response.headers()["oci-filters-applied"], "artifactType");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1, "{body}");

    // The artifact itself pulls back by digest, byte for byte.
    let (raw, digest) = client
        .pull_manifest_raw(&sbom_ref, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .unwrap();
    assert_eq!(digest, sbom_digest);
    assert_eq!(raw.as_ref(), sbom_bytes.as_slice());
}
