//! `ecrl repo` and `ecrl image` against the real daemon, with images pushed over HTTP.

mod common;

use common::{stderr, Env};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

struct Registry {
    base: String,
    http: reqwest::blocking::Client,
}

impl Registry {
    fn new(env: &Env) -> Self {
        Registry {
            base: format!("http://{}", env.info()["registryAddress"].as_str().unwrap()),
            http: reqwest::blocking::Client::new(),
        }
    }

    fn blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.base))
            .body(data.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text());
        d
    }

    /// Pushes a one-layer OCI image; returns (status, manifest digest).
    fn image(&self, repo: &str, tag: &str, layer: &[u8]) -> (u16, String) {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","layer":"{}"}}"#,
            digest(layer)
        );
        let config_digest = self.blob(repo, config.as_bytes());
        let layer_digest = self.blob(repo, layer);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer.len()}]
        })
        .to_string();
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap();
        (r.status().as_u16(), digest(manifest.as_bytes()))
    }

    fn get_manifest(&self, repo: &str, reference: &str) -> u16 {
        self.http
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

fn json_of(env: &Env, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&env.ecrl_ok(&all)).unwrap()
}

#[test]
fn repositories_are_created_listed_described_and_deleted() {
    let env = Env::new();
    env.start();
    let created = json_of(
        &env,
        &[
            "repo",
            "create",
            "team/web",
            "--tag",
            "env=dev",
            "--tag-mutability",
            "IMMUTABLE",
        ],
    );
    let repo = &created["repository"];
    assert_eq!(repo["repositoryName"], "team/web");
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE");
    assert!(repo["repositoryUri"]
        .as_str()
        .unwrap()
        .ends_with("/team/web"));
    assert!(repo["repositoryUri"]
        .as_str()
        .unwrap()
        .starts_with("localhost:"));
    let arn = repo["repositoryArn"].as_str().unwrap();
    let account = repo["registryId"].as_str().unwrap();
    assert_eq!(account.len(), 12);
    assert_eq!(
        arn,
        format!("arn:aws:ecr:local:{account}:repository/team/web")
    );
    assert!(repo["createdAt"].as_str().unwrap().contains('T'));
    assert_eq!(repo["tags"][0]["Key"], "env");

    env.ecrl_ok(&["repo", "create", "team/api"]);
    env.ecrl_ok(&["repo", "create", "other"]);
    let out = env.ecrl(&["repo", "create", "team/api"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = env.ecrl(&["repo", "create", "Team/Bad"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed name is a usage error"
    );
    assert!(stderr(&out).contains("invalid repository name"));

    let listed = json_of(&env, &["repo", "list", "team/"]);
    let names: Vec<&str> = listed["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repositoryName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team/api", "team/web"]);
    let table = env.ecrl_ok(&["repo", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("other"),
        "{table}"
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "URI", "IMAGES", "SIZE", "MUTABILITY", "CREATED"]
    );
    assert!(table.contains("IMMUTABLE"), "{table}");

    // A repository with images needs --force; an empty one does not.
    let registry = Registry::new(&env);
    assert_eq!(registry.image("team/api", "1", b"layer-one").0, 201);
    let described = json_of(&env, &["repo", "describe", "team/api"]);
    assert_eq!(described["repository"]["imageCount"], 1);
    assert!(described["repository"]["sizeInBytes"].as_u64().unwrap() > 9);
    let out = env.ecrl(&["repo", "delete", "team/api"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    env.ecrl_ok(&["repo", "delete", "team/api", "--force"]);
    assert_eq!(registry.get_manifest("team/api", "1"), 404);
    env.ecrl_ok(&["repo", "delete", "other"]);
    let out = env.ecrl(&["repo", "describe", "other"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"));
}

#[test]
fn the_repository_uri_ecrl_prints_names_the_repository() {
    let env = Env::new();
    env.start();
    let registry = Registry::new(&env);
    assert_eq!(registry.image("team/app", "1", b"layer").0, 201);
    let uri = json_of(&env, &["repo", "describe", "team/app"])["repository"]["repositoryUri"]
        .as_str()
        .unwrap()
        .to_string();
    let port = uri
        .split_once('/')
        .unwrap()
        .0
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    assert!(uri.starts_with("localhost:"), "{uri}");

    for name in [uri.clone(), format!("127.0.0.1:{port}/team/app")] {
        let repo = json_of(&env, &["repo", "describe", &name]);
        assert_eq!(repo["repository"]["repositoryName"], "team/app");
        let images = json_of(&env, &["image", "list", &name]);
        assert_eq!(images["imageIds"][0]["imageTag"], "1");
        let detail = json_of(&env, &["image", "describe", &format!("{name}:1")]);
        assert_eq!(detail["imageDetails"][0]["repositoryName"], "team/app");
    }
    env.ecrl_ok(&["image", "tag", &format!("{uri}:1"), "2"]);
    let archive = env.path().join("app.tar");
    env.ecrl_ok(&[
        "repo",
        "pull",
        &format!("{uri}:2"),
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let source = format!("oci-archive:{}", archive.display());
    env.ecrl_ok(&["repo", "push", &source, &format!("{uri}:3")]);
    env.ecrl_ok(&["image", "delete", &format!("{uri}:3")]);
    env.ecrl_ok(&["repo", "create", &format!("{uri}-two")]);
    env.ecrl_ok(&["repo", "delete", &format!("{uri}-two")]);

    // Another registry's name is refused, with what to type instead.
    for args in [
        vec!["repo", "describe", "otherhost:5000/team/app"],
        vec!["image", "describe", "otherhost:5000/team/app:1"],
        vec!["repo", "pull", "otherhost:5000/team/app:1", "-o", "x.tar"],
    ] {
        let out = env.ecrl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("ecrl holds only its own repositories")
                && err.contains("drop \"otherhost:5000/\"")
                && err.contains(&format!("localhost:{port}")),
            "{err}"
        );
    }
}

#[test]
fn malformed_names_are_usage_errors_and_missing_sources_do_not_exist() {
    let env = Env::new();
    env.start();
    let archive = env.path().join("app.tar");
    std::fs::write(&archive, b"").unwrap();
    let archive = archive.to_str().unwrap();
    for args in [
        vec!["repo", "create", "Team/Up"],
        vec!["repo", "describe", "Team/Up"],
        vec!["repo", "describe", "localhost:1/x"],
        vec!["repo", "delete", "team//x"],
        vec!["repo", "policy", "get", "Team/Up"],
        vec!["image", "list", "Team/Up"],
        vec!["image", "describe", "team/app:bad tag"],
        vec!["image", "delete", "team/app@sha256:nothex"],
        vec!["image", "tag", "team/myapp:1", "bad tag"],
        vec!["repo", "push", archive, "Team/Bad:1"],
        vec!["repo", "pull", "team/app:-x", "-o", "x.tar"],
    ] {
        let out = env.ecrl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    }
    for source in [
        "oci:./nope",
        "/nonexistent.tar",
        "oci-archive:/nonexistent.tar",
    ] {
        let out = env.ecrl(&["repo", "push", source, "team/bad:1"]);
        assert_eq!(out.status.code(), Some(1), "{source}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    }
    let out = env.ecrl(&["repo", "push", &format!("oci:{archive}"), "team/bad:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn immutable_tags_cannot_move() {
    let env = Env::new();
    env.start();
    env.ecrl_ok(&["repo", "create", "imm", "--tag-mutability", "immutable"]);
    let registry = Registry::new(&env);
    let (status, first) = registry.image("imm", "v1", b"one");
    assert_eq!(status, 201);
    // The same manifest again is fine; another one under the same tag is refused.
    assert_eq!(registry.image("imm", "v1", b"one").0, 201);
    let r = registry
        .http
        .put(format!("{}/v2/imm/manifests/v1", registry.base))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                              "digest": registry.blob("imm", b"{}"), "size": 2},
                   "layers": []})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("ImageTagAlreadyExistsException"));
    let detail = json_of(&env, &["image", "describe", "imm:v1"]);
    assert_eq!(detail["imageDetails"][0]["imageDigest"], first);

    let (_, second) = registry.image("imm", "v2", b"two");
    let out = env.ecrl(&["image", "tag", &format!("imm@{second}"), "v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("immutable"), "{}", stderr(&out));
    // A new tag is fine.
    env.ecrl_ok(&["image", "tag", "imm:v2", "latest"]);
}

#[test]
fn images_are_listed_described_tagged_and_deleted_as_on_ecr() {
    let env = Env::new();
    env.start();
    let registry = Registry::new(&env);
    let (_, a) = registry.image("app", "1", b"aaa");
    let (_, b) = registry.image("app", "2", b"bbb");
    env.ecrl_ok(&["image", "tag", "app:1", "stable"]);
    // Make b untagged by pushing another image over tag 2.
    let (_, c) = registry.image("app", "2", b"ccc");

    let any = json_of(&env, &["image", "list", "app"]);
    assert_eq!(any["imageIds"].as_array().unwrap().len(), 4, "{any}");
    let untagged = json_of(&env, &["image", "list", "app", "--tag-status", "untagged"]);
    assert_eq!(untagged["imageIds"], json!([{"imageDigest": b}]));
    let tagged = json_of(&env, &["image", "list", "app", "--tag-status", "TAGGED"]);
    assert_eq!(tagged["imageIds"].as_array().unwrap().len(), 3);

    assert_eq!(registry.get_manifest("app", "1"), 200);
    let detail = &json_of(&env, &["image", "describe", "app:1"])["imageDetails"][0];
    assert_eq!(detail["imageDigest"], a);
    assert_eq!(detail["imageTags"], json!(["1", "stable"]));
    assert_eq!(detail["repositoryName"], "app");
    assert_eq!(
        detail["imageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        detail["artifactMediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert!(detail["imageSizeInBytes"].as_u64().unwrap() > 3);
    assert!(detail["imagePushedAt"].as_str().unwrap().contains('T'));
    assert!(
        detail["lastRecordedPullTime"].is_string(),
        "a GET is a pull"
    );
    let never = &json_of(&env, &["image", "describe", &format!("app@{c}")])["imageDetails"][0];
    assert!(never.get("lastRecordedPullTime").is_none());
    let all = json_of(&env, &["image", "describe", "app"]);
    assert_eq!(all["imageDetails"].as_array().unwrap().len(), 3);

    // Removing one tag of two keeps the image; removing the last tag deletes it.
    let out = json_of(&env, &["image", "delete", "app:1"]);
    assert_eq!(out["imageIds"][0]["imageTag"], "1");
    assert_eq!(registry.get_manifest("app", &a), 200);
    assert_eq!(
        env.ecrl_ok(&["image", "delete", "app:stable"]),
        format!("deleted tag stable and image {a} (no tag was left on it)\n")
    );
    assert_eq!(registry.get_manifest("app", &a), 404);

    // A digest deletes the image and its tags.
    let (_, d) = registry.image("app", "3", b"ddd");
    env.ecrl_ok(&["image", "tag", "app:3", "three"]);
    assert_eq!(
        env.ecrl_ok(&["image", "delete", "app:3"]),
        format!("deleted tag 3 of {d}\n")
    );
    assert_eq!(
        env.ecrl_ok(&["image", "delete", &format!("app@{d}")]),
        format!("deleted image {d}\n")
    );
    env.ecrl_ok(&["image", "delete", &format!("app@{c}")]);
    assert_eq!(registry.get_manifest("app", "2"), 404);

    // Failures are reported per image, with ECR's codes, and exit 1.
    let out = env.ecrl(&[
        "image",
        "delete",
        "app:nope",
        &format!("app@{b}"),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["failures"][0]["failureCode"], "ImageNotFound");
    assert_eq!(body["imageIds"][0]["imageDigest"], b);
    assert_eq!(registry.get_manifest("app", &b), 404);

    let out = env.ecrl(&["image", "delete", "app"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bare repository is a usage error"
    );
    let out = env.ecrl(&["image", "delete", "app:1", "other:2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_image_in_an_index_cannot_be_deleted_alone() {
    let env = Env::new();
    env.start();
    let registry = Registry::new(&env);
    let (_, child) = registry.image("multi", "amd64", b"x");
    let size = registry
        .http
        .get(format!("{}/v2/multi/manifests/{child}", registry.base))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .len();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": child, "size": size,
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    })
    .to_string();
    let r = registry
        .http
        .put(format!("{}/v2/multi/manifests/all", registry.base))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = env.ecrl(&[
        "image",
        "delete",
        &format!("multi@{child}"),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        body["failures"][0]["failureCode"],
        "ImageReferencedByManifestList"
    );
    assert_eq!(registry.get_manifest("multi", &child), 200);
}

#[test]
fn repositories_are_tagged_and_untagged_and_bad_tags_change_nothing() {
    let env = Env::new();
    env.start();
    env.ecrl_ok(&["repo", "create", "team/tagged", "--tag", "env=dev"]);
    let tagged = json_of(
        &env,
        &["repo", "tag", "team/tagged", "env=prod", "owner=payments"],
    );
    assert_eq!(
        tagged["repository"]["tags"],
        json!([{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "payments"}])
    );
    let untagged = json_of(&env, &["repo", "untag", "team/tagged", "env", "absent"]);
    assert_eq!(
        untagged["repository"]["tags"],
        json!([{"Key": "owner", "Value": "payments"}])
    );
    // Refused, and the tags stay as they were: no '=', a reserved key, more than 50.
    let no_value = env.ecrl(&["repo", "tag", "team/tagged", "novalue"]);
    assert_eq!(no_value.status.code(), Some(2), "{}", stderr(&no_value));
    let reserved = env.ecrl(&["repo", "tag", "team/tagged", "aws:x=1"]);
    assert!(!reserved.status.success());
    assert!(
        stderr(&reserved).contains("reserved"),
        "{}",
        stderr(&reserved)
    );
    let many: Vec<String> = (0..50).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["repo", "tag", "team/tagged"];
    args.extend(many.iter().map(String::as_str));
    let too_many = env.ecrl(&args);
    assert!(
        stderr(&too_many).contains("at most 50"),
        "{}",
        stderr(&too_many)
    );
    let shown = json_of(&env, &["repo", "describe", "team/tagged"]);
    assert_eq!(
        shown["repository"]["tags"],
        json!([{"Key": "owner", "Value": "payments"}])
    );
    let missing = env.ecrl(&["repo", "tag", "team/none", "a=b"]);
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
}
