//! `ecrl repo push` and `ecrl repo pull` with real archives, the real Docker engine and
//! skopeo: images go in from docker-archives, OCI layouts and the engine, and come out as
//! archives docker and skopeo read, with the same digests and layers.

mod common;

use common::registry::{
    build_busybox_image, localhost, require_docker, require_skopeo, run_ok, unique, DockerImages,
};
use common::{stderr, Env};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::path::Path;

fn push(env: &Env, source: &str, target: &str) -> Value {
    let out = env.ecrl_ok(&["repo", "push", source, target, "--output", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("push printed {out:?}: {e}"))
}

fn registry(env: &Env) -> String {
    localhost(env.info()["registryAddress"].as_str().unwrap())
}

/// Every blob file under the data dir: after a failed push, none may be left that the push
/// brought.
fn blob_files(env: &Env) -> Vec<std::path::PathBuf> {
    let root = env.data_dir().join("blobs/sha256");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(file.path());
        }
    }
    out.sort();
    out
}

fn diff_ids(image: &str) -> String {
    run_ok(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            image,
        ],
    )
}

#[test]
fn docker_save_archives_push_pull_and_run() {
    require_docker();
    let env = Env::new();
    env.start();
    let host = registry(&env);
    let images = DockerImages::new();
    let id = unique("push");
    let local = format!("ecrl-test/{id}:src");
    build_busybox_image(&images, &local, &id);
    let archive = env.path().join("image.tar");
    run_ok("docker", &["save", "-o", archive.to_str().unwrap(), &local]);

    let result = push(&env, archive.to_str().unwrap(), "team/app:1");
    assert_eq!(result["repositoryName"], "team/app");
    assert_eq!(result["imageTag"], "1");
    assert!(result["blobsPushed"].as_u64().unwrap() >= 2, "{result}");
    let digest = result["imageDigest"].as_str().unwrap().to_string();

    // docker pulls and runs what ecrl stored, with the layers docker had.
    let remote = format!("{host}/team/app:1");
    images.track(&remote);
    run_ok("docker", &["pull", &remote]);
    assert_eq!(diff_ids(&remote), diff_ids(&local));
    let out = run_ok(
        "docker",
        &["run", "--rm", &remote, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(out.trim(), id);
    let repo_digest = run_ok(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{index .RepoDigests 0}}",
            &remote,
        ],
    );
    assert_eq!(repo_digest.trim(), format!("{host}/team/app@{digest}"));
    run_ok("docker", &["rmi", &remote]);

    // The same layers into another repository cost nothing: every blob exists.
    let again = push(&env, archive.to_str().unwrap(), "other/app:1");
    assert_eq!(again["blobsPushed"], 0, "{again}");
    assert_eq!(again["imageDigest"].as_str().unwrap(), digest);

    // Without a tag the archive's own tag is used.
    let own = push(&env, archive.to_str().unwrap(), "team/own");
    assert_eq!(own["imageTag"], "src");

    // Out as a docker-archive that docker load takes...
    let pulled = env.path().join("pulled.tar");
    env.ecrl_ok(&["repo", "pull", "team/app:1", "-o", pulled.to_str().unwrap()]);
    let loaded = run_ok("docker", &["load", "-i", pulled.to_str().unwrap()]);
    assert!(loaded.contains(&remote), "{loaded}");
    assert_eq!(diff_ids(&remote), diff_ids(&local));
    let out = run_ok(
        "docker",
        &["run", "--rm", &remote, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(out.trim(), id);
    run_ok("docker", &["rmi", &remote]);

    // ...and straight into the engine.
    let result: Value = serde_json::from_str(&env.ecrl_ok(&[
        "repo",
        "pull",
        "team/app:1",
        "--to",
        "docker",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(result["dockerReference"], remote);
    assert_eq!(result["imageDigest"].as_str().unwrap(), digest);
    // Nothing was pushed: a pull says what it loaded, not what a push would.
    assert!(result.get("blobsPushed").is_none(), "{result}");
    let out = run_ok(
        "docker",
        &["run", "--rm", &remote, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(out.trim(), id);
    let table = env.ecrl_ok(&["repo", "pull", "team/app:1", "--to", "docker"]);
    assert!(
        table.contains(&format!("loaded      into the Docker engine as {remote}\n")),
        "{table}"
    );
    assert!(table.contains(&digest), "{table}");
    assert!(
        !table.contains("pushed") && !table.contains("blobs"),
        "{table}"
    );
}

#[test]
fn push_reads_stdin_gzip_and_the_docker_engine() {
    require_docker();
    let env = Env::new();
    env.start();
    let images = DockerImages::new();
    let id = unique("stdin");
    let local = format!("ecrl-test/{id}:src");
    build_busybox_image(&images, &local, &id);
    let archive = env.path().join("image.tar");
    run_ok("docker", &["save", "-o", archive.to_str().unwrap(), &local]);

    // docker save | gzip | ecrl repo push - REPO:TAG
    let gz = env.path().join("image.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", archive.display(), gz.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let out = env
        .ecrl_command(&["repo", "push", "-", "piped/app:1", "--output", "json"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_stdin: Value = serde_json::from_slice(&out.stdout).unwrap();

    // docker://NAME exports from the engine; the image is the same.
    let mut command = env.ecrl_command(&[
        "repo",
        "push",
        &format!("docker://{local}"),
        "engine/app:1",
        "--output",
        "json",
    ]);
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_engine: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_engine["imageDigest"], from_stdin["imageDigest"]);

    // Uncompressed layers when asked: another digest, same content.
    let plain = env.ecrl_ok(&[
        "repo",
        "push",
        archive.to_str().unwrap(),
        "plain/app:1",
        "--compression",
        "none",
        "--output",
        "json",
    ]);
    let plain: Value = serde_json::from_str(&plain).unwrap();
    assert_ne!(plain["imageDigest"], from_stdin["imageDigest"]);
    let detail = env.ecrl_ok(&["image", "describe", "plain/app:1", "--output", "json"]);
    assert!(detail.contains("application/vnd.docker.distribution.manifest.v2+json"));
}

#[test]
fn a_docker_engine_name_without_a_tag_means_latest() {
    require_docker();
    let env = Env::new();
    env.start();
    let images = DockerImages::new();
    let name = format!("ecrl-test/{}", unique("bare"));
    let latest_id = unique("latest");
    build_busybox_image(&images, &format!("{name}:latest"), &latest_id);
    build_busybox_image(&images, &format!("{name}:v2"), &unique("v2"));

    let out = env.ecrl(&[
        "repo",
        "push",
        &format!("docker://{name}"),
        "team/bare:x",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["imageTag"], "x");
    let out = env.ecrl(&[
        "repo",
        "push",
        &format!("docker://{name}:nope"),
        "team/bare:y",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: the Docker engine has no image {name}:nope ('docker images' lists those it has)"
        )
    );

    // The image pushed is NAME:latest's, not v2's.
    let remote = format!("{}/team/bare:x", registry(&env));
    images.track(&remote);
    run_ok("docker", &["pull", &remote]);
    let out = run_ok(
        "docker",
        &["run", "--rm", &remote, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(out.trim(), latest_id);
}

#[test]
fn a_pull_into_a_missing_directory_names_the_users_path() {
    let env = Env::new();
    env.start();
    let (archive, _, _) = multi_platform_layout();
    let path = env.path().join("multi.tar");
    std::fs::write(&path, &archive).unwrap();
    push(
        &env,
        &format!("oci-archive:{}", path.display()),
        "multi/app",
    );
    let target = env.path().join("nonexist/dir/a.tar");
    let out = env.ecrl(&[
        "repo",
        "pull",
        "multi/app:multi",
        "--format",
        "oci-archive",
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: cannot write {}: the directory {} does not exist",
            target.display(),
            target.parent().unwrap().display()
        )
    );
}

#[test]
fn oci_layouts_round_trip_with_skopeo() {
    require_docker();
    require_skopeo();
    let env = Env::new();
    env.start();
    let host = registry(&env);
    let images = DockerImages::new();
    let id = unique("oci");
    let local = format!("ecrl-test/{id}:src");
    build_busybox_image(&images, &local, &id);
    let layout = env.path().join("layout");
    run_ok(
        "skopeo",
        &[
            "copy",
            &format!("docker-daemon:{local}"),
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    let want = skopeo_digest(&format!("oci:{}:v1", layout.display()));

    let result = push(&env, &format!("oci:{}", layout.display()), "oci/app:v1");
    assert_eq!(result["imageDigest"], want);
    let remote = skopeo_digest(&format!("docker://{host}/oci/app:v1"));
    assert_eq!(remote, want);

    let out_dir = env.path().join("pulled-layout");
    env.ecrl_ok(&[
        "repo",
        "pull",
        "oci/app:v1",
        "--format",
        "oci",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        skopeo_digest(&format!("oci:{}:v1", out_dir.display())),
        want
    );

    // An OCI archive (a tar of the layout) goes in too, and comes out the same.
    let archive = env.path().join("layout.tar");
    env.ecrl_ok(&[
        "repo",
        "pull",
        "oci/app:v1",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let again = push(
        &env,
        &format!("oci-archive:{}", archive.display()),
        "oci/copy:v1",
    );
    assert_eq!(again["imageDigest"], want);
    assert_eq!(again["blobsPushed"], 0);
}

fn skopeo_digest(reference: &str) -> String {
    let out = run_ok(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            reference,
        ],
    );
    out.trim().to_string()
}

/// A tar of an OCI layout built in memory: two platform images under one index.
fn multi_platform_layout() -> (Vec<u8>, String, Vec<String>) {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut blob = |data: Vec<u8>| {
        let hex = format!("{:x}", Sha256::digest(&data));
        let len = data.len();
        files.push((format!("blobs/sha256/{hex}"), data));
        (format!("sha256:{hex}"), len)
    };
    let mut platform_digests = Vec::new();
    let mut descriptors = Vec::new();
    for arch in ["amd64", "arm64"] {
        let mut layer = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut layer);
            let content = format!("built for {arch}\n");
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "etc/arch", content.as_bytes())
                .unwrap();
            builder.finish().unwrap();
        }
        let (layer_digest, layer_size) = blob(layer.clone());
        let config = json!({"architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}})
        .to_string()
        .into_bytes();
        let (config_digest, config_size) = blob(config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}]
        })
        .to_string()
        .into_bytes();
        let (digest, size) = blob(manifest);
        platform_digests.push(digest.clone());
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"}
        }));
    }
    let index = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descriptors})
    .to_string()
    .into_bytes();
    let (index_digest, index_size) = blob(index);
    let top = json!({"schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index_size,
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    files.push(("index.json".into(), top.to_string().into_bytes()));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    (tar_of(&files), index_digest, platform_digests)
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut out);
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, &data[..]).unwrap();
        }
        builder.finish().unwrap();
    }
    out
}

#[test]
fn a_multi_platform_index_round_trips_with_every_platform() {
    let env = Env::new();
    env.start();
    let (archive, index_digest, platforms) = multi_platform_layout();
    let path = env.path().join("multi.tar");
    std::fs::write(&path, &archive).unwrap();
    let result = push(
        &env,
        &format!("oci-archive:{}", path.display()),
        "multi/app",
    );
    assert_eq!(result["imageDigest"], index_digest);
    assert_eq!(result["imageTag"], "multi");
    for digest in &platforms {
        let detail = env.ecrl_ok(&["image", "describe", &format!("multi/app@{digest}")]);
        assert!(detail.contains(digest.as_str()));
    }

    // Out as an OCI archive: the same index and both platforms, byte for byte.
    let out = env.path().join("out.tar");
    env.ecrl_ok(&[
        "repo",
        "pull",
        "multi/app:multi",
        "--format",
        "oci-archive",
        "-o",
        out.to_str().unwrap(),
    ]);
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            assert_eq!(format!("{:x}", Sha256::digest(&data)), hex, "{name}");
        }
        names.push(name);
    }
    for digest in platforms.iter().chain([&index_digest]) {
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert!(names.contains(&format!("blobs/sha256/{hex}")), "{names:?}");
    }

    // A docker-archive holds one image: the platform asked for.
    let arm = env.path().join("arm.tar");
    env.ecrl_ok(&[
        "repo",
        "pull",
        "multi/app:multi",
        "--platform",
        "linux/arm64",
        "-o",
        arm.to_str().unwrap(),
    ]);
    let mut archive = tar::Archive::new(std::fs::File::open(&arm).unwrap());
    let mut config = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") && name != "manifest.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            config = Some(text);
        }
    }
    assert!(config.unwrap().contains("arm64"));
    let out = env.ecrl(&[
        "repo",
        "pull",
        "multi/app:multi",
        "--platform",
        "linux/s390x",
        "-o",
        env.path().join("none.tar").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no matching manifest for linux/s390x")
            && err.contains("it has linux/amd64, linux/arm64"),
        "{err}"
    );

    // A single-platform image is not another platform's either: refused, nothing written.
    let amd64 = format!("multi/app@{}", platforms[0]);
    let none = env.path().join("arm-from-amd64.tar");
    let out = env.ecrl(&[
        "repo",
        "pull",
        &amd64,
        "--platform",
        "linux/arm64",
        "-o",
        none.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no matching manifest for linux/arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    assert!(!none.exists());
    env.ecrl_ok(&[
        "repo",
        "pull",
        &amd64,
        "--platform",
        "linux/amd64",
        "-o",
        none.to_str().unwrap(),
    ]);
}

/// A docker-archive built by hand: one layer, its config and manifest.json, with knobs to
/// break it.
fn docker_archive(
    layer: &[u8],
    diff_id: Option<&str>,
    list_layer: bool,
    keep_layer: bool,
) -> Vec<u8> {
    let real = format!("sha256:{:x}", Sha256::digest(layer));
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.unwrap_or(&real)]}})
    .to_string()
    .into_bytes();
    let config_name = format!("{:x}.json", Sha256::digest(&config));
    let layers: Vec<&str> = if list_layer {
        vec!["l1/layer.tar"]
    } else {
        vec![]
    };
    let manifest = json!([{"Config": config_name, "RepoTags": ["hand:made"], "Layers": layers}]);
    let mut files = vec![(config_name, config)];
    if keep_layer {
        files.push(("l1/layer.tar".into(), layer.to_vec()));
    }
    files.push(("manifest.json".into(), manifest.to_string().into_bytes()));
    tar_of(&files)
}

fn layer_tar() -> Vec<u8> {
    tar_of(&[(
        "hello.txt".into(),
        b"hello from a hand-made layer\n".to_vec(),
    )])
}

fn push_fails(env: &Env, bytes: &[u8], target: &str) -> String {
    let path = env.path().join(format!("bad-{}.tar", unique("x")));
    std::fs::write(&path, bytes).unwrap();
    let out = env.ecrl(&["repo", "push", path.to_str().unwrap(), target]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        common::stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") || err.contains("\nerror: "),
        "{err}"
    );
    // Nothing was tagged, and no blob the push brought stays behind.
    let repo = target.split(':').next().unwrap();
    let listed = env.ecrl(&["image", "list", repo, "--output", "json"]);
    if listed.status.success() {
        let ids: Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(ids["imageIds"], json!([]), "{target} got an image");
    }
    assert_eq!(blob_files(env), Vec::<std::path::PathBuf>::new());
    err
}

#[test]
fn bad_archives_are_refused_and_leave_nothing_behind() {
    let env = Env::new();
    env.start();
    let good = docker_archive(&layer_tar(), None, true, true);

    // A well-formed one goes in (proving the hand-made archive itself is right)...
    let ok_env = Env::new();
    ok_env.start();
    let path = ok_env.path().join("good.tar");
    std::fs::write(&path, &good).unwrap();
    let result = push(&ok_env, path.to_str().unwrap(), "hand/made");
    assert_eq!(result["imageTag"], "made");

    // ...and every broken variant is refused with a message that says what is wrong.
    let err = push_fails(&env, &good[..good.len() / 2], "hand/made:1");
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
    let err = push_fails(
        &env,
        &docker_archive(&layer_tar(), None, true, false),
        "hand/made:1",
    );
    assert!(
        err.contains("l1/layer.tar") && err.contains("not in the archive"),
        "{err}"
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = push_fails(
        &env,
        &docker_archive(&layer_tar(), Some(&wrong), true, true),
        "hand/made:1",
    );
    assert!(err.contains("does not match"), "{err}");
    let err = push_fails(
        &env,
        b"this is not an archive at all, just some text",
        "hand/made:1",
    );
    assert!(
        err.contains("unknown format: ")
            && err.contains(".tar is not a docker save / OCI archive (tar or tar.gz)")
            && !err.contains("truncated"),
        "{err}"
    );
    let junk = env.path().join("junk.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = env.ecrl(&["repo", "push", junk.to_str().unwrap(), "hand/made:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "unknown format: {} is not a docker save / OCI archive (tar or tar.gz)",
            junk.display()
        )),
        "{}",
        stderr(&out)
    );
    let out = common::output_with_stdin(
        env.ecrl_command(&["repo", "push", "-", "hand/made:1"]),
        "hello\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown format: stdin is not a docker save"),
        "{}",
        stderr(&out)
    );
    let err = push_fails(
        &env,
        &tar_of(&[("README".into(), b"hi".to_vec())]),
        "hand/made:1",
    );
    assert!(err.contains("unknown archive format"), "{err}");
    // A bad target name is a usage error, found before anything is sent.
    let out = env.ecrl(&["repo", "push", path.to_str().unwrap(), "Bad/Name:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(blob_files(&env), Vec::<std::path::PathBuf>::new());
}

/// A push refused for its tag (an immutable repository's) leaves the repository as it was:
/// one image, its size, and none of the refused push's blobs kept.
#[test]
fn a_push_refused_for_an_immutable_tag_leaves_the_repository_as_it_was() {
    let env = Env::new();
    env.start();
    env.ecrl_ok(&[
        "repo",
        "create",
        "locked/app",
        "--tag-mutability",
        "IMMUTABLE",
    ]);
    let first = env.path().join("first.tar");
    std::fs::write(&first, docker_archive(&layer_tar(), None, true, true)).unwrap();
    push(&env, first.to_str().unwrap(), "locked/app:1");
    let size = |env: &Env| -> u64 {
        let out = env.ecrl_ok(&["repo", "describe", "locked/app", "--output", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["repository"]["sizeInBytes"]
            .as_u64()
            .unwrap()
    };
    let (size_before, files_before) = (size(&env), blob_files(&env));

    let other = tar_of(&[("other.txt".into(), b"another layer\n".to_vec())]);
    let second = env.path().join("second.tar");
    std::fs::write(&second, docker_archive(&other, None, true, true)).unwrap();
    let out = env.ecrl(&["repo", "push", second.to_str().unwrap(), "locked/app:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("immutable"), "{err}");
    // It had said "pushed" of the blobs it sent: it says they were not kept.
    assert!(err.contains("no blob this push sent was kept"), "{err}");

    assert_eq!(size(&env), size_before);
    assert_eq!(blob_files(&env), files_before);
    let images: Value =
        serde_json::from_str(&env.ecrl_ok(&["image", "list", "locked/app", "--output", "json"]))
            .unwrap();
    assert_eq!(images["imageIds"].as_array().unwrap().len(), 1, "{images}");
}

#[test]
fn a_docker_engine_that_is_not_running_is_a_clear_error() {
    let env = Env::new();
    let socket = env.path().join("no-docker.sock");
    let mut command = env.ecrld_command(&[]);
    command.env("DOCKER_HOST", format!("unix://{}", socket.display()));
    let _daemon = ChildGuard(command.spawn().unwrap());
    wait_for(&env.socket());
    let out = env.ecrl(&["repo", "push", "docker://busybox:latest", "x/y:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Docker engine") && err.contains("dockerd"),
        "{err}"
    );
    let out = env.ecrl(&["repo", "pull", "x/y:1", "--to", "docker"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn push_to_a_missing_repository_without_create_on_push_is_refused() {
    let env = Env::new();
    let config = env.write_config("registry:\n  create_on_push: false\n");
    let _daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
    let path = env.path().join("good.tar");
    std::fs::write(&path, docker_archive(&layer_tar(), None, true, true)).unwrap();
    let out = env.ecrl(&["repo", "push", path.to_str().unwrap(), "nope/app:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ecrl repo create nope/app"),
        "{}",
        stderr(&out)
    );
    assert_eq!(blob_files(&env), Vec::<std::path::PathBuf>::new());
    env.ecrl_ok(&["repo", "create", "nope/app"]);
    env.ecrl_ok(&["repo", "push", path.to_str().unwrap(), "nope/app:1"]);
}

struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(std::time::Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_pipe_given_as_a_path_is_streamed_not_opened_by_the_daemon() {
    // `ecrl repo push <(docker save app) ...` hands ecrl a /dev/fd path to a pipe: the daemon
    // cannot open that path itself, so the CLI must send the bytes.
    let env = Env::new();
    env.start();
    let fifo = env.path().join("image.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let archive = docker_archive(&layer_tar(), None, true, true);
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || std::fs::write(writer_path, archive));
    let result = push(&env, fifo.to_str().unwrap(), "piped/fifo:1");
    writer.join().unwrap().unwrap();
    assert_eq!(result["repositoryName"], "piped/fifo");
    assert_eq!(result["blobsPushed"], 1);
}

#[test]
fn interrupting_a_push_tags_nothing_and_leaves_no_blob() {
    let env = Env::new();
    env.start();
    let fifo = env.path().join("slow.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Most of the archive arrives, then the source stalls: the push is under way.
    let big_layer: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let archive = docker_archive(&tar_of(&[("big.bin".into(), big_layer)]), None, true, true);
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .unwrap();
        let _ = pipe.write_all(&archive[..archive.len() - 2048]);
        let _ = release_rx.recv_timeout(std::time::Duration::from_secs(30));
    });
    let child = env
        .ecrl_command(&["repo", "push", fifo.to_str().unwrap(), "cut/app:1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the daemon is in the middle of the layer (its upload has a file), then Ctrl-C.
    let uploads = env.data_dir().join("uploads");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the push never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let _ = release_tx.send(());
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was tagged"),
        "{}",
        stderr(&out)
    );
    // The daemon notices the dropped connection and cleans up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let leftover = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
        if leftover == 0 && blob_files(&env).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled push left files behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let listed = env.ecrl(&["image", "list", "cut/app", "--output", "json"]);
    if listed.status.success() {
        let ids: Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(ids["imageIds"], json!([]));
    }
}
