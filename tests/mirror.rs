//! Mirroring against real remotes: CNCF distribution (Debian's docker-registry) over HTTPS
//! with a CA the test makes and htpasswd Basic auth, and a second ecrld that requires
//! credentials (the Docker token flow). `ecrl login`, `ecrl mirror sync` in every direction,
//! jobs, replication, and the faults users meet: unknown hosts, refused connections,
//! untrusted certificates, wrong passwords, missing images, lying remotes, remotes and
//! ecrld killed midway.

mod common;

use common::registry::{
    build_busybox_image, localhost, registry_address, require_docker, require_skopeo, run, run_ok,
    sha256_digest, unique, DockerImages,
};
use common::remotes::{oci_layout_image, two_platform_index, DistOpts, Distribution, PrivateEcrld};
use common::{stderr, stdout, Daemon, Env};
use std::path::Path;
use std::time::{Duration, Instant};

/// An ecrld under test (anonymous registry access, so skopeo pushes without credentials),
/// configured to trust a distribution registry's CA and to retry replication quickly.
struct Local {
    env: Env,
    daemon: Daemon,
    /// `localhost:PORT`, plain HTTP.
    host: String,
}

fn config_for(remotes: &[&Distribution]) -> String {
    let mut yaml =
        String::from("mirror:\n  replication:\n    retry_delay: 1s\n    max_attempts: 4\n");
    if !remotes.is_empty() {
        yaml.push_str("  registries:\n");
        for r in remotes {
            if let Some(ca) = r.ca_path() {
                yaml.push_str(&format!(
                    "    \"{}\":\n      ca_file: {}\n",
                    r.host(),
                    ca.display()
                ));
            }
        }
    }
    yaml
}

impl Local {
    fn start(remotes: &[&Distribution]) -> Local {
        let env = Env::new();
        let config = env.write_config(&config_for(remotes));
        let daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
        let host = localhost(&registry_address(&env));
        Local { env, daemon, host }
    }

    fn restart(&mut self) {
        let config = self.env.path().join("config.yaml");
        self.daemon = self
            .env
            .spawn_daemon(&["--config", config.to_str().unwrap()]);
        self.host = localhost(&registry_address(&self.env));
    }

    /// Pushes an OCI layout into this ecrld with skopeo (`--all`: indexes whole).
    fn push(&self, layout: &Path, image: &str) {
        let src = format!("oci:{}", layout.display());
        let dst = format!("docker://{}/{image}", self.host);
        run_ok(
            "skopeo",
            &["copy", "--all", "--dest-tls-verify=false", &src, &dst],
        );
    }

    fn sync(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["mirror", "sync"];
        all.extend_from_slice(args);
        self.env.ecrl(&all)
    }

    /// A sync that must succeed; its JSON result.
    fn sync_ok(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.sync(&all);
        assert!(
            out.status.success(),
            "ecrl mirror sync {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        serde_json::from_str(&stdout(&out)).expect("sync prints JSON")
    }

    /// The digest of `repo:tag` here.
    fn digest(&self, image: &str) -> Option<String> {
        let (repo, tag) = image.split_once(':').unwrap();
        let out = self.env.ecrl(&[
            "image",
            "describe",
            &format!("{repo}:{tag}"),
            "--output",
            "json",
        ]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["imageDetails"][0]["imageDigest"]
            .as_str()
            .map(str::to_string)
    }

    fn replication_status(&self, image: &str) -> serde_json::Value {
        let out = self
            .env
            .ecrl_ok(&["mirror", "replication", "status", image, "--output", "json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// Waits until the image's replication to every destination is `want`.
    fn wait_replication(&self, image: &str, want: &str, timeout: Duration) -> serde_json::Value {
        let until = Instant::now() + timeout;
        loop {
            let status = self.replication_status(image);
            let statuses = status["replicationStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !statuses.is_empty() && statuses.iter().all(|s| s["status"] == want) {
                return status;
            }
            assert!(
                Instant::now() < until,
                "replication of {image} is not {want} after {timeout:?}: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn set_rules(&self, rules: &str) {
        let path = self.env.path().join("rules.json");
        std::fs::write(&path, rules).unwrap();
        self.env
            .ecrl_ok(&["mirror", "replication", "set", "-f", path.to_str().unwrap()]);
    }
}

/// The digest of a remote image, from its raw manifest (indexes included).
fn remote_digest(flags: &[String], reference: &str) -> Option<String> {
    let mut args: Vec<&str> = vec!["inspect", "--raw"];
    args.extend(flags.iter().map(String::as_str));
    args.push(reference);
    let out = run("skopeo", &args);
    out.status.success().then(|| sha256_digest(&out.stdout))
}

fn login(local: &Local, registry: &str, user: &str, password: &str) -> std::process::Output {
    let mut command = local
        .env
        .ecrl_command(&["login", registry, "-u", user, "--password-stdin"]);
    command.stdin(std::process::Stdio::piped());
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ecrl login");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn image_of(dir: &Path, seed: &str, size: usize) -> (std::path::PathBuf, String) {
    let mut bytes = seed.as_bytes().to_vec();
    bytes.resize(size, 7);
    oci_layout_image(dir, &[bytes])
}

/// Seeded bytes that do not compress (so a big layer stays big).
fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

#[test]
fn login_is_checked_against_the_registry_kept_privately_listed_and_forgotten() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let local = Local::start(&[&a]);

    let wrong = login(&local, &a.host(), a.user(), "not-the-password");
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("refused the credentials of tester"),
        "{}",
        stderr(&wrong)
    );
    let listed = local.env.ecrl_ok(&["login", "--list", "--output", "json"]);
    assert!(
        !listed.contains(&a.host()),
        "a wrong password is not kept: {listed}"
    );

    let right = login(&local, &a.host(), a.user(), a.password());
    assert!(right.status.success(), "{}", stderr(&right));
    let listed = local.env.ecrl_ok(&["login", "--list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["logins"][0]["registry"], a.host().as_str());
    assert_eq!(v["logins"][0]["username"], "tester");
    assert!(
        !listed.contains(a.password()),
        "the list shows no secret: {listed}"
    );
    // No keyring on this machine: the password sits in a file only its owner may read.
    let file = local.env.path().join("home/.config/ecrl/logins.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let log = daemon_log(&local.env);
    assert!(
        !log.contains(a.password()),
        "the daemon's log shows no secret"
    );

    // Logged in, a sync reaches the private registry.
    let (layout, _) = image_of(dir.path(), "login", 1000);
    local.push(&layout, "team/app:1");
    local.sync_ok(&["team/app:1", &format!("{}/team/app:1", a.host())]);

    local.env.ecrl_ok(&["logout", &a.host()]);
    let listed = local.env.ecrl_ok(&["login", "--list", "--output", "json"]);
    assert!(!listed.contains(&a.host()), "{listed}");
    let out = local.sync(&["team/app:1", &format!("{}/team/app:2", a.host())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("log in first") || stderr(&out).contains("log in first"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = local.env.ecrl(&["logout", &a.host()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds no login"), "{}", stderr(&out));
}

#[test]
fn an_untrusted_certificate_names_the_ca_option_and_the_ca_file_fixes_it() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    // This ecrld is not told about the test CA.
    let local = Local::start(&[]);
    let out = login(&local, &a.host(), a.user(), a.password());
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("is not trusted"), "{e}");
    assert!(
        e.contains(&format!("mirror.registries.\"{}\".ca_file", a.host())),
        "{e}"
    );
    assert!(e.contains("certs.d"), "{e}");

    // docker's layout works without a restart: certs.d/HOST/ca.crt under ecrl's config dir.
    let certs = local
        .env
        .path()
        .join(format!("home/.config/ecrl/certs.d/{}", a.host()));
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(a.ca_path().unwrap(), certs.join("ca.crt")).unwrap();
    let out = login(&local, &a.host(), a.user(), a.password());
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sync_round_trips_with_distribution_over_https_and_docker_runs_the_result() {
    require_docker();
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let local = Local::start(&[&a]);
    assert!(login(&local, &a.host(), a.user(), a.password())
        .status
        .success());

    // A runnable image: built by docker, pushed to ecrl, synced out to A and back in.
    let images = DockerImages::new();
    let id = unique("mirror");
    let tag = format!("ecrl-test/mirror:{id}");
    build_busybox_image(&images, &tag, &id);
    let pushed = format!("{}/team/busybox:1", local.host);
    images.track(&pushed);
    run_ok("docker", &["tag", &tag, &pushed]);
    run_ok("docker", &["push", "-q", &pushed]);
    let here = local.digest("team/busybox:1").expect("pushed");

    let out = local.sync_ok(&["team/busybox:1", &format!("{}/mirror/busybox", a.host())]);
    assert_eq!(out["copied"], 1, "{out}");
    assert!(
        out["images"][0]["blobsCopied"].as_u64().unwrap() >= 2,
        "{out}"
    );
    let there = remote_digest(
        &a.skopeo_flags(),
        &format!("docker://{}/mirror/busybox:1", a.host()),
    );
    assert_eq!(there.as_deref(), Some(here.as_str()), "same digest on A");

    // Again: nothing sent.
    let again = local.sync_ok(&["team/busybox:1", &format!("{}/mirror/busybox", a.host())]);
    assert_eq!(again["unchanged"], 1, "{again}");
    assert_eq!(again["images"][0]["blobsCopied"], 0, "{again}");

    // A → ecrl, then docker runs it from ecrl.
    let back = local.sync_ok(&[
        &format!("{}/mirror/busybox:1", a.host()),
        "back/busybox:run",
    ]);
    assert_eq!(back["images"][0]["imageDigest"], here.as_str(), "{back}");
    let reference = format!("{}/back/busybox:run", local.host);
    images.track(&reference);
    let _ = run("docker", &["rmi", "-f", &pushed]);
    let printed = run_ok(
        "docker",
        &[
            "run",
            "--rm",
            "--pull",
            "always",
            &reference,
            "cat",
            "/etc/ecrl-test-id",
        ],
    );
    assert_eq!(printed.trim(), id);
}

#[test]
fn a_two_platform_index_keeps_its_digest_and_platform_takes_one_manifest() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let local = Local::start(&[&a]);
    assert!(login(&local, &a.host(), a.user(), a.password())
        .status
        .success());
    let (layout, index, children) = two_platform_index(dir.path());
    a.push_layout(&layout, "multi/app:1");

    let out = local.sync_ok(&[&format!("{}/multi/app:1", a.host()), "multi/app"]);
    assert_eq!(out["images"][0]["imageDigest"], index.as_str(), "{out}");
    assert_eq!(local.digest("multi/app:1").as_deref(), Some(index.as_str()));
    // Both platforms are here: skopeo reads the arm64 image from ecrl.
    let arm = remote_digest(
        &[
            "--tls-verify=false".to_string(),
            "--override-arch=arm64".to_string(),
        ],
        &format!("docker://{}/multi/app@{}", local.host, children[1]),
    );
    assert_eq!(arm.as_deref(), Some(children[1].as_str()));

    let one = local.sync_ok(&[
        "--platform",
        "linux/arm64",
        &format!("{}/multi/app:1", a.host()),
        "multi/arm",
    ]);
    assert_eq!(
        one["images"][0]["imageDigest"],
        children[1].as_str(),
        "{one}"
    );
    assert_eq!(
        local.digest("multi/arm:1").as_deref(),
        Some(children[1].as_str())
    );

    let missing = local.sync(&[
        "--platform",
        "linux/s390x",
        &format!("{}/multi/app:1", a.host()),
        "multi/none",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stdout(&missing).contains("no linux/s390x image"),
        "{}",
        stdout(&missing)
    );
    let bad = local.sync(&["--platform", "linux", "multi/app:1", "x.example/y"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("expected os/arch"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn tags_regexes_dry_runs_and_a_remote_to_remote_copy_through_the_token_flow() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let b = PrivateEcrld::start();
    let local = Local::start(&[&a]);
    assert!(login(&local, &a.host(), a.user(), a.password())
        .status
        .success());
    let out = login(&local, &b.host, &b.user, &b.password);
    assert!(out.status.success(), "{}", stderr(&out));

    let (layout, _) = image_of(dir.path(), "tags", 5000);
    for tag in ["v1", "v2", "dev"] {
        a.push_layout(&layout, &format!("team/tags:{tag}"));
    }
    let remote = format!("{}/team/tags", a.host());
    let dry = local.sync_ok(&["--dry-run", "--tags", "v[0-9]+", &remote, "team/tags"]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["images"].as_array().unwrap().len(), 2, "{dry}");
    assert!(dry["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "WOULD_COPY"));
    assert!(
        local.digest("team/tags:v1").is_none(),
        "a dry run copies nothing"
    );

    let some = local.sync_ok(&["--tags", "v[0-9]+", &remote, "team/tags"]);
    assert_eq!(some["copied"], 2, "{some}");
    assert!(local.digest("team/tags:dev").is_none());
    let all = local.sync_ok(&["--all-tags", &remote, "team/tags"]);
    assert_eq!(
        (all["copied"].as_u64(), all["unchanged"].as_u64()),
        (Some(1), Some(2)),
        "{all}"
    );

    // A → B, remote to remote: B wants a token for every request.
    let to_b = local.sync_ok(&["--all-tags", &remote, &format!("{}/copied/tags", b.host)]);
    assert_eq!(to_b["copied"], 3, "{to_b}");
    let digest = local.digest("team/tags:v1").unwrap();
    let on_b = remote_digest(
        &b.skopeo_flags(),
        &format!("docker://{}/copied/tags:v1", b.host),
    );
    assert_eq!(on_b.as_deref(), Some(digest.as_str()));

    let bad = local.sync(&["--tags", "v[", &remote, "team/tags"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("not a regular expression"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn remotes_that_cannot_be_used_fail_with_what_to_do() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let local = Local::start(&[&a]);
    let (layout, _) = image_of(dir.path(), "faults", 1000);
    local.push(&layout, "team/app:1");

    // Unknown host, refused connection.
    let out = local.sync(&["team/app:1", "no-such-host.invalid:5000/x/y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach no-such-host.invalid:5000"),
        "{}",
        stderr(&out)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = local.sync(&["team/app:1", &format!("{closed}/x/y")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    // Not logged in; then a repository and a tag A does not have.
    let out = local.sync(&[&format!("{}/none/here:1", a.host()), "x/y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("ecrl login"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(login(&local, &a.host(), a.user(), a.password())
        .status
        .success());
    let out = local.sync(&[&format!("{}/none/here:1", a.host()), "x/y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("has no manifest 1") || stdout(&out).contains("no image"),
        "{}",
        stdout(&out)
    );
    let out = local.sync(&["--all-tags", &format!("{}/none/here", a.host()), "x/y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    // Bad requests change nothing.
    for (args, why) in [
        (
            vec!["team/app:1", "team/other"],
            "both ends are this registry",
        ),
        (
            vec![
                "team/app:1",
                &*format!("{}/x@sha256:{}", a.host(), "a".repeat(64)),
            ],
            "cannot name a digest",
        ),
        (vec!["--jobs", "0", "team/app:1", "x.example/y"], "--jobs"),
        (vec!["no/such:1", "x.example/y"], "does not exist"),
    ] {
        let out = local.sync(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
    assert!(local.digest("x/y:1").is_none());
}

#[test]
fn a_remote_sending_other_bytes_than_its_digest_stores_nothing() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&[]);
    let layer = random_bytes(300_000, 1);
    let (layout, _) = oci_layout_image(dir.path(), &[layer]);
    a.push_layout(&layout, "lying/app:1");
    // Flip one byte of every blob of size > 1000 in distribution's store: it serves files
    // as they are.
    let mut flipped = 0;
    for entry in walk(&a.storage().join("docker/registry/v2/blobs")) {
        if entry.file_name().is_some_and(|n| n == "data")
            && std::fs::metadata(&entry).unwrap().len() > 100_000
        {
            let mut bytes = std::fs::read(&entry).unwrap();
            bytes[5000] ^= 0xff;
            std::fs::write(&entry, bytes).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1);
    let out = local.sync(&[
        "--output",
        "json",
        &format!("{}/lying/app:1", a.host()),
        "lying/app",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let reason = result["images"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("nothing was stored"), "{result}");
    assert!(local.digest("lying/app:1").is_none());
    let uploads = local.env.data_dir().join("uploads");
    let left: Vec<_> = walk(&uploads);
    assert!(left.is_empty(), "upload files left: {left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn replication_sends_every_push_retries_while_the_remote_is_down_and_reports_failures() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let local = Local::start(&[&a]);
    assert!(login(&local, &a.host(), a.user(), a.password())
        .status
        .success());
    local.set_rules(&format!(
        r#"{{"rules": [{{"destinations": [{{"registry": "{}", "repositoryPrefix": "replica"}}],
            "repositoryFilters": [{{"filter": "team/", "filterType": "PREFIX_MATCH"}}]}}]}}"#,
        a.host()
    ));
    let rules = local
        .env
        .ecrl_ok(&["mirror", "replication", "get", "--output", "json"]);
    assert!(rules.contains("PREFIX_MATCH"), "{rules}");

    let (layout, digest) = image_of(dir.path(), "replicated", 3000);
    local.push(&layout, "team/app:1");
    local.push(&layout, "other/app:1");
    let status = local.wait_replication("team/app:1", "COMPLETE", Duration::from_secs(30));
    assert_eq!(
        status["replicationStatuses"][0]["repositoryName"],
        "replica/team/app"
    );
    let here = local.digest("team/app:1").unwrap();
    let there = remote_digest(
        &a.skopeo_flags(),
        &format!("docker://{}/replica/team/app:1", a.host()),
    );
    assert_eq!(there.as_deref(), Some(here.as_str()));
    let _ = digest;
    // Another repository: no rule, no replication.
    let other = local.replication_status("other/app:1");
    assert_eq!(
        other["replicationStatuses"].as_array().map(Vec::len),
        Some(0),
        "{other}"
    );
    // `image describe` says it too.
    let described = local.env.ecrl_ok(&["image", "describe", "team/app:1"]);
    assert!(
        described.contains("replica/team/app COMPLETE"),
        "{described}"
    );

    // The remote goes away: the next push waits, retried, and goes when it is back.
    a.kill();
    let (layout2, _) = image_of(dir.path(), "while-down", 4000);
    local.push(&layout2, "team/app:2");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = local.replication_status("team/app:2");
        let d = &s["replicationStatuses"][0];
        if d["status"] == "IN_PROGRESS" && d["failureCode"] == "UNREACHABLE" {
            break;
        }
        assert!(Instant::now() < until, "no failed attempt recorded: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    a.restart();
    local.wait_replication("team/app:2", "COMPLETE", Duration::from_secs(40));

    // A destination that refuses for good: FAILED with the reason, no endless retries.
    local.set_rules(r#"{"rules": [{"destinations": [{"registry": "127.0.0.1:9"}]}]}"#);
    let (layout3, _) = image_of(dir.path(), "refused", 5000);
    local.push(&layout3, "team/app:3");
    let failed = local.wait_replication("team/app:3", "FAILED", Duration::from_secs(60));
    let d = &failed["replicationStatuses"][0];
    assert_eq!(d["attempts"], 4, "{failed}");
    assert!(
        d["failureReason"]
            .as_str()
            .unwrap()
            .contains("cannot reach 127.0.0.1:9"),
        "{failed}"
    );

    // Invalid rules are refused with their path; the rules in force stay.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "rules:\n  - destinations:\n      - registry: \"not a host\"\n",
    )
    .unwrap();
    let out = local
        .env
        .ecrl(&["mirror", "replication", "set", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rules[0].destinations[0].registry"),
        "{}",
        stderr(&out)
    );
    let rules = local
        .env
        .ecrl_ok(&["mirror", "replication", "get", "--output", "json"]);
    assert!(rules.contains("127.0.0.1:9"), "{rules}");
    local.env.ecrl_ok(&["mirror", "replication", "delete"]);
    let rules = local
        .env
        .ecrl_ok(&["mirror", "replication", "get", "--output", "json"]);
    assert!(!rules.contains("127.0.0.1:9"), "{rules}");
}

#[test]
fn the_replication_queue_survives_ecrld_being_killed() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Distribution::start(dir.path(), DistOpts::plain());
    let mut local = Local::start(&[]);
    local.set_rules(&format!(
        r#"{{"rules": [{{"destinations": [{{"registry": "{}"}}]}}]}}"#,
        a.host()
    ));
    a.kill();
    let (layout, _) = image_of(dir.path(), "queued", 2000);
    local.push(&layout, "queued/app:1");
    let s = local.replication_status("queued/app:1");
    assert_eq!(s["replicationStatuses"][0]["status"], "IN_PROGRESS", "{s}");
    // SIGKILL: nothing gets to finish or record anything.
    local.daemon.signal(9);
    local.daemon.wait(Duration::from_secs(10));
    a.restart();
    local.restart();
    local.wait_replication("queued/app:1", "COMPLETE", Duration::from_secs(30));
    let here = local.digest("queued/app:1").unwrap();
    let there = remote_digest(
        &a.skopeo_flags(),
        &format!("docker://{}/queued/app:1", a.host()),
    );
    assert_eq!(there.as_deref(), Some(here.as_str()));
}

#[test]
fn a_remote_killed_in_the_middle_of_a_big_blob_is_finished_by_a_rerun_and_a_retry() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&[]);
    let big = random_bytes(256 << 20, 2);
    let (layout, _) = oci_layout_image(dir.path(), &[big]);
    local.push(&layout, "big/app:1");
    let here = local.digest("big/app:1").unwrap();

    // Ctrl-C while the blob streams: the sync stops cleanly (130); run again, it continues
    // the session the remote holds instead of sending the blob from its start.
    let sync = local
        .env
        .ecrl_command(&[
            "mirror",
            "sync",
            "big/app:1",
            &format!("{}/resumed/app", a.host()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the first 32 MiB piece.
    wait_for_upload(&a, 40 << 20, Duration::from_secs(30));
    unsafe { libc::kill(sync.id() as i32, libc::SIGINT) };
    let stopped = sync.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    assert!(
        stderr(&stopped).contains("run it again"),
        "{}",
        stderr(&stopped)
    );
    local.sync_ok(&["big/app:1", &format!("{}/resumed/app", a.host())]);
    assert!(
        daemon_log(&local.env).contains("resuming an upload the remote already holds part of"),
        "the second run sent the blob from its start:\n{}",
        daemon_log(&local.env)
    );
    let there = remote_digest(
        &a.skopeo_flags(),
        &format!("docker://{}/resumed/app:1", a.host()),
    );
    assert_eq!(there.as_deref(), Some(here.as_str()));

    // ecrl → K, K killed while the blob streams: the sync fails or finishes by itself
    // after the restart (it retries a broken blob); a rerun finishes either way. (A fresh
    // registry: one that holds the blob in another repository gets it mounted.)
    let kill_dir = dir.path().join("killed");
    std::fs::create_dir_all(&kill_dir).unwrap();
    let mut k = Distribution::start(&kill_dir, DistOpts::plain());
    let mut sync = local
        .env
        .ecrl_command(&[
            "mirror",
            "sync",
            "big/app:1",
            &format!("{}/big/app", k.host()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_upload(&k, 8 << 20, Duration::from_secs(30));
    k.kill();
    std::thread::sleep(Duration::from_millis(300));
    k.restart();
    let _ = sync.wait();
    local.sync_ok(&["big/app:1", &format!("{}/big/app", k.host())]);
    let there = remote_digest(
        &k.skopeo_flags(),
        &format!("docker://{}/big/app:1", k.host()),
    );
    assert_eq!(there.as_deref(), Some(here.as_str()));

    // A → ecrl, A killed midway: nothing half-written stays in ecrl. (A fresh ecrld: this
    // one holds the blob already and would only link it.)
    let fresh = Local::start(&[]);
    let sync = fresh
        .env
        .ecrl_command(&[
            "mirror",
            "sync",
            &format!("{}/resumed/app:1", a.host()),
            "big/back",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let uploads = fresh.env.data_dir().join("uploads");
    let until = Instant::now() + Duration::from_secs(30);
    while !walk(&uploads)
        .iter()
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 8 << 20))
    {
        assert!(Instant::now() < until, "no upload began in ecrld");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill();
    let failed = sync.wait_with_output().unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(fresh.digest("big/back:1").is_none());
    assert!(walk(&uploads).is_empty(), "nothing half-written stays");
    a.restart();
    let out = fresh.sync_ok(&[&format!("{}/resumed/app:1", a.host()), "big/back"]);
    assert_eq!(out["images"][0]["imageDigest"], here.as_str(), "{out}");
    assert!(walk(&uploads).is_empty());

    // Replication: the same fault, retried until it is done (to a registry that does not
    // hold the blob yet, or it would be mounted there).
    let replica_dir = dir.path().join("replica");
    std::fs::create_dir_all(&replica_dir).unwrap();
    let mut c = Distribution::start(&replica_dir, DistOpts::plain());
    local.set_rules(&format!(
        r#"{{"rules": [{{"destinations": [{{"registry": "{}", "repositoryPrefix": "rep"}}]}}]}}"#,
        c.host()
    ));
    local.env.ecrl_ok(&["image", "tag", "big/app:1", "2"]);
    wait_for_upload(&c, 8 << 20, Duration::from_secs(30));
    c.kill();
    std::thread::sleep(Duration::from_millis(300));
    c.restart();
    local.wait_replication("big/app:2", "COMPLETE", Duration::from_secs(90));
    let there = remote_digest(
        &c.skopeo_flags(),
        &format!("docker://{}/rep/big/app:2", c.host()),
    );
    assert_eq!(there.as_deref(), Some(here.as_str()));
}

fn daemon_log(env: &Env) -> String {
    std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ecrld-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Waits until distribution holds an upload in progress with over `bytes` in it.
fn wait_for_upload(a: &Distribution, bytes: u64, timeout: Duration) {
    let until = Instant::now() + timeout;
    loop {
        let busy = walk(&a.storage().join("docker/registry/v2/repositories"))
            .iter()
            .any(|p| {
                p.to_string_lossy().contains("/_uploads/")
                    && p.file_name().is_some_and(|n| n == "data")
                    && std::fs::metadata(p)
                        .map(|m| m.len() > bytes)
                        .unwrap_or(false)
            });
        if busy {
            return;
        }
        assert!(Instant::now() < until, "no upload began on the remote");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn jobs_run_on_their_schedule_survive_a_restart_and_are_refused_when_bad() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let mut local = Local::start(&[]);
    let (layout, _) = image_of(dir.path(), "job", 1000);
    local.push(&layout, "team/app:1");

    let out = local.env.ecrl_ok(&[
        "mirror",
        "sync",
        "--all-tags",
        "--every",
        "1h",
        "team/app",
        &format!("{}/team/app", a.host()),
        "--output",
        "json",
    ]);
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["everySeconds"], 3600);
    // Its first run is now.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs: serde_json::Value =
            serde_json::from_str(&local.env.ecrl_ok(&["mirror", "jobs", "--output", "json"]))
                .unwrap();
        if jobs["jobs"][0]["lastResult"] == "SUCCEEDED" {
            assert!(
                jobs["jobs"][0]["lastSummary"]
                    .as_str()
                    .unwrap()
                    .contains("1 copied"),
                "{jobs}"
            );
            break;
        }
        assert!(Instant::now() < until, "the job did not run: {jobs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(remote_digest(
        &a.skopeo_flags(),
        &format!("docker://{}/team/app:1", a.host())
    )
    .is_some());

    local.env.ecrl_ok(&["daemon", "stop", "--wait", "15"]);
    local.restart();
    let jobs = local.env.ecrl_ok(&["mirror", "jobs"]);
    assert!(jobs.contains(&id) && jobs.contains("SUCCEEDED"), "{jobs}");
    local.push(&layout, "team/app:2");
    let ran = local
        .env
        .ecrl_ok(&["mirror", "job", "run", &id, "--output", "json"]);
    let ran: serde_json::Value = serde_json::from_str(&ran).unwrap();
    assert_eq!(
        (ran["copied"].as_u64(), ran["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{ran}"
    );

    for (args, why) in [
        (vec!["--every", "10s"], "at most once a minute"),
        (vec!["--every", "soon"], "expected a duration"),
    ] {
        let mut all = vec!["mirror", "sync"];
        all.extend(args.iter().copied());
        let dst = format!("{}/x", a.host());
        all.extend(["team/app:1", dst.as_str()]);
        let out = local.env.ecrl(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    local.env.ecrl_ok(&["mirror", "job", "rm", &id]);
    let out = local.env.ecrl(&["mirror", "job", "run", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no mirror job"), "{}", stderr(&out));
    assert!(!local.env.ecrl_ok(&["mirror", "jobs"]).contains(&id));
}

#[test]
fn docker_s_credentials_and_credential_helpers_are_used() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let env = Env::new();
    let config = env.write_config(&config_for(&[&a]));
    // A credential helper on the daemon's PATH, as docker-credential-ecr-login would be.
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-ecrltest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\nprintf '{{\"Username\":\"%s\",\"Secret\":\"%s\"}}' {} {}\n",
            a.user(),
            a.password()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker_dir = env.path().join("home/.docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "ecrltest"}}}}"#, a.host()),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _daemon =
        env.spawn_daemon_with(&["--config", config.to_str().unwrap()], &[("PATH", &path)]);
    let host = localhost(&registry_address(&env));
    let (layout, _) = image_of(dir.path(), "helper", 1000);
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}", layout.display()),
            &format!("docker://{host}/team/app:1"),
        ],
    );
    let out = env.ecrl(&[
        "mirror",
        "sync",
        "team/app:1",
        &format!("{}/helped/app", a.host()),
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // An auths entry works as well (base64 of user:password).
    use base64::Engine as _;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", a.user(), a.password()));
    std::fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, a.host()),
    )
    .unwrap();
    // Connected remotes are reused for a while: a new repository still authenticates anew
    // only when asked, so this checks the file via a fresh daemon.
    drop(_daemon);
    let _daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
    let host = localhost(&registry_address(&env));
    let _ = host;
    let out = env.ecrl(&[
        "mirror",
        "sync",
        "team/app:1",
        &format!("{}/authed/app", a.host()),
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// A registry that answers what a test tells it to: a hostile remote, to check that what a
/// remote sends is bounded. `route` gets the method and path and gives the status, the
/// content type and the body (a HEAD gets the headers only).
struct Hostile {
    addr: std::net::SocketAddr,
}

type Route = fn(&str, &str) -> (u16, &'static str, Vec<u8>);

impl Hostile {
    fn start(route: Route) -> Hostile {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    use std::io::{BufRead, BufReader, Write};
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    let mut parts = first.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let (status, content_type, body) = route(&method, &path);
                    let digest = sha256_digest(&body);
                    // `redirect:TARGET` answers with a Location, as registries on object
                    // storage do for blobs.
                    let extra = match content_type.strip_prefix("redirect:") {
                        Some(target) => format!("Location: {target}\r\n"),
                        None => String::new(),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n\
                         Content-Length: {}\r\nDocker-Content-Digest: {digest}\r\n\
                         {extra}Connection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    if method != "HEAD" {
                        let _ = stream.write_all(&body);
                    }
                });
            }
        });
        Hostile { addr }
    }
}

/// An image whose one layer is said to be 1000 bytes (of `LAYER_DIGEST`), and its config.
const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

fn hostile_manifest(layer_size: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(CONFIG), "size": CONFIG.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_digest(&vec![1u8; 1000]), "size": layer_size}],
    }))
    .unwrap()
}

#[test]
fn what_a_hostile_remote_sends_is_bounded_and_nothing_of_it_is_kept() {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    let remote = Hostile::start(|method, path| {
        let config = format!("/v2/evil/app/blobs/{}", sha256_digest(CONFIG));
        match (method, path) {
            (_, "/v2/") => (200, "application/json", b"{}".to_vec()),
            // A manifest over the 4 MiB every registry may refuse.
            (_, p) if p.starts_with("/v2/evil/big/manifests/") => {
                let mut m = hostile_manifest(1000);
                let pad = format!(",\"annotations\":{{\"x\":\"{}\"}}}}", "a".repeat(5 << 20));
                m.pop();
                m.extend_from_slice(pad.as_bytes());
                (200, OCI, m)
            }
            (_, p) if p.starts_with("/v2/evil/app/manifests/") => {
                (200, OCI, hostile_manifest(1000))
            }
            (_, p) if p == config => (200, "application/octet-stream", CONFIG.to_vec()),
            // An image whose blobs are served elsewhere: the registry redirects.
            (_, p) if p.starts_with("/v2/evil/moved/manifests/") => {
                (200, OCI, hostile_manifest(1000))
            }
            ("GET", p) if p.starts_with("/v2/evil/moved/blobs/") => {
                if p.ends_with(&sha256_digest(CONFIG)) {
                    (307, "redirect:/storage/config", Vec::new())
                } else {
                    (307, "redirect:/storage/layer", Vec::new())
                }
            }
            (_, "/storage/layer") => (200, "application/octet-stream", vec![1u8; 1000]),
            (_, "/storage/config") => (200, "application/octet-stream", CONFIG.to_vec()),
            // The layer: said to be 1000 bytes, sent as 64 MiB.
            (_, p) if p.starts_with("/v2/evil/app/blobs/") => {
                (200, "application/octet-stream", vec![1u8; 64 << 20])
            }
            // /v2/ of a "registry" that asks for credentials without saying how.
            _ => (404, "application/json", b"{\"errors\":[]}".to_vec()),
        }
    });
    let local = Local::start(&[]);
    let host = remote.addr.to_string();

    let out = local.sync(&[
        "--output",
        "json",
        &format!("{host}/evil/big:1"),
        "evil/big",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("over 4194304 bytes"),
        "{}",
        stdout(&out)
    );

    let out = local.sync(&[
        "--output",
        "json",
        &format!("{host}/evil/app:1"),
        "evil/app",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("sent more than the 1000 bytes"),
        "{}",
        stdout(&out)
    );
    assert!(local.digest("evil/app:1").is_none());
    assert!(walk(&local.env.data_dir().join("uploads")).is_empty());
    let stored: u64 = walk(&local.env.data_dir().join("blobs"))
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(stored < 1 << 20, "{stored} bytes of blobs kept");

    // Redirects are followed (object storage behind the registry), and the same blobs,
    // served honestly, are taken.
    let moved = local.sync_ok(&[&format!("{host}/evil/moved:1"), "evil/moved"]);
    // (The config came in with the refused image; the layer only now, through a redirect.)
    assert_eq!(moved["images"][0]["bytesCopied"], 1000, "{moved}");
}

#[test]
fn an_ecrld_that_lets_anyone_pull_is_read_through_an_anonymous_token() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let public = Env::with_anonymous("pull");
    let _public_daemon = public.spawn_daemon(&[]);
    let public_host = registry_address(&public);
    let (layout, digest) = image_of(dir.path(), "anonymous", 2000);
    public.ecrl_ok(&[
        "repo",
        "push",
        &format!("oci:{}", layout.display()),
        "open/app:1",
    ]);
    let local = Local::start(&[]);
    let out = local.sync_ok(&[&format!("{public_host}/open/app:1"), "copied/app"]);
    assert_eq!(out["copied"], 1, "{out}");
    assert_eq!(
        local.digest("copied/app:1").as_deref(),
        Some(digest.as_str())
    );
    // Pushing needs credentials there: refused, with what to do.
    let out = local.sync(&["copied/app:1", &format!("{public_host}/pushed/app")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("ecrl login"), "{}", stdout(&out));
}

/// Pushes a signature-like artifact (an OCI manifest whose subject is `subject`) into
/// `host/repo` over the registry API; returns its digest.
fn push_referrer(host: &str, repo: &str, subject: &str, subject_size: u64) -> String {
    // reqwest is built without a TLS provider of its own.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::blocking::Client::new();
    let payload = format!("a signature of {subject}").into_bytes();
    let empty = b"{}".to_vec();
    for blob in [&payload, &empty] {
        let digest = sha256_digest(blob);
        let r = client
            .post(format!(
                "http://{host}/v2/{repo}/blobs/uploads/?digest={digest}"
            ))
            .header("Content-Type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "blob upload");
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256_digest(&empty), "size": empty.len()},
        "layers": [{"mediaType": "application/vnd.example.signature",
                    "digest": sha256_digest(&payload), "size": payload.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": subject, "size": subject_size},
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    let r = client
        .put(format!("http://{host}/v2/{repo}/manifests/{digest}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "manifest upload");
    digest
}

#[test]
fn referrers_come_along_unless_asked_not_to() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let b = PrivateEcrld::start();
    let local = Local::start(&[]);
    assert!(login(&local, &b.host, &b.user, &b.password)
        .status
        .success());
    let (layout, digest) = image_of(dir.path(), "signed", 3000);
    local.push(&layout, "signed/app:1");
    let size = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len() as u64;
    let signature = push_referrer(
        &local.host.replace("localhost", "127.0.0.1"),
        "signed/app",
        &digest,
        size,
    );

    let bare = local.sync_ok(&[
        "--no-referrers",
        "signed/app:1",
        &format!("{}/bare/app", b.host),
    ]);
    assert_eq!(bare["images"][0].get("referrersCopied"), None, "{bare}");
    let at_b = |repo: &str| {
        remote_digest(
            &b.skopeo_flags(),
            &format!("docker://{}/{repo}@{signature}", b.host),
        )
    };
    assert_eq!(
        at_b("bare/app"),
        None,
        "--no-referrers leaves the signature behind"
    );

    let with = local.sync_ok(&["signed/app:1", &format!("{}/signed/app", b.host)]);
    assert_eq!(with["images"][0]["referrersCopied"], 1, "{with}");
    assert_eq!(at_b("signed/app").as_deref(), Some(signature.as_str()));

    // And back from B (it has the referrers API) into a fresh ecrld.
    let fresh = Local::start(&[]);
    assert!(login(&fresh, &b.host, &b.user, &b.password)
        .status
        .success());
    let back = fresh.sync_ok(&[&format!("{}/signed/app:1", b.host), "signed/back"]);
    assert_eq!(back["images"][0]["referrersCopied"], 1, "{back}");
    let listed = fresh
        .env
        .ecrl_ok(&["image", "list", "signed/back", "--output", "json"]);
    assert!(listed.contains(&signature), "{listed}");
}
