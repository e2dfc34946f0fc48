//! The AWS API door, driven by the real AWS CLI v1 and boto3 (from PyPI; tests/run installs
//! them into a venv and names it in `ECRL_TEST_AWS_VENV`): requests signed with SigV4 by
//! ecrl access keys, ECR's error types, pagination, and every response checked against
//! botocore's own service model.

mod common;

use common::aws::{venv, Aws, BOTO3_PRELUDE};
use common::registry::{
    build_busybox_image, pushed_digest, require_docker, run_ok, sha256_digest, DockerImages,
};
use serde_json::Value;
use std::process::Command;

#[test]
fn the_aws_cli_manages_repositories_and_logs_docker_in() {
    let t = Aws::start();
    let created = t.aws_ok(
        &t.ci,
        &[
            "ecr",
            "create-repository",
            "--repository-name",
            "team/app",
            "--image-tag-mutability",
            "IMMUTABLE",
            "--tags",
            "Key=team,Value=payments",
        ],
    );
    let repo = &created["repository"];
    assert_eq!(repo["repositoryName"], "team/app", "{created}");
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE", "{created}");
    assert!(repo["createdAt"].is_number(), "{created}");
    assert!(
        repo["repositoryUri"]
            .as_str()
            .unwrap()
            .ends_with("/team/app"),
        "{created}"
    );
    // The same repository through ecrl's own CLI: one layer behind both doors.
    let shown: Value = serde_json::from_str(
        &t.env
            .ecrl_ok(&["repo", "describe", "team/app", "--output", "json"]),
    )
    .unwrap();
    assert_eq!(
        shown["repository"]["imageTagMutability"], "IMMUTABLE",
        "{shown}"
    );
    assert_eq!(shown["repository"]["tags"][0]["Key"], "team", "{shown}");

    let all = t.aws_ok(&t.reader, &["ecr", "describe-repositories"]);
    assert_eq!(
        all["repositories"][0]["repositoryName"], "team/app",
        "{all}"
    );
    // Written from the index for speed, it says what the control API says.
    for field in [
        "repositoryArn",
        "repositoryUri",
        "registryId",
        "imageTagMutability",
    ] {
        assert_eq!(
            all["repositories"][0][field], shown["repository"][field],
            "{field}: {all} vs {shown}"
        );
    }
    assert_eq!(
        all["repositories"][0]["createdAt"], created["repository"]["createdAt"],
        "{all}"
    );
    t.aws_fails(
        &t.ci,
        &["ecr", "create-repository", "--repository-name", "team/app"],
        "RepositoryAlreadyExistsException",
    );
    t.aws_fails(
        &t.ci,
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            "team/missing",
        ],
        "RepositoryNotFoundException",
    );
    // Denied by the user's policy (an explicit Deny), and by having no Allow.
    let denied = t.aws_fails(
        &t.ci,
        &["ecr", "delete-repository", "--repository-name", "team/app"],
        "AccessDeniedException",
    );
    assert!(denied.contains("ecr:DeleteRepository"), "{denied}");
    t.aws_fails(
        &t.reader,
        &[
            "ecr",
            "create-repository",
            "--repository-name",
            "team/other",
        ],
        "AccessDeniedException",
    );
    // Images pushed over the registry API with the same key (Basic auth), then listed,
    // described and deleted through the AWS API.
    let digests: Vec<String> = ["1", "2"]
        .iter()
        .map(|tag| push_image(&t, "team/app", tag))
        .collect();
    let listed = t.aws_ok(
        &t.ci,
        &["ecr", "list-images", "--repository-name", "team/app"],
    );
    let mut ids: Vec<String> = listed["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}@{}",
                i["imageTag"].as_str().unwrap(),
                i["imageDigest"].as_str().unwrap()
            )
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![format!("1@{}", digests[0]), format!("2@{}", digests[1])],
        "{listed}"
    );
    let described = t.aws_ok(
        &t.ci,
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "team/app",
            "--image-ids",
            "imageTag=2",
        ],
    );
    let detail = &described["imageDetails"][0];
    assert_eq!(detail["imageDigest"], digests[1].as_str(), "{described}");
    assert_eq!(detail["imageTags"][0], "2", "{described}");
    assert!(detail["imagePushedAt"].is_number(), "{described}");
    t.aws_fails(
        &t.ci,
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "team/app",
            "--image-ids",
            "imageTag=9",
        ],
        "ImageNotFoundException",
    );
    let deleted = t.aws_ok(
        &t.ci,
        &[
            "ecr",
            "batch-delete-image",
            "--repository-name",
            "team/app",
            "--image-ids",
            "imageTag=1",
            "imageTag=9",
        ],
    );
    assert_eq!(
        deleted["imageIds"][0]["imageDigest"],
        digests[0].as_str(),
        "{deleted}"
    );
    assert_eq!(
        deleted["failures"][0]["failureCode"], "ImageNotFound",
        "{deleted}"
    );
    let listed = t.aws_ok(
        &t.ci,
        &["ecr", "list-images", "--repository-name", "team/app"],
    );
    assert_eq!(listed["imageIds"].as_array().unwrap().len(), 1, "{listed}");
    // What ecrl has no feature for says so, naming the operation.
    let unsupported = t.aws_fails(
        &t.ci,
        &[
            "ecr",
            "start-image-scan",
            "--repository-name",
            "team/app",
            "--image-id",
            "imageTag=2",
        ],
        "UnsupportedCommandException",
    );
    assert!(unsupported.contains("StartImageScan"), "{unsupported}");
    // A service error exits as the AWS CLI v1 exits for one (255; v2 says 254).
    let missing = t.aws(
        &t.ci,
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            "team/none",
        ],
    );
    assert_eq!(missing.status.code(), Some(255));

    // aws ecr get-login-password | docker login: the password works for the registry.
    require_docker();
    let password = {
        let mut command = Command::new(venv().join("bin/aws"));
        t.env.apply(&mut command);
        let out = command
            .args(["--endpoint-url", &t.endpoint, "ecr", "get-login-password"])
            .env("AWS_ACCESS_KEY_ID", &t.ci.0)
            .env("AWS_SECRET_ACCESS_KEY", &t.ci.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let docker_config = t.env.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let login = common::output_with_stdin(
        {
            let mut c = Command::new("docker");
            c.env("DOCKER_CONFIG", &docker_config).args([
                "login",
                "-u",
                "AWS",
                "--password-stdin",
                &t.address,
            ]);
            c
        },
        password.trim(),
    );
    assert!(
        login.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    docker_session(&t, &docker_config);

    // The owner's own access key may do what ci may not; deleted, it stops working.
    let made: Value = serde_json::from_str(
        &t.env
            .ecrl_ok(&["auth", "key", "create", "--output", "json"]),
    )
    .unwrap();
    let owner = (
        made["AccessKey"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string(),
        made["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let listed = t.env.ecrl_ok(&["auth", "key", "list"]);
    assert!(
        listed.contains(&owner.0) && !listed.contains(&owner.1),
        "{listed}"
    );
    t.aws_ok(
        &owner,
        &[
            "ecr",
            "delete-repository",
            "--repository-name",
            "team/app",
            "--force",
        ],
    );
    t.aws_fails(
        &t.ci,
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            "team/app",
        ],
        "RepositoryNotFoundException",
    );
    t.env.ecrl_ok(&["auth", "key", "delete", &owner.0]);
    t.aws_fails(
        &owner,
        &["ecr", "describe-repositories"],
        "UnrecognizedClientException",
    );
}

/// `aws ecr OP --repository-name team/app EXTRA...`.
fn in_repo<'a>(op: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["ecr", op, "--repository-name", "team/app"];
    args.extend_from_slice(extra);
    args
}

/// After `docker login` with `aws ecr get-login-password`: docker pushes, and the AWS CLI
/// reads the image back (batch-get-image), tags it again (put-image), and configures the
/// repository and the registry: policies, lifecycle, replication, pull-through cache rules.
fn docker_session(t: &Aws, docker_config: &std::path::Path) {
    let images = DockerImages::new();
    let local = format!("ecrl-test/aws-{}", std::process::id());
    build_busybox_image(&images, &format!("{local}:v1"), "aws session");
    let remote = format!("{}/team/app:v1", t.address);
    images.track(&remote);
    run_ok("docker", &["tag", &format!("{local}:v1"), &remote]);
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .env("DOCKER_CONFIG", docker_config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let pushed = pushed_digest(&docker(&["push", &remote]));
    let ecr = |args: &[&str]| {
        let mut all = vec!["ecr"];
        all.extend_from_slice(args);
        t.aws_ok(&t.ci, &all)
    };
    let ecr_in = |args: &[&str]| t.aws_ok(&t.ci, args);

    let described = ecr_in(&in_repo("describe-images", &["--image-ids", "imageTag=v1"]));
    assert_eq!(described["imageDetails"][0]["imageDigest"], pushed.as_str());
    let listed = ecr_in(&in_repo("list-images", &[]));
    assert!(listed.to_string().contains(&pushed), "{listed}");
    let got = ecr_in(&in_repo("batch-get-image", &["--image-ids", "imageTag=v1"]));
    let image = &got["images"][0];
    let manifest = image["imageManifest"].as_str().unwrap().to_string();
    assert_eq!(sha256_digest(manifest.as_bytes()), pushed, "{got}");
    assert_eq!(image["imageId"]["imageDigest"], pushed.as_str());
    let missing = ecr_in(&in_repo(
        "batch-get-image",
        &["--image-ids", "imageTag=nope"],
    ));
    assert_eq!(
        missing["failures"][0]["failureCode"], "ImageNotFound",
        "{missing}"
    );

    // Replication configured before the re-tag, so the re-tag queues a copy.
    let replication = ecr(&[
        "put-replication-configuration",
        "--replication-configuration",
        r#"{"rules": [{"destinations": [{"region": "127.0.0.1:9", "registryId": "000000000000"}]}]}"#,
    ]);
    assert_eq!(
        replication["replicationConfiguration"]["rules"][0]["destinations"][0]["region"],
        "127.0.0.1:9",
        "{replication}"
    );
    let registry = ecr(&["describe-registry"]);
    assert_eq!(
        registry["replicationConfiguration"]["rules"][0]["destinations"][0]["region"],
        "127.0.0.1:9",
        "{registry}"
    );

    // put-image: the manifest batch-get-image gave, under a new tag (the repository is
    // IMMUTABLE: a new tag is fine, the same one again is not).
    let put = ecr_in(&in_repo(
        "put-image",
        &[
            "--image-tag",
            "release",
            "--image-manifest",
            manifest.as_str(),
        ],
    ));
    assert_eq!(
        put["image"]["imageId"]["imageDigest"],
        pushed.as_str(),
        "{put}"
    );
    t.aws_fails(
        &t.ci,
        &in_repo(
            "put-image",
            &[
                "--image-tag",
                "release",
                "--image-manifest",
                manifest.as_str(),
            ],
        ),
        "ImageAlreadyExistsException",
    );
    let status = ecr_in(&in_repo(
        "describe-image-replication-status",
        &["--image-id", "imageTag=release"],
    ));
    let first = &status["replicationStatuses"][0];
    assert_eq!(first["region"], "127.0.0.1:9", "{status}");
    assert!(
        ["IN_PROGRESS", "FAILED"].contains(&first["status"].as_str().unwrap()),
        "{status}"
    );
    ecr(&[
        "put-replication-configuration",
        "--replication-configuration",
        r#"{"rules": []}"#,
    ]);
    // docker pulls the new tag.
    docker(&["pull", &format!("{}/team/app:release", t.address)]);
    images.track(&format!("{}/team/app:release", t.address));

    // Repository policy: set, read back, and it decides (the reader may now list images).
    let policy = r#"{"Version": "2012-10-17", "Statement": [{"Sid": "read", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["ecr:ListImages"]}]}"#;
    t.aws_fails(
        &t.reader,
        &in_repo("list-images", &[]),
        "AccessDeniedException",
    );
    ecr_in(&in_repo(
        "set-repository-policy",
        &["--policy-text", policy],
    ));
    let got = ecr_in(&in_repo("get-repository-policy", &[]));
    assert_eq!(got["policyText"], policy, "{got}");
    t.aws_ok(&t.reader, &in_repo("list-images", &[]));
    ecr_in(&in_repo("delete-repository-policy", &[]));
    t.aws_fails(
        &t.ci,
        &in_repo("get-repository-policy", &[]),
        "RepositoryPolicyNotFoundException",
    );

    // Lifecycle: a policy that expires all but the newest image, previewed then set.
    let rules = r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#;
    t.aws_fails(
        &t.ci,
        &in_repo("get-lifecycle-policy-preview", &[]),
        "LifecyclePolicyPreviewNotFoundException",
    );
    let started = ecr_in(&in_repo(
        "start-lifecycle-policy-preview",
        &["--lifecycle-policy-text", rules],
    ));
    assert_eq!(started["status"], "COMPLETE", "{started}");
    let preview = ecr_in(&in_repo("get-lifecycle-policy-preview", &[]));
    assert_eq!(
        preview["summary"]["expiringImageTotalCount"], 1,
        "{preview}"
    );
    assert_eq!(
        preview["previewResults"][0]["action"]["type"], "EXPIRE",
        "{preview}"
    );
    ecr_in(&in_repo(
        "put-lifecycle-policy",
        &["--lifecycle-policy-text", rules],
    ));
    let got = ecr_in(&in_repo("get-lifecycle-policy", &[]));
    assert_eq!(got["lifecyclePolicyText"], rules, "{got}");
    ecr_in(&in_repo("delete-lifecycle-policy", &[]));
    t.aws_fails(
        &t.ci,
        &in_repo("get-lifecycle-policy", &[]),
        "LifecyclePolicyNotFoundException",
    );
    // Tagged images, with no tag prefixes to select them by.
    let invalid = r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#;
    t.aws_fails(
        &t.ci,
        &in_repo(
            "put-lifecycle-policy",
            &["--lifecycle-policy-text", invalid],
        ),
        "InvalidParameterException",
    );

    // Pull-through cache rules: made, listed, checked against an upstream that is down.
    let rule = ecr(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
        "--upstream-registry-url",
        "127.0.0.1:9",
    ]);
    assert_eq!(rule["ecrRepositoryPrefix"], "hub", "{rule}");
    assert!(rule["createdAt"].is_number(), "{rule}");
    t.aws_fails(
        &t.ci,
        &[
            "ecr",
            "create-pull-through-cache-rule",
            "--ecr-repository-prefix",
            "hub",
            "--upstream-registry-url",
            "127.0.0.1:9",
        ],
        "PullThroughCacheRuleAlreadyExistsException",
    );
    let rules = ecr(&["describe-pull-through-cache-rules"]);
    assert_eq!(
        rules["pullThroughCacheRules"][0]["upstreamRegistryUrl"],
        "127.0.0.1:9"
    );
    let checked = ecr(&[
        "validate-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
    ]);
    assert_eq!(checked["isValid"], false, "{checked}");
    assert!(
        checked["failure"].as_str().unwrap().contains("127.0.0.1:9"),
        "{checked}"
    );
    ecr(&[
        "delete-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
    ]);
    t.aws_fails(
        &t.ci,
        &[
            "ecr",
            "delete-pull-through-cache-rule",
            "--ecr-repository-prefix",
            "hub",
        ],
        "PullThroughCacheRuleNotFoundException",
    );
}

/// Pushes a one-layer image over the registry API with `ci`'s access key (Basic auth):
/// its manifest's digest.
fn push_image(t: &Aws, repo: &str, tag: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let client = reqwest::blocking::Client::new();
    let base = format!("http://{}/v2/{repo}", t.address);
    let digest = |data: &[u8]| {
        let hash = Sha256::digest(data);
        format!(
            "sha256:{}",
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    let put_blob = |data: Vec<u8>| {
        let d = digest(&data);
        let r = client
            .post(format!("{base}/blobs/uploads/?digest={d}"))
            .basic_auth(&t.ci.0, Some(&t.ci.1))
            .body(data.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "push of {d}");
        (d, data.len())
    };
    let config =
        put_blob(format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#).into_bytes());
    let layer = put_blob(format!("layer of {repo}:{tag}").into_bytes());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.0, "size": layer.1}],
    }))
    .unwrap();
    let r = client
        .put(format!("{base}/manifests/{tag}"))
        .basic_auth(&t.ci.0, Some(&t.ci.1))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "manifest {repo}:{tag}");
    digest(&manifest)
}

/// boto3: a paginator over 250 repositories (pages of 100, in order, none twice), unsigned
/// and wrongly signed requests refused with AWS's error types, and every response's members
/// known to botocore's service model of its operation.
#[test]
fn boto3_pages_through_repositories_and_bad_signatures_are_refused() {
    let t = Aws::start();
    // May describe a tenth of the repositories: those of page/r01*.
    let part = t.user(
        "part",
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecr:DescribeRepositories",
             "Resource": "arn:aws:ecr:*:*:repository/page/r01*"}]}"#,
    );
    let stdout = t.python_ok(
        "check.py",
        &format!("{BOTO3_PRELUDE}{BOTO3_CHECK}"),
        &t.ci,
        &[
            ("READER_KEY_ID", &t.reader.0),
            ("READER_SECRET", &t.reader.1),
            ("PART_KEY_ID", &part.0),
            ("PART_SECRET", &part.1),
        ],
    );
    assert!(
        stdout.contains("checked 250 repositories in 3 pages"),
        "{stdout}"
    );
}

const BOTO3_CHECK: &str = r#"
ecr = client(os.environ["KEY_ID"], os.environ["SECRET"])
names = [f"page/r{i:03d}" for i in range(250)]
for name in names:
    ecr.create_repository(repositoryName=name)
pages = list(ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 100}))
got = [r["repositoryName"] for p in pages for r in p["repositories"]]
assert got == names, f"paginated {len(got)} repositories, not the 250 in order"
assert len(pages) == 3, f"{len(pages)} pages"
assert ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
assert ecr.list_images(repositoryName="page/r000")["imageIds"] == []
assert ecr.describe_images(repositoryName="page/r000")["imageDetails"] == []
print(f"checked {len(got)} repositories in {len(pages)} pages")

# A user's listing holds only what it may describe: the reader may describe everything.
reader = client(os.environ["READER_KEY_ID"], os.environ["READER_SECRET"])
assert len(reader.describe_repositories(maxResults=1000)["repositories"]) == 250
# One allowed a tenth sees that tenth, in pages of 4, as if the rest were not there.
part = client(os.environ["PART_KEY_ID"], os.environ["PART_SECRET"])
pages = list(part.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 4}))
seen = [r["repositoryName"] for p in pages for r in p["repositories"]]
assert seen == [f"page/r{i:03d}" for i in range(10, 20)], seen
assert len(pages) == 3, len(pages)
assert error_of(lambda: part.describe_repositories(repositoryNames=["page/r020"])) == "AccessDeniedException"

# A wrong secret, an unknown key, a wrong service in the scope.
assert error_of(lambda: client(os.environ["KEY_ID"], "x" * 40).describe_repositories()) == "InvalidSignatureException"
assert error_of(lambda: client("AKIAUNKNOWNKEY000000", "x" * 40).describe_repositories()) == "UnrecognizedClientException"
# Errors come as ECR's exception classes.
try:
    ecr.describe_repositories(repositoryNames=["page/missing"])
    raise AssertionError("found a missing repository")
except ecr.exceptions.RepositoryNotFoundException:
    pass
try:
    ecr.delete_repository(repositoryName="page/r000")
    raise AssertionError("ci deleted a repository its policy denies")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDeniedException", e.response

# An unsigned request.
request = urllib.request.Request(endpoint + "/", data=b"{}", method="POST", headers={
    "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
    "Content-Type": "application/x-amz-json-1.1"})
try:
    urllib.request.urlopen(request)
    raise AssertionError("an unsigned request was answered")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    assert e.code == 403 and body["__type"] == "MissingAuthenticationTokenException", body
# Unsigned with a 4 MiB body: refused without being held, and still answered (the rest of
# the body is read and thrown away, not cut off with a reset connection).
request = urllib.request.Request(endpoint + "/", data=b" " * (4 << 20), method="POST", headers={
    "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
    "Content-Type": "application/x-amz-json-1.1"})
try:
    urllib.request.urlopen(request)
    raise AssertionError("an unsigned request was answered")
except urllib.error.HTTPError as e:
    assert (e.code, json.loads(e.read())["__type"]) == (403, "MissingAuthenticationTokenException")

# Abuse. A signed body that is not JSON; a body past 16 MiB (refused before it is held: an
# unsigned one is refused without being read at all).
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

def signed(body, key=os.environ["KEY_ID"], secret=os.environ["SECRET"]):
    request = AWSRequest(method="POST", url=endpoint + "/", data=body, headers={
        "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(key, secret), "ecr", "us-east-1").add_auth(request)
    prepared = request.prepare()
    return urllib.request.Request(prepared.url, data=body, method="POST", headers=dict(prepared.headers))

def refused(request):
    try:
        urllib.request.urlopen(request)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["__type"]
    raise AssertionError("answered")

assert refused(signed(b"{not json")) == (400, "SerializationException")
assert refused(signed(b"[1, 2]")) == (400, "SerializationException")
code, kind = refused(signed(b" " * (17 << 20)))
assert (code, kind) == (413, "RequestEntityTooLargeException"), (code, kind)
# A signed request replayed as another operation: its target is signed.
replay = signed(b"{}")
replay.headers["X-amz-target"] = "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"
assert refused(replay) == (403, "InvalidSignatureException")

# Guessing a key's secret: after 10 wrong signatures from one address that key is held back
# (429) for a while, right secret or not; other keys are not.
import botocore.config
no_retry = botocore.config.Config(retries={"total_max_attempts": 1})
guesser = boto3.client("ecr", endpoint_url=endpoint, region_name="us-east-1", config=no_retry,
                       aws_access_key_id=os.environ["READER_KEY_ID"], aws_secret_access_key="y" * 40)
codes = [error_of(guesser.describe_repositories) for _ in range(11)]
assert codes[:10] == ["InvalidSignatureException"] * 10 and codes[10] == "ThrottlingException", codes
held = boto3.client("ecr", endpoint_url=endpoint, region_name="us-east-1", config=no_retry,
                    aws_access_key_id=os.environ["READER_KEY_ID"],
                    aws_secret_access_key=os.environ["READER_SECRET"])
assert error_of(held.describe_repositories) == "ThrottlingException"
assert len(ecr.describe_repositories(maxResults=5)["repositories"]) == 5

assert {"CreateRepository", "DescribeRepositories", "GetAuthorizationToken", "ListImages",
        "DescribeImages"} <= set(checked), checked
print("shapes checked:", sorted(set(checked)))
"#;

/// boto3 drives the image and configuration operations a registry client or a deployment
/// tool uses — a layer uploaded in parts and checked, downloaded from the URL ECR gives,
/// an image put from it, its referrers, resource tags, the registry policy, lifecycle,
/// replication and cache rules — with their abuse cases, every answer checked against
/// botocore's model.
#[test]
fn boto3_uploads_layers_puts_images_and_configures_the_registry() {
    let t = Aws::start();
    let stdout = t.python_ok(
        "images.py",
        &format!("{BOTO3_PRELUDE}{BOTO3_IMAGES}"),
        &t.ci,
        &[
            ("READER_KEY_ID", &t.reader.0),
            ("READER_SECRET", &t.reader.1),
        ],
    );
    assert!(stdout.contains("all checked"), "{stdout}");
    // The image put through the AWS API is an ordinary image for ecrl's own CLI.
    let listed = t
        .env
        .ecrl_ok(&["image", "list", "up/load", "--output", "json"]);
    assert!(listed.contains("\"v1\""), "{listed}");
}

const BOTO3_IMAGES: &str = r#"
import base64, hashlib

ecr = client(os.environ["KEY_ID"], os.environ["SECRET"])
reader = client(os.environ["READER_KEY_ID"], os.environ["READER_SECRET"])
REPO = "up/load"
ecr.create_repository(repositoryName=REPO)
ecr.create_repository(repositoryName="up/other")
ecr.create_repository(repositoryName="up/except", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                      imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}])
listed = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
assert listed["up/except"]["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}], listed
assert "imageTagMutabilityExclusionFilters" not in listed["up/other"], listed
assert listed["up/other"]["encryptionConfiguration"] == {"encryptionType": "AES256"}, listed
assert listed["up/other"]["imageScanningConfiguration"] == {"scanOnPush": False}, listed

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()

def upload(data, part=1 << 20, repo=REPO):
    up = ecr.initiate_layer_upload(repositoryName=repo)
    assert up["partSize"] >= 5 << 20, up
    for first in range(0, len(data), part):
        chunk = data[first:first + part]
        r = ecr.upload_layer_part(repositoryName=repo, uploadId=up["uploadId"],
                                  partFirstByte=first, partLastByte=first + len(chunk) - 1,
                                  layerPartBlob=chunk)
        assert r["lastByteReceived"] == first + len(chunk) - 1, r
    return up["uploadId"]

# A layer in four parts; a part that does not start where the upload ends is refused and
# leaves the upload as it was.
layer = os.urandom((3 << 20) + 17)
upload_id = upload(layer)
assert error_of(lambda: ecr.upload_layer_part(
    repositoryName=REPO, uploadId=upload_id, partFirstByte=5, partLastByte=5,
    layerPartBlob=b"x")) == "InvalidLayerPartException"
assert error_of(lambda: ecr.upload_layer_part(
    repositoryName=REPO, uploadId=upload_id, partFirstByte=len(layer), partLastByte=len(layer) + 9,
    layerPartBlob=b"x")) == "InvalidLayerPartException"
# Another repository's upload is not found here; another user may not upload at all.
other_id = ecr.initiate_layer_upload(repositoryName="up/other")["uploadId"]
assert error_of(lambda: ecr.upload_layer_part(
    repositoryName=REPO, uploadId=other_id, partFirstByte=0, partLastByte=0,
    layerPartBlob=b"x")) == "UploadNotFoundException"
assert error_of(lambda: reader.initiate_layer_upload(repositoryName=REPO)) == "AccessDeniedException"
done = ecr.complete_layer_upload(repositoryName=REPO, uploadId=upload_id, layerDigests=[sha(layer)])
assert done["layerDigest"] == sha(layer), done
# Content that is not what its digest says is not kept.
bad = upload(b"not what the digest says")
assert error_of(lambda: ecr.complete_layer_upload(
    repositoryName=REPO, uploadId=bad, layerDigests=[sha(b"something else")])) == "InvalidLayerException"

config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
ecr.complete_layer_upload(repositoryName=REPO, uploadId=upload(config), layerDigests=[sha(config)])
missing = sha(b"never uploaded")
avail = ecr.batch_check_layer_availability(repositoryName=REPO,
                                           layerDigests=[sha(layer), sha(config), missing, "nope"])
sizes = {l["layerDigest"]: (l["layerAvailability"], l["layerSize"]) for l in avail["layers"]}
assert sizes == {sha(layer): ("AVAILABLE", len(layer)), sha(config): ("AVAILABLE", len(config))}, avail
codes = {f["layerDigest"]: f["failureCode"] for f in avail["failures"]}
assert codes == {missing: "MissingLayerDigest", "nope": "InvalidLayerDigest"}, avail

# The download URL serves the layer with the registry's credentials (the token's).
url = ecr.get_download_url_for_layer(repositoryName=REPO, layerDigest=sha(layer))["downloadUrl"]
token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
fetched = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Basic " + token})).read()
assert fetched == layer, "the download URL served other bytes"
assert error_of(lambda: ecr.get_download_url_for_layer(repositoryName=REPO, layerDigest=missing)) == "LayersNotFoundException"

def manifest(layers, **extra):
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n} for d, n in layers]}
    m.update(extra)
    return json.dumps(m)

image = manifest([(sha(layer), len(layer))])
put = ecr.put_image(repositoryName=REPO, imageManifest=image, imageTag="v1")["image"]
assert put["imageId"] == {"imageDigest": sha(image.encode()), "imageTag": "v1"}, put
assert put["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json", put
assert error_of(lambda: ecr.put_image(repositoryName=REPO, imageManifest=image, imageTag="v1")) == "ImageAlreadyExistsException"
assert error_of(lambda: ecr.put_image(repositoryName=REPO, imageManifest=image, imageTag="v2",
                                      imageDigest=sha(b"other"))) == "ImageDigestDoesNotMatchException"
assert error_of(lambda: ecr.put_image(repositoryName=REPO, imageManifest=manifest([(missing, 5)]),
                                      imageTag="v3")) == "LayersNotFoundException"
assert error_of(lambda: ecr.put_image(repositoryName=REPO, imageManifest="{not json", imageTag="v3")) == "InvalidParameterException"
assert error_of(lambda: ecr.put_image(repositoryName="up/none", imageManifest=image, imageTag="v1")) == "RepositoryNotFoundException"
assert error_of(lambda: reader.put_image(repositoryName=REPO, imageManifest=image, imageTag="v9")) == "AccessDeniedException"
got = ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "v1"}, {"imageDigest": missing}])
assert got["images"][0]["imageManifest"] == image, got
assert got["failures"][0]["failureCode"] == "ImageNotFound", got
# Another registry's id is refused rather than answered for this one.
assert error_of(lambda: ecr.describe_images(registryId="999999999999", repositoryName=REPO)) == "InvalidParameterException"

# A referrer (an SBOM) of the image, found by its subject and artifact type.
empty = b"{}"
ecr.complete_layer_upload(repositoryName=REPO, uploadId=upload(empty), layerDigests=[sha(empty)])
sbom = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "artifactType": "application/spdx+json",
                   "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(empty), "size": 2},
                   "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(empty), "size": 2}],
                   "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": sha(image.encode()), "size": len(image)}})
ecr.put_image(repositoryName=REPO, imageManifest=sbom)
refs = ecr.list_image_referrers(repositoryName=REPO, subjectId={"imageDigest": sha(image.encode())})["referrers"]
assert [(r["digest"], r["artifactType"]) for r in refs] == [(sha(sbom.encode()), "application/spdx+json")], refs
none = ecr.list_image_referrers(repositoryName=REPO, subjectId={"imageDigest": sha(image.encode())},
                                filter={"artifactTypes": ["application/vnd.other"]})["referrers"]
assert none == [], none

# Resource tags on the repository, by its ARN.
arn = ecr.describe_repositories(repositoryNames=[REPO])["repositories"][0]["repositoryArn"]
ecr.tag_resource(resourceArn=arn, tags=[{"Key": "team", "Value": "a"}, {"Key": "tier", "Value": "web"}])
ecr.untag_resource(resourceArn=arn, tagKeys=["team"])
assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "tier", "Value": "web"}]
too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
assert error_of(lambda: ecr.tag_resource(resourceArn=arn, tags=too_many)) == "InvalidParameterException"
assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "tier", "Value": "web"}]
assert error_of(lambda: ecr.list_tags_for_resource(resourceArn="arn:aws:ecr:us-east-1:999999999999:repository/x")) == "InvalidParameterException"
assert error_of(lambda: reader.tag_resource(resourceArn=arn, tags=[{"Key": "x", "Value": "y"}])) == "AccessDeniedException"

# Mutability, lifecycle and its preview.
ecr.put_image_tag_mutability(repositoryName=REPO, imageTagMutability="IMMUTABLE")
assert error_of(lambda: ecr.put_image(repositoryName=REPO, imageManifest=manifest([(sha(config), len(config))]),
                                      imageTag="v1")) == "ImageTagAlreadyExistsException"
rules = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]})
ecr.put_lifecycle_policy(repositoryName=REPO, lifecyclePolicyText=rules)
assert ecr.get_lifecycle_policy(repositoryName=REPO)["lifecyclePolicyText"] == rules
ecr.start_lifecycle_policy_preview(repositoryName=REPO)
preview = ecr.get_lifecycle_policy_preview(repositoryName=REPO)
assert preview["status"] == "COMPLETE" and preview["lifecyclePolicyText"] == rules, preview
ecr.delete_lifecycle_policy(repositoryName=REPO)

# The registry policy: set, read, deleted.
policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": "none", "Effect": "Deny",
    "Principal": {"AWS": "*"}, "Action": ["ecr:ReplicateImage"], "Resource": "*"}]})
ecr.put_registry_policy(policyText=policy)
assert ecr.get_registry_policy()["policyText"] == policy
ecr.delete_registry_policy()
assert error_of(ecr.get_registry_policy) == "RegistryPolicyNotFoundException"

# Replication and cache rules, for their shapes (the AWS CLI session drives them further).
ecr.put_replication_configuration(replicationConfiguration={"rules": []})
assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}
ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="quay", upstreamRegistryUrl="quay.io")
rule = ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["quay"])["pullThroughCacheRules"][0]
assert rule["upstreamRegistry"] == "quay", rule
assert error_of(lambda: ecr.create_pull_through_cache_rule(
    ecrRepositoryPrefix="ghcr", upstreamRegistryUrl="ghcr.io",
    credentialArn="arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/x")) == "InvalidParameterException"
assert error_of(lambda: reader.create_pull_through_cache_rule(ecrRepositoryPrefix="k8s", upstreamRegistryUrl="registry.k8s.io")) == "AccessDeniedException"
# Update changes credentials, which ecrl takes from its logins: refused, saying so.
assert error_of(lambda: ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="quay")) == "InvalidParameterException"
assert error_of(lambda: ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="none")) == "PullThroughCacheRuleNotFoundException"
ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="quay")

want = {"InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload", "BatchCheckLayerAvailability",
        "GetDownloadUrlForLayer", "PutImage", "BatchGetImage", "ListImageReferrers", "TagResource",
        "UntagResource", "ListTagsForResource", "PutImageTagMutability", "PutLifecyclePolicy",
        "GetLifecyclePolicy", "StartLifecyclePolicyPreview", "GetLifecyclePolicyPreview",
        "DeleteLifecyclePolicy", "PutRegistryPolicy", "GetRegistryPolicy", "DeleteRegistryPolicy",
        "PutReplicationConfiguration", "DescribeRegistry", "CreatePullThroughCacheRule",
        "DescribePullThroughCacheRules", "DeletePullThroughCacheRule"}
assert want <= set(checked), want - set(checked)
print("all checked:", sorted(set(checked)))
"#;
