//! The real Docker Engine against the real `ecrld`: build, push, remove, pull, run.

mod common;

use common::registry::{
    build_busybox_image, localhost, pushed_digest, require_docker, run, run_ok, spawn_registry,
    unique, DockerImages,
};
use common::Env;

#[test]
fn docker_push_pull_run() {
    require_docker();
    let env = Env::new();
    let (_daemon, address) = spawn_registry(&env);
    let host = localhost(&address);
    let images = DockerImages::new();

    let id = unique("ecrl-docker");
    let local = format!("ecrl-test/busybox:{id}");
    let repo = format!("{host}/team/busybox");
    let remote = format!("{repo}:1");
    images.track(&remote);
    let image_id = build_busybox_image(&images, &local, &id);
    run_ok("docker", &["tag", &local, &remote]);

    let push = run_ok("docker", &["push", &remote]);
    let digest = pushed_digest(&push);
    assert!(digest.starts_with("sha256:"), "{push}");

    // The registry serves that manifest under the tag, with that digest.
    let http = reqwest::blocking::Client::new();
    let head = http
        .head(format!("http://{address}/v2/team/busybox/manifests/1"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    let tags: serde_json::Value = http
        .get(format!("http://{address}/v2/team/busybox/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1"]), "{tags}");

    // A push to another repository mounts the layers from the first instead of sending them.
    let copy = format!("{host}/team/busybox-copy:1");
    images.track(&copy);
    run_ok("docker", &["tag", &local, &copy]);
    let push_copy = run_ok("docker", &["push", &copy]);
    assert_eq!(pushed_digest(&push_copy), digest);
    assert!(
        push_copy.contains("Mounted from team/busybox"),
        "docker did not mount the layers from team/busybox:\n{push_copy}"
    );
    run_ok("docker", &["rmi", &copy]);

    // Remove every local name of the image, so the pull must fetch all of it.
    run_ok("docker", &["rmi", &remote, &local]);
    let gone = run("docker", &["image", "inspect", &image_id]);
    assert!(
        !gone.status.success(),
        "the image is still present locally after docker rmi"
    );

    let pull = run_ok("docker", &["pull", &remote]);
    assert!(
        pull.contains(&format!("Digest: {digest}")),
        "docker pull names another digest:\n{pull}"
    );
    assert!(
        pull.contains("Downloaded newer image"),
        "docker pull did not download the image:\n{pull}"
    );
    let repo_digest = run_ok(
        "docker",
        &[
            "inspect",
            "--format",
            "{{index .RepoDigests 0}}",
            remote.as_str(),
        ],
    );
    assert_eq!(repo_digest.trim(), format!("{repo}@{digest}"));
    let pulled_id = run_ok(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &remote],
    );
    assert_eq!(
        pulled_id.trim(),
        image_id,
        "the pulled image is not the built one"
    );

    // The pulled image runs, and it is ours: the id file and busybox's applets are there.
    let out = run_ok(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &remote,
            "sh",
            "-c",
            "cat /etc/ecrl-test-id && echo hello from $(basename $(readlink /bin/ls))",
        ],
    );
    assert_eq!(out, format!("{id}\nhello from busybox\n"));

    // A pull by digest gets the same image.
    let by_digest = format!("{repo}@{digest}");
    images.track(&by_digest);
    let pull = run_ok("docker", &["pull", &by_digest]);
    assert!(pull.contains(&digest), "{pull}");
}

#[test]
fn docker_pushes_obey_tag_mutability_exclusions() {
    require_docker();
    let env = Env::new();
    let (_daemon, address) = spawn_registry(&env);
    let host = localhost(&address);
    let images = DockerImages::new();
    env.ecrl_ok(&[
        "repo",
        "create",
        "team/ex",
        "--tag-mutability",
        "IMMUTABLE_WITH_EXCLUSION",
        "--exclude",
        "latest",
        "--exclude",
        "dev-*",
    ]);
    let described = env.ecrl_ok(&["repo", "describe", "team/ex"]);
    assert!(
        described.contains("IMMUTABLE_WITH_EXCLUSION (except latest, dev-*)"),
        "{described}"
    );
    let first = unique("ecrl-mutability-a");
    let second = unique("ecrl-mutability-b");
    let a = format!("ecrl-test/mutability:{first}");
    let b = format!("ecrl-test/mutability:{second}");
    build_busybox_image(&images, &a, &first);
    build_busybox_image(&images, &b, &second);
    let push = |local: &str, tag: &str| {
        let remote = format!("{host}/team/ex:{tag}");
        images.track(&remote);
        run_ok("docker", &["tag", local, &remote]);
        run("docker", &["push", &remote])
    };
    for tag in ["v1", "latest", "dev-1"] {
        let out = push(&a, tag);
        assert!(out.status.success(), "{tag}: {}", common::stderr(&out));
    }
    // The excluded tags move; the others stay, with ECR's message.
    for tag in ["latest", "dev-1"] {
        let out = push(&b, tag);
        assert!(out.status.success(), "{tag}: {}", common::stderr(&out));
    }
    let out = push(&b, "v1");
    assert!(!out.status.success());
    let e = common::stderr(&out);
    assert!(
        e.contains("the image tag 'v1' already exists in the 'team/ex' repository")
            && e.contains("the tag is immutable"),
        "{e}"
    );

    // The other way round: tags move, except releases.
    env.ecrl_ok(&[
        "repo",
        "put-mutability",
        "team/ex",
        "--tag-mutability",
        "MUTABLE_WITH_EXCLUSION",
        "--exclude",
        "release-*",
    ]);
    assert!(push(&b, "v1").status.success());
    assert!(push(&a, "release-1").status.success());
    assert!(!push(&b, "release-1").status.success());

    // Settings ECR refuses are refused, and change nothing.
    for args in [
        &["--tag-mutability", "IMMUTABLE", "--exclude", "latest"][..],
        &["--tag-mutability", "MUTABLE_WITH_EXCLUSION"][..],
        &[
            "--tag-mutability",
            "IMMUTABLE_WITH_EXCLUSION",
            "--exclude",
            "a b",
        ][..],
    ] {
        let mut all = vec!["repo", "put-mutability", "team/ex"];
        all.extend_from_slice(args);
        let out = env.ecrl(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    let described = env.ecrl_ok(&["repo", "describe", "team/ex", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(
        v["repository"]["imageTagMutability"],
        "MUTABLE_WITH_EXCLUSION"
    );
    assert_eq!(
        v["repository"]["imageTagMutabilityExclusionFilters"],
        serde_json::json!([{"filterType": "WILDCARD", "filter": "release-*"}])
    );
}
