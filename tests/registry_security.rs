//! What a hostile or careless client of the registry must not get, on the real daemon:
//! blobs of repositories it may not read (through a mount), unbounded upload sessions,
//! repositories made by requests that stored nothing, manifests whose sizes lie, and fewer
//! rights with credentials than without.

mod common;

use base64::Engine as _;
use common::registry::{registry_address, sha256_digest};
use common::{Daemon, Env};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

struct Registry {
    env: Env,
    _daemon: Daemon,
    base: String,
    http: Client,
    owner: String,
}

impl Registry {
    fn new(anonymous: &'static str, config: &str) -> Registry {
        Registry::with_fd_limit(anonymous, config, None)
    }

    /// A daemon whose descriptors are limited to `nofile` (its soft and hard limit).
    fn with_fd_limit(anonymous: &'static str, config: &str, nofile: Option<u64>) -> Registry {
        let env = Env::with_anonymous(anonymous);
        let path = env.write_config(config);
        let path = path.to_str().unwrap();
        let daemon = match nofile {
            None => env.spawn_daemon(&["--config", path]),
            Some(n) => {
                let mut command = env.ecrld_command(&["--config", path]);
                common::limit_open_files(&mut command, n);
                env.spawn_daemon_from(command)
            }
        };
        let address = registry_address(&env);
        let owner = basic("AWS", env.ecrl_ok(&["get-login-password"]).trim());
        Registry {
            env,
            _daemon: daemon,
            base: format!("http://{address}"),
            http: Client::new(),
            owner,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new user whose identity policy allows `actions` on the repositories `resources`
    /// (names, `*` allowed); returns its Basic credentials.
    fn user(&self, name: &str, grants: &[(&[&str], &str)]) -> String {
        let created: Value = serde_json::from_str(
            &self
                .env
                .ecrl_ok(&["auth", "user", "create", name, "--output", "json"]),
        )
        .unwrap();
        let statements: Vec<Value> = grants
            .iter()
            .map(|(actions, repos)| {
                json!({"Effect": "Allow", "Action": actions,
                       "Resource": format!("arn:aws:ecr:*:*:repository/{repos}")})
            })
            .collect();
        if !statements.is_empty() {
            let policy = json!({"Version": "2012-10-17", "Statement": statements});
            let file = self.env.path().join(format!("{name}.json"));
            std::fs::write(&file, policy.to_string()).unwrap();
            self.env.ecrl_ok(&[
                "auth",
                "policy",
                "attach",
                name,
                file.to_str().unwrap(),
                "--quiet",
            ]);
        }
        basic(
            created["AccessKey"]["AccessKeyId"].as_str().unwrap(),
            created["AccessKey"]["SecretAccessKey"].as_str().unwrap(),
        )
    }

    fn send(&self, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.body(body.to_vec()).send().unwrap()
    }

    /// Pushes a blob in one request; returns its digest.
    fn blob(&self, repo: &str, data: &[u8], auth: &str) -> String {
        let digest = sha256_digest(data);
        let r = self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            Some(auth),
            data,
        );
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
        digest
    }

    /// An image manifest naming a config and one layer with the sizes given.
    fn manifest(config: (&str, usize), layer: (&str, usize)) -> Vec<u8> {
        json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.0, "size": config.1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer.0, "size": layer.1}]
        })
        .to_string()
        .into_bytes()
    }

    fn put_manifest(&self, repo: &str, tag: &str, manifest: &[u8], auth: &str) -> Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("Authorization", auth)
            .header("Content-Type", MANIFEST)
            .body(manifest.to_vec())
            .send()
            .unwrap()
    }

    /// Pushes an image of a fresh layer to `repo:1`; returns the layer's digest and the
    /// manifest.
    fn image(&self, repo: &str, seed: u8) -> (String, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
        let layer: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8 ^ seed).collect();
        let config_digest = self.blob(repo, config.as_bytes(), &self.owner.clone());
        let layer_digest = self.blob(repo, &layer, &self.owner.clone());
        let manifest =
            Registry::manifest((&config_digest, config.len()), (&layer_digest, layer.len()));
        let r = self.put_manifest(repo, "1", &manifest, &self.owner.clone());
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
        (layer_digest, manifest)
    }

    fn catalog(&self) -> Vec<String> {
        let body: Value = self
            .send("GET", "/v2/_catalog", Some(&self.owner), b"")
            .json()
            .unwrap();
        body["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn error_code(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    (
        status,
        body["errors"][0]["code"].as_str().unwrap_or("").to_string(),
    )
}

const PULL: &[&str] = &[
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
];
const ALL: &[&str] = &["ecr:*"];

#[test]
fn a_mount_takes_blobs_only_from_repositories_the_caller_may_read() {
    let r = Registry::new("none", "");
    let (layer, manifest) = r.image("team/b", 1);
    let stranger = r.user("stranger", &[(ALL, "team/c")]);
    let reader = r.user("reader", &[(PULL, "team/b"), (ALL, "team/r")]);
    let nowhere = sha256_digest(b"content no repository holds");

    // A user of another repository: no `from` is an ordinary upload session, the same answer
    // as for a digest that exists nowhere, and nothing of team/b's reaches team/c.
    for digest in [&layer, &nowhere] {
        let answer = r.send(
            "POST",
            &format!("/v2/team/c/blobs/uploads/?mount={digest}"),
            Some(&stranger),
            b"",
        );
        assert_eq!(answer.status(), StatusCode::ACCEPTED, "{digest}");
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with("/v2/team/c/blobs/uploads/"),
            "{location}"
        );
        assert!(answer.headers().get("docker-content-digest").is_none());
        assert_eq!(
            r.send("DELETE", &location, Some(&stranger), b"").status(),
            StatusCode::NO_CONTENT
        );
    }
    let got = r.send(
        "GET",
        &format!("/v2/team/c/blobs/{layer}"),
        Some(&stranger),
        b"",
    );
    assert_eq!(
        error_code(got),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );
    let copied = r.put_manifest("team/c", "stolen", &manifest, &stranger);
    assert_eq!(
        error_code(copied),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    // Naming the source is refused outright.
    let named = r.send(
        "POST",
        &format!("/v2/team/c/blobs/uploads/?mount={layer}&from=team/b"),
        Some(&stranger),
        b"",
    );
    assert_eq!(named.status(), StatusCode::FORBIDDEN);
    assert!(!r.catalog().contains(&"team/c".to_string()));

    // A user who may pull team/b mounts from it, with or without `from`.
    for query in [
        format!("mount={layer}"),
        format!("mount={layer}&from=team/b"),
    ] {
        let answer = r.send(
            "POST",
            &format!("/v2/team/r/blobs/uploads/?{query}"),
            Some(&reader),
            b"",
        );
        assert_eq!(answer.status(), StatusCode::CREATED, "{query}");
        assert_eq!(answer.headers()["docker-content-digest"], layer.as_str());
    }
    let got = r.send(
        "GET",
        &format!("/v2/team/r/blobs/{layer}"),
        Some(&reader),
        b"",
    );
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().unwrap().len(), 70_000);

    // The owner mounts from anywhere.
    let answer = r.send(
        "POST",
        &format!("/v2/owned/blobs/uploads/?mount={layer}"),
        Some(&r.owner),
        b"",
    );
    assert_eq!(answer.status(), StatusCode::CREATED);
}

#[test]
fn upload_sessions_are_capped_per_caller_and_in_total_and_expire_when_idle() {
    let r = Registry::new(
        "none",
        "registry:\n  max_uploads_per_client: 4\n  max_uploads: 6\n  upload_idle_timeout: 2s\n",
    );
    let pusher = r.user("pusher", &[(ALL, "team/p")]);
    let open = |auth: &str| r.send("POST", "/v2/team/p/blobs/uploads/", Some(auth), b"");
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let answer = open(&pusher);
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        sessions.push(answer.headers()["location"].to_str().unwrap().to_string());
    }
    let refused = open(&pusher);
    assert!(refused.headers().contains_key("retry-after"));
    let (status, code) = error_code(refused);
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
    );
    // Another caller still gets sessions, up to the registry's total.
    assert_eq!(open(&r.owner).status(), StatusCode::ACCEPTED);
    assert_eq!(open(&r.owner).status(), StatusCode::ACCEPTED);
    assert_eq!(open(&r.owner).status(), StatusCode::TOO_MANY_REQUESTS);
    // Ending a session gives its place back.
    assert_eq!(
        r.send("DELETE", &sessions.pop().unwrap(), Some(&pusher), b"")
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(open(&pusher).status(), StatusCode::ACCEPTED);

    // Idle sessions go after the idle timeout, and with them the caller's count.
    let patched = r.send("PATCH", &sessions[0], Some(&pusher), &[7u8; 1000]);
    assert_eq!(patched.status(), StatusCode::ACCEPTED);
    std::thread::sleep(Duration::from_secs(4));
    let (status, code) = error_code(r.send("GET", &sessions[0], Some(&pusher), b""));
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    for _ in 0..4 {
        assert_eq!(open(&pusher).status(), StatusCode::ACCEPTED);
    }
}

#[test]
fn a_flood_of_upload_sessions_neither_starves_descriptors_nor_stops_the_owner() {
    // More sessions allowed than the daemon has descriptors: an idle session must hold none.
    let r = Registry::with_fd_limit(
        "none",
        "registry:\n  max_uploads_per_client: 600\n",
        Some(256),
    );
    let pusher = r.user("flood", &[(ALL, "team/f")]);
    let chunk = vec![1u8; 70_000];
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..700 {
        let answer = r.send("POST", "/v2/team/f/blobs/uploads/", Some(&pusher), b"");
        let status = answer.status();
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
        if status == StatusCode::ACCEPTED {
            let location = answer.headers()["location"].to_str().unwrap().to_string();
            let patched = r.send("PATCH", &location, Some(&pusher), &chunk);
            assert_eq!(patched.status(), StatusCode::ACCEPTED, "{statuses:?}");
        }
    }
    assert_eq!(statuses.get(&202), Some(&600), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&100), "{statuses:?}");
    // The owner pushes a whole image meanwhile.
    r.image("team/owner", 3);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", r._daemon.pid()))
        .unwrap()
        .count();
    assert!(fds < 128, "ecrld holds {fds} descriptors for idle sessions");
}

#[test]
fn requests_that_store_nothing_create_no_repository() {
    let r = Registry::new("none", "");
    // A bare session: no repository until a blob lands.
    let answer = r.send("POST", "/v2/new/bare/blobs/uploads/", Some(&r.owner), b"");
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(!r.catalog().contains(&"new/bare".to_string()));
    let listed = r.env.ecrl_ok(&["repo", "list", "--output", "json"]);
    assert!(!listed.contains("new/bare"), "{listed}");
    // A manifest refused for its references creates none either.
    let ghost = sha256_digest(b"ghost");
    let manifest = Registry::manifest((&ghost, 5), (&ghost, 5));
    let refused = r.put_manifest("new/refused", "1", &manifest, &r.owner);
    assert_eq!(
        error_code(refused),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    assert!(!r.catalog().contains(&"new/refused".to_string()));
    // The session's blob makes it.
    let data = b"layer bytes";
    let digest = sha256_digest(data);
    let done = r.send(
        "PUT",
        &format!("{location}?digest={digest}"),
        Some(&r.owner),
        data,
    );
    assert_eq!(done.status(), StatusCode::CREATED);
    assert!(r.catalog().contains(&"new/bare".to_string()));
}

#[test]
fn a_manifest_whose_sizes_lie_is_refused() {
    let r = Registry::new("none", "");
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = vec![9u8; 10];
    let config_digest = r.blob("team/sizes", config, &r.owner.clone());
    let layer_digest = r.blob("team/sizes", &layer, &r.owner.clone());
    for (config_size, layer_size) in [(999_999, 10), (config.len(), 11), (config.len(), 0)] {
        let manifest =
            Registry::manifest((&config_digest, config_size), (&layer_digest, layer_size));
        let response = r.put_manifest("team/sizes", "lies", &manifest, &r.owner);
        let (status, code) = error_code(response);
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            "{config_size} {layer_size}"
        );
    }
    let truthful = Registry::manifest((&config_digest, config.len()), (&layer_digest, 10));
    let response = r.put_manifest("team/sizes", "ok", &truthful, &r.owner);
    assert_eq!(response.status(), StatusCode::CREATED);
    // An index that misstates a child's size is refused too.
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MANIFEST, "digest": sha256_digest(&truthful),
                       "size": truthful.len() + 1}]});
    let response = r
        .http
        .put(r.url("/v2/team/sizes/manifests/index"))
        .header("Authorization", &r.owner)
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.to_string())
        .send()
        .unwrap();
    assert_eq!(
        error_code(response),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );
}

#[test]
fn credentials_never_lower_what_anonymous_pull_allows() {
    let r = Registry::new("pull", "");
    r.image("pub/app", 4);
    let nobody = r.user("nobody", &[]);
    for auth in [None, Some(nobody.as_str())] {
        let tags = r.send("GET", "/v2/pub/app/tags/list", auth, b"");
        assert_eq!(tags.status(), StatusCode::OK, "{auth:?}");
    }
    // Pushing still needs a policy.
    let push = r.send("POST", "/v2/pub/app/blobs/uploads/", Some(&nobody), b"");
    assert_eq!(push.status(), StatusCode::FORBIDDEN);
}
