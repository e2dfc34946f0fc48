//! skopeo against the real `ecrld`: copy from the Docker daemon to the registry, from the
//! registry to an OCI layout and back into another repository; inspect, list-tags, delete.

mod common;

use common::registry::{
    build_busybox_image, localhost, require_docker, require_skopeo, run, run_ok, sha256_digest,
    spawn_registry, unique, DockerImages,
};
use common::Env;

const NO_TLS: &str = "--tls-verify=false";

fn skopeo_ok(args: &[&str]) -> String {
    run_ok("skopeo", args)
}

fn inspect(reference: &str) -> serde_json::Value {
    serde_json::from_str(&skopeo_ok(&["inspect", NO_TLS, reference])).unwrap()
}

fn raw_manifest(reference: &str) -> Vec<u8> {
    let out = run("skopeo", &["inspect", "--raw", NO_TLS, reference]);
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn list_tags(reference: &str) -> Vec<String> {
    let value: serde_json::Value =
        serde_json::from_str(&skopeo_ok(&["list-tags", NO_TLS, reference])).unwrap();
    let mut tags: Vec<String> = value["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("list-tags has no Tags: {value}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

fn layers(value: &serde_json::Value) -> Vec<String> {
    value["Layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no Layers: {value}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn skopeo_copy_inspect_list_delete() {
    require_docker();
    require_skopeo();
    let env = Env::new();
    let (_daemon, address) = spawn_registry(&env);
    let host = localhost(&address);
    let images = DockerImages::new();
    let work = tempfile::Builder::new()
        .prefix("ecrl-skopeo-")
        .tempdir()
        .unwrap();

    let id = unique("ecrl-skopeo");
    let local = format!("ecrl-test/busybox:{id}");
    build_busybox_image(&images, &local, &id);

    // Docker daemon -> registry, under two tags.
    let first = format!("docker://{host}/team/busybox:1");
    let digest_file = work.path().join("digest");
    skopeo_ok(&[
        "copy",
        "--dest-tls-verify=false",
        "--digestfile",
        digest_file.to_str().unwrap(),
        &format!("docker-daemon:{local}"),
        &first,
    ]);
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    let pushed = pushed.trim();
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &first,
        &format!("docker://{host}/team/busybox:stable"),
    ]);

    let info = inspect(&first);
    assert_eq!(info["Digest"], pushed, "{info}");
    assert_eq!(info["Name"], format!("{host}/team/busybox"));
    assert_eq!(info["Os"], "linux");
    let raw = raw_manifest(&first);
    assert_eq!(
        sha256_digest(&raw),
        pushed,
        "the manifest bytes hash to its digest"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let image_layers = layers(&info);
    assert_eq!(image_layers.len(), 3, "{info}");
    assert_eq!(
        list_tags(&format!("docker://{host}/team/busybox")),
        ["1", "stable"]
    );

    // Registry -> OCI layout: skopeo converts to an OCI manifest; the layers are the same.
    let layout = work.path().join("layout");
    let oci = format!("oci:{}:v1", layout.display());
    skopeo_ok(&["copy", "--src-tls-verify=false", &first, &oci]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let oci_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let oci_info = inspect(&oci);
    assert_eq!(layers(&oci_info), image_layers);
    for layer in &image_layers {
        let hex = layer.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(&sha256_digest(&bytes), layer, "layer pulled intact");
    }

    // OCI layout -> another repository of the registry.
    let mirror = format!("docker://{host}/mirror/busybox:v1");
    skopeo_ok(&["copy", "--dest-tls-verify=false", &oci, &mirror]);
    let mirror_info = inspect(&mirror);
    assert_eq!(mirror_info["Digest"], oci_digest.as_str(), "{mirror_info}");
    assert_eq!(layers(&mirror_info), image_layers);
    let mirror_raw = raw_manifest(&mirror);
    assert_eq!(sha256_digest(&mirror_raw), oci_digest);
    let mirror_manifest: serde_json::Value = serde_json::from_slice(&mirror_raw).unwrap();
    assert_eq!(
        mirror_manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let catalog: serde_json::Value =
        reqwest::blocking::get(format!("http://{address}/v2/_catalog"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["mirror/busybox", "team/busybox"])
    );

    // Delete by tag reference: skopeo deletes the manifest (by digest), so every tag on it
    // goes, and it is gone by digest too.
    skopeo_ok(&["delete", NO_TLS, &first]);
    let by_digest = format!("docker://{host}/team/busybox@{pushed}");
    for reference in [&first, &by_digest] {
        let out = run("skopeo", &["inspect", NO_TLS, reference]);
        assert!(
            !out.status.success(),
            "{reference} is still there after skopeo delete"
        );
    }
    assert!(list_tags(&format!("docker://{host}/team/busybox")).is_empty());
    let http = reqwest::blocking::Client::new();
    let head = http
        .head(format!(
            "http://{address}/v2/team/busybox/manifests/{pushed}"
        ))
        .send()
        .unwrap();
    assert_eq!(head.status(), 404);

    // The other repository shares the layers and is untouched: it copies out whole.
    let again = work.path().join("again");
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        &mirror,
        &format!("oci:{}:v1", again.display()),
    ]);
    for layer in &image_layers {
        let hex = layer.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(again.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(&sha256_digest(&bytes), layer);
    }
    assert_eq!(inspect(&mirror)["Digest"], oci_digest.as_str());
}
