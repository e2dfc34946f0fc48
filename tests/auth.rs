//! Registry access control on the real daemon: credentials, tokens, the token flow,
//! anonymous modes, refusals and what must never leak.

mod common;

use base64::Engine as _;
use common::registry::{localhost, registry_address, require_docker, run, sha256_digest, unique};
use common::{stderr, stdout, Daemon, Env};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Command;

struct Registry {
    env: Env,
    _daemon: Daemon,
    base: String,
    http: Client,
}

impl Registry {
    fn new(anonymous: &'static str) -> Self {
        let env = Env::with_anonymous(anonymous);
        let daemon = env.spawn_daemon(&[]);
        let address = registry_address(&env);
        Registry {
            env,
            _daemon: daemon,
            base: format!("http://{address}"),
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn login_password(&self, user: Option<&str>) -> String {
        let mut args = vec!["get-login-password"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        self.env.ecrl_ok(&args).trim().to_string()
    }

    /// `(access key id, secret)` of a new user.
    fn user(&self, name: &str) -> (String, String) {
        let v: Value = serde_json::from_str(
            &self
                .env
                .ecrl_ok(&["auth", "user", "create", name, "--output", "json"]),
        )
        .unwrap();
        (
            v["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string(),
            v["AccessKey"]["SecretAccessKey"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// Pushes a small blob and a manifest to `repo:tag` with the given Authorization.
    fn push(&self, repo: &str, tag: &str, auth: &str) -> StatusCode {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let digest = sha256_digest(config);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("Authorization", auth)
            .body(config.to_vec())
            .send()
            .unwrap();
        if !r.status().is_success() {
            return r.status();
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
            "layers": []
        });
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("Authorization", auth)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string())
            .send()
            .unwrap()
            .status()
    }

    fn get(&self, path: &str, auth: Option<&str>) -> reqwest::blocking::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(a) = auth {
            request = request.header("Authorization", a);
        }
        request.send().unwrap()
    }

    /// Everything the daemon logged so far.
    fn log(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.env.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ecrld") && name.ends_with(".log") {
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn no_credentials_get_401_with_both_challenges_and_a_login_token_works() {
    let r = Registry::new("none");
    let response = r.get("/v2/", None);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<String> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Bearer realm=\"http://")
                && c.contains("/v2/token\"")
                && c.contains("service=\"ecrl\"")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );

    let response = r.get("/v2/team/app/manifests/1", None);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("scope=\"repository:team/app:pull\""),
        "{challenge}"
    );
    let body: Value = response.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let token = r.login_password(None);
    let auth = basic("AWS", &token);
    assert_eq!(r.get("/v2/", Some(&auth)).status(), StatusCode::OK);
    assert_eq!(r.push("team/app", "1", &auth), StatusCode::CREATED);
    let got = r
        .http
        .get(r.url("/v2/team/app/manifests/1"))
        .header("Authorization", &auth)
        .header("Accept", MANIFEST)
        .send()
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    // A token that was tampered with or made up is refused.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        r.get("/v2/", Some(&basic("AWS", &forged))).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        r.get("/v2/", Some(&basic("AWS", "ecrl1.e30.AAAA")))
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        r.get("/v2/", Some("Bearer nonsense")).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn access_keys_the_token_flow_and_rotation() {
    let r = Registry::new("none");
    let (key, secret) = r.user("ci");
    assert!(key.starts_with("AKIA") && secret.len() == 40);
    // Basic with the access key itself.
    assert_eq!(
        r.get("/v2/", Some(&basic(&key, &secret))).status(),
        StatusCode::OK
    );
    // The secret with its last character changed (to one it is not).
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &secret[..39]);
    assert_eq!(
        r.get("/v2/", Some(&basic(&key, &wrong))).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        r.get("/v2/", Some(&basic("AKIANOSUCHKEY0000000", &secret)))
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // The Docker token flow: Basic credentials buy a bearer token.
    let response = r.get(
        "/v2/token?service=ecrl&scope=repository:team/app:pull",
        Some(&basic(&key, &secret)),
    );
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().unwrap();
    let bearer = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"], body["token"]);
    assert!(body["expires_in"].as_u64().unwrap() > 11 * 3600);
    assert_eq!(
        r.get("/v2/", Some(&format!("Bearer {bearer}"))).status(),
        StatusCode::OK
    );
    // Without credentials the token endpoint answers an anonymous token that grants nothing
    // here; bad credentials get 401.
    let body: Value = r.get("/v2/token?service=ecrl", None).json().unwrap();
    let anonymous = format!("Bearer {}", body["token"].as_str().unwrap());
    assert_eq!(
        r.get("/v2/team/app/tags/list", Some(&anonymous)).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        r.get("/v2/token?service=ecrl", Some(&basic(&key, &wrong)))
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // A user's login token works until the key is rotated.
    let user_token = r.login_password(Some("ci"));
    assert_eq!(
        r.get("/v2/", Some(&basic("AWS", &user_token))).status(),
        StatusCode::OK
    );
    let rotated: Value = serde_json::from_str(
        &r.env
            .ecrl_ok(&["auth", "key", "rotate", "ci", "--output", "json"]),
    )
    .unwrap();
    let new_key = rotated["AccessKey"]["AccessKeyId"].as_str().unwrap();
    let new_secret = rotated["AccessKey"]["SecretAccessKey"].as_str().unwrap();
    assert_ne!(new_key, key);
    for dead in [
        basic(&key, &secret),
        basic("AWS", &user_token),
        format!("Bearer {bearer}"),
    ] {
        assert_eq!(
            r.get("/v2/", Some(&dead)).status(),
            StatusCode::UNAUTHORIZED,
            "{dead}"
        );
    }
    assert_eq!(
        r.get("/v2/", Some(&basic(new_key, new_secret))).status(),
        StatusCode::OK
    );

    // Listings show key ids, never secrets; a deleted user's key stops working.
    let list = r.env.ecrl_ok(&["auth", "user", "list", "--output", "json"]);
    assert!(
        list.contains(new_key) && !list.contains(new_secret),
        "{list}"
    );
    let again = r.env.ecrl(&["auth", "user", "create", "ci"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    r.env.ecrl_ok(&["auth", "user", "delete", "ci"]);
    assert_eq!(
        r.get("/v2/", Some(&basic(new_key, new_secret))).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn a_user_without_an_allowing_policy_is_refused_with_403() {
    let r = Registry::new("none");
    let owner = basic("AWS", &r.login_password(None));
    assert_eq!(r.push("team/app", "1", &owner), StatusCode::CREATED);
    let (key, secret) = r.user("reader");
    let status = r.push("team/app", "2", &basic(&key, &secret));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = r.get("/v2/team/app/tags/list", Some(&basic(&key, &secret)));
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("user reader")
            && message.contains("ecr:ListImages")
            && message.contains("team/app"),
        "{message}"
    );
}

#[test]
fn anonymous_pull_lets_anyone_pull_and_nobody_push() {
    let r = Registry::new("pull");
    let owner = basic("AWS", &r.login_password(None));
    assert_eq!(r.push("pub/app", "1", &owner), StatusCode::CREATED);
    assert_eq!(r.get("/v2/", None).status(), StatusCode::OK);
    let got = r
        .http
        .get(r.url("/v2/pub/app/manifests/1"))
        .header("Accept", MANIFEST)
        .send()
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        r.get("/v2/pub/app/tags/list", None).status(),
        StatusCode::OK
    );
    // An anonymous token from the token endpoint pulls too.
    let body: Value = r
        .get("/v2/token?service=ecrl&scope=repository:pub/app:pull", None)
        .json()
        .unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    assert_eq!(
        r.get("/v2/pub/app/tags/list", Some(&bearer)).status(),
        StatusCode::OK
    );
    // Pushing needs credentials.
    let upload = r
        .http
        .post(r.url("/v2/pub/app/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(upload.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.push("pub/app", "2", &bearer), StatusCode::UNAUTHORIZED);
}

#[test]
fn anonymous_all_turns_auth_off_and_says_so() {
    let r = Registry::new("all");
    assert_eq!(
        r.push("open/app", "1", "Basic Zm9vOmJhcg=="),
        StatusCode::CREATED
    );
    assert_eq!(
        r.get("/v2/open/app/tags/list", None).status(),
        StatusCode::OK
    );
    assert!(
        r.log().contains("registry authentication is off"),
        "{}",
        r.log()
    );
}

#[test]
fn repeated_failures_hold_back_that_user_at_that_address_only() {
    let r = Registry::new("none");
    let (ci_key, ci_secret) = r.user("ci");
    let (dev_key, dev_secret) = r.user("dev");
    let (ops_key, ops_secret) = r.user("ops");
    let body: Value = r
        .get(
            "/v2/token?service=ecrl",
            Some(&basic(&ops_key, &ops_secret)),
        )
        .json()
        .unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let login = basic("AWS", &r.login_password(None));

    for _ in 0..10 {
        assert_eq!(
            r.get("/v2/", Some(&basic(&ci_key, "wrong"))).status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The user being guessed at is held back at this address, even with its right secret.
    let blocked = r.get("/v2/", Some(&basic(&ci_key, &ci_secret)));
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = blocked.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    // Everyone else behind the same (loopback) address is not: another user's key, a
    // bearer token and a login token all pass.
    assert_eq!(
        r.get("/v2/", Some(&basic(&dev_key, &dev_secret))).status(),
        StatusCode::OK
    );
    assert_eq!(r.get("/v2/", Some(&bearer)).status(), StatusCode::OK);
    assert_eq!(r.get("/v2/", Some(&login)).status(), StatusCode::OK);

    // Wrong login tokens are held back too, but a token that verifies never is.
    for _ in 0..10 {
        assert_eq!(
            r.get("/v2/", Some(&basic("AWS", "wrong"))).status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        r.get("/v2/", Some(&basic("AWS", "wrong"))).status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let fresh = basic("AWS", &r.login_password(Some("dev")));
    assert_eq!(r.get("/v2/", Some(&fresh)).status(), StatusCode::OK);
    assert_eq!(r.get("/v2/", Some(&bearer)).status(), StatusCode::OK);
}

#[test]
fn secrets_never_reach_the_log_or_listings() {
    let r = Registry::new("none");
    let (key, secret) = r.user("auditor");
    let token = r.login_password(None);
    let user_token = r.login_password(Some("auditor"));
    r.get("/v2/", Some(&basic(&key, &secret)));
    r.get("/v2/", Some(&basic(&key, "not-the-secret-but-close")));
    r.get("/v2/", Some(&basic("AWS", &token)));
    r.get("/v2/", Some(&basic("AWS", &user_token)));
    r.get("/v2/token?service=ecrl", Some(&basic(&key, &secret)));
    r.env.ecrl_ok(&["auth", "key", "rotate", "auditor", "-q"]);
    let log = r.log();
    assert!(log.contains("auditor"), "the log says what happened: {log}");
    for s in [
        &secret,
        &token,
        &user_token,
        &"not-the-secret-but-close".to_string(),
    ] {
        assert!(!log.contains(s.as_str()), "a secret is in the log");
    }
    let listing = r.env.ecrl_ok(&["auth", "user", "list"]);
    assert!(!listing.contains(&secret));
    let status = r.env.ecrl_ok(&["daemon", "status", "--output", "json"]);
    let info: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(info["registryAnonymous"], "none");
    assert!(!status.contains(&secret) && !status.contains(&token));
}

#[test]
fn docker_logs_in_with_the_login_password_and_the_task_runner_pulls_with_its_own() {
    require_docker();
    let r = Registry::new("none");
    let host = localhost(r.base.trim_start_matches("http://"));
    let docker_config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", docker_config.path()).args(args);
        match stdin {
            Some(text) => common::output_with_stdin(c, text),
            None => c.output().unwrap(),
        }
    };
    let image = format!("{host}/{}:1", unique("auth/busybox"));
    let images = common::registry::DockerImages::new();
    let local = unique("ecrl-auth-test");
    common::registry::build_busybox_image(&images, &format!("{local}:1"), "auth");
    images.track(&image);
    run("docker", &["tag", &format!("{local}:1"), &image]);
    // Without logging in, docker is refused (at once: no retries of a refused token).
    let began = std::time::Instant::now();
    let refused = docker(&["push", &image], None);
    assert!(
        began.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
    assert!(!refused.status.success());
    let text = format!("{}{}", stdout(&refused), stderr(&refused)).to_lowercase();
    assert!(
        text.contains("unauthorized") || text.contains("no basic auth credentials"),
        "{text}"
    );
    // ecrl get-login-password | docker login -u AWS --password-stdin HOST
    let token = r.login_password(None);
    let login = docker(
        &["login", "-u", "AWS", "--password-stdin", &host],
        Some(&token),
    );
    assert!(login.status.success(), "{}", stderr(&login));
    let pushed = docker(&["push", &image], None);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    run("docker", &["rmi", &image]);
    let pulled = docker(&["pull", &image], None);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    run("docker", &["rmi", &image]);

    // A task whose image is in ecrl: the engine pulls it with the runner's own token (the
    // engine itself holds no login).
    let repo = image
        .trim_start_matches(&format!("{host}/"))
        .trim_end_matches(":1")
        .to_string();
    let def = serde_json::json!({"family": unique("authtask"), "containerDefinitions": [
        {"name": "a", "image": format!("{repo}:1"), "memory": 32, "command": ["cat", "/etc/ecrl-test-id"]}]});
    let file = r.env.path().join("def.json");
    std::fs::write(&file, def.to_string()).unwrap();
    r.env
        .ecrl_ok(&["task", "register", "-f", file.to_str().unwrap()]);
    let out = r.env.ecrl(&[
        "task",
        "run",
        def["family"].as_str().unwrap(),
        "--wait",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let logs = r.env.ecrl_ok(&["task", "logs", id]);
    assert!(logs.contains("auth"), "{logs}");
    // The runner's pull left the image in the engine by digest: remove it.
    let digest = v["tasks"][0]["containers"][0]["imageDigest"]
        .as_str()
        .unwrap();
    let _ = run("docker", &["rmi", &format!("{host}/{repo}@{digest}")]);
}

/// Writes a policy document into the test's directory and answers its path.
fn policy_file(r: &Registry, name: &str, policy: &Value) -> String {
    let path = r.env.path().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(policy).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn identity_and_repository_policies_decide_and_deny_wins() {
    let r = Registry::new("none");
    let owner = basic("AWS", &r.login_password(None));
    assert_eq!(r.push("team/app", "1", &owner), StatusCode::CREATED);
    assert_eq!(r.push("other/app", "1", &owner), StatusCode::CREATED);
    let created: Value = serde_json::from_str(
        &r.env
            .ecrl_ok(&["auth", "user", "create", "ci", "--output", "json"]),
    )
    .unwrap();
    let arn = created["User"]["Arn"].as_str().unwrap().to_string();
    let account = arn.split(':').nth(4).unwrap().to_string();
    let ci = basic(
        created["AccessKey"]["AccessKeyId"].as_str().unwrap(),
        created["AccessKey"]["SecretAccessKey"].as_str().unwrap(),
    );

    // An identity policy: pull anything under team/.
    let pull = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "PullTeam", "Effect": "Allow",
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ecr:ListImages"],
        "Resource": format!("arn:aws:ecr:*:{account}:repository/team/*")}]});
    r.env.ecrl_ok(&[
        "auth",
        "policy",
        "attach",
        "ci",
        &policy_file(&r, "pull-team", &pull),
    ]);
    assert_eq!(
        r.get("/v2/team/app/tags/list", Some(&ci)).status(),
        StatusCode::OK
    );
    assert_eq!(
        r.get("/v2/other/app/tags/list", Some(&ci)).status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(r.push("team/app", "2", &ci), StatusCode::FORBIDDEN);
    // The same with the user's login token: it may pull, not push.
    let ci_token = basic("AWS", &r.login_password(Some("ci")));
    assert_eq!(
        r.get("/v2/team/app/tags/list", Some(&ci_token)).status(),
        StatusCode::OK
    );
    assert_eq!(r.push("team/app", "2", &ci_token), StatusCode::FORBIDDEN);
    let sim = r
        .env
        .ecrl(&["auth", "simulate", "ci", "ecr:BatchGetImage", "team/app"]);
    assert_eq!(sim.status.code(), Some(0));
    assert!(
        stdout(&sim).contains("ALLOW") && stdout(&sim).contains("PullTeam"),
        "{}",
        stdout(&sim)
    );
    let sim = r.env.ecrl(&[
        "auth",
        "simulate",
        "ci",
        "ecr:PutImage",
        "team/app",
        "--output",
        "json",
    ]);
    assert_eq!(sim.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&sim.stdout).unwrap();
    assert_eq!(v["evalDecision"], "implicitDeny");

    // A repository policy as on ECR lets ci push to team/app only.
    let push = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "CiPushes", "Effect": "Allow", "Principal": {"AWS": arn},
        "Action": ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                   "ecr:CompleteLayerUpload", "ecr:BatchCheckLayerAvailability"]}]});
    r.env.ecrl_ok(&[
        "repo",
        "policy",
        "set",
        "team/app",
        "-f",
        &policy_file(&r, "push", &push),
    ]);
    let got = r
        .env
        .ecrl_ok(&["repo", "policy", "get", "team/app", "--output", "json"]);
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(got["policyText"].as_str().unwrap()).unwrap(),
        push
    );
    assert_eq!(r.push("team/app", "2", &ci), StatusCode::CREATED);
    assert_eq!(r.push("team/other", "1", &ci), StatusCode::FORBIDDEN);

    // A Deny beats every Allow: the registry policy forbids ci to push anywhere.
    let deny = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "NoPushForCi", "Effect": "Deny", "Principal": {"AWS": arn},
        "Action": "ecr:PutImage", "Resource": "*"}]});
    r.env.ecrl_ok(&[
        "auth",
        "registry-policy",
        "set",
        "-f",
        &policy_file(&r, "deny", &deny),
    ]);
    let response = r
        .http
        .put(r.url("/v2/team/app/manifests/3"))
        .header("Authorization", &ci)
        .header("Content-Type", MANIFEST)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("NoPushForCi"), "{message}");
    let sim = r
        .env
        .ecrl(&["auth", "simulate", "ci", "ecr:PutImage", "team/app"]);
    assert_eq!(sim.status.code(), Some(1));
    assert!(
        stdout(&sim).contains("DENY") && stdout(&sim).contains("registry policy"),
        "{}",
        stdout(&sim)
    );
    // An action without its service prefix is no action: refused, not "implicit DENY".
    let sim = r
        .env
        .ecrl(&["auth", "simulate", "ci", "PutImage", "team/app"]);
    assert_eq!(sim.status.code(), Some(2));
    assert!(
        stderr(&sim).contains("\"PutImage\" is not an action ecrl knows")
            && stderr(&sim).contains("ecr:PutImage")
            && stdout(&sim).is_empty(),
        "{}",
        stderr(&sim)
    );
    // Pulls still work; removing the deny brings pushes back.
    assert_eq!(
        r.get("/v2/team/app/tags/list", Some(&ci)).status(),
        StatusCode::OK
    );
    r.env.ecrl_ok(&["auth", "registry-policy", "delete"]);
    assert_eq!(r.push("team/app", "4", &ci), StatusCode::CREATED);

    // Detaching the identity policy takes pulls away from other repositories' reach.
    r.env
        .ecrl_ok(&["auth", "policy", "detach", "ci", "pull-team"]);
    assert_eq!(
        r.get("/v2/team/other/tags/list", Some(&ci)).status(),
        StatusCode::FORBIDDEN
    );
}

#[test]
fn malformed_policies_are_refused_with_their_paths() {
    let r = Registry::new("none");
    r.user("ci");
    let owner = basic("AWS", &r.login_password(None));
    assert_eq!(r.push("team/app", "1", &owner), StatusCode::CREATED);
    let bad = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}, {"Efect": "Deny"}]});
    let out = r.env.ecrl(&[
        "auth",
        "policy",
        "attach",
        "ci",
        &policy_file(&r, "bad", &bad),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Statement[1].Efect"),
        "{}",
        stderr(&out)
    );
    let list = r
        .env
        .ecrl_ok(&["auth", "policy", "list", "ci", "--output", "json"]);
    assert!(!list.contains("bad"), "nothing stored: {list}");
    // A repository policy must name principals.
    let no_principal = serde_json::json!({"Statement": [{"Effect": "Allow", "Action": "ecr:*"}]});
    let out = r.env.ecrl(&[
        "repo",
        "policy",
        "set",
        "team/app",
        "-f",
        &policy_file(&r, "np", &no_principal),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Principal"), "{}", stderr(&out));
    let out = r.env.ecrl(&["repo", "policy", "get", "team/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no repository policy"),
        "{}",
        stderr(&out)
    );
    let out = r.env.ecrl(&[
        "repo",
        "policy",
        "set",
        "team/app",
        "-f",
        &policy_file(&r, "nj", &Value::String("not a policy".into())),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn attach_and_detach_both_confirm_unless_quiet() {
    let r = Registry::new("none");
    r.user("ci");
    let pull = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "*"}]});
    let file = policy_file(&r, "pull", &pull);
    let attached = r.env.ecrl_ok(&["auth", "policy", "attach", "ci", &file]);
    assert_eq!(attached, "policy pull attached to user ci\n");
    let out = r.env.ecrl(&["auth", "policy", "detach", "ci", "pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        format!("{}{}", stdout(&out), stderr(&out)),
        "policy pull detached from user ci\n"
    );
    // -q: nothing but results, and detaching has none.
    r.env.ecrl_ok(&["auth", "policy", "attach", "ci", &file]);
    let out = r
        .env
        .ecrl(&["auth", "policy", "detach", "ci", "pull", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
    let list = r
        .env
        .ecrl_ok(&["auth", "policy", "list", "ci", "--output", "json"]);
    assert!(!list.contains("pull"), "{list}");
}

/// A policy as AWS's documentation and consoles write them: its own account and region.
fn copied_from_aws() -> Value {
    serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "PullApp", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
         "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/team/app"},
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}]})
}

#[test]
fn policies_naming_another_account_or_region_warn_until_the_config_says_so() {
    let env = Env::with_anonymous("none");
    let daemon = env.spawn_daemon(&[]);
    env.ecrl_ok(&["auth", "user", "create", "ci"]);
    env.ecrl_ok(&["repo", "create", "team/app"]);
    let path = env.path().join("pull-app.json");
    std::fs::write(&path, copied_from_aws().to_string()).unwrap();
    let file = path.to_str().unwrap();

    let out = env.ecrl(&["auth", "policy", "attach", "ci", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "policy pull-app attached to user ci\n");
    let warning = stderr(&out);
    assert_eq!(warning.lines().count(), 1, "{warning}");
    for needle in [
        "warning: Statement[0].Resource: statement \"PullApp\": \
         \"arn:aws:ecr:us-east-1:123456789012:repository/team/app\" can never match here \
         (its region is \"us-east-1\", not \"local\")",
        "ecrl's ARNs are arn:aws:ecr:local:",
        ":repository/NAME",
        "set region and account_id in ecrl's config file",
    ] {
        assert!(warning.contains(needle), "{needle:?} in {warning}");
    }
    // The same words in --output json, for scripts.
    let json: Value = serde_json::from_str(
        &env.ecrl_ok(&["auth", "policy", "attach", "ci", file, "--output", "json"]),
    )
    .unwrap();
    assert_eq!(json["Warnings"].as_array().unwrap().len(), 1, "{json}");
    // What the warning is about: the statement allows nothing here.
    let out = env.ecrl(&["auth", "simulate", "ci", "ecr:BatchGetImage", "team/app"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let repo_policy = env.path().join("repo.json");
    std::fs::write(
        &repo_policy,
        serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "CrossAccount", "Effect": "Allow", "Principal": "*",
            "Action": "ecr:BatchGetImage",
            "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/team/app"}]})
        .to_string(),
    )
    .unwrap();
    let out = env.ecrl(&[
        "repo",
        "policy",
        "set",
        "team/app",
        "-f",
        repo_policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: Statement[0].Resource: statement \"CrossAccount\""),
        "{}",
        stderr(&out)
    );
    drop(daemon);

    // The policy's own region and account in the config file: its ARNs are ecrl's now.
    let config = env.write_config("region: us-east-1\naccount_id: '123456789012'\n");
    let _daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
    let out = env.ecrl(&["auth", "policy", "attach", "ci", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let repo: Value =
        serde_json::from_str(&env.ecrl_ok(&["repo", "describe", "team/app", "--output", "json"]))
            .unwrap();
    let text = repo.to_string();
    assert!(
        text.contains("arn:aws:ecr:us-east-1:123456789012:repository/team/app"),
        "{text}"
    );
    let decision = env.ecrl_ok(&["auth", "simulate", "ci", "ecr:BatchGetImage", "team/app"]);
    assert!(
        decision.starts_with("ALLOW by statement \"PullApp\""),
        "{decision}"
    );
}

#[test]
fn an_account_id_that_is_not_twelve_digits_stops_the_daemon_with_a_clear_error() {
    let env = Env::new();
    let config = env.write_config("account_id: 12345\n");
    let out = env.ecrl(&["daemon", "start", "--config", config.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("account_id \"12345\" is not an AWS account id: 12 digits"),
        "{err}"
    );
}
